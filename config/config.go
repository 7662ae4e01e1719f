// Package config owns the proxy's settings: the Config struct with its defaults, loading
// from the optional YAML file named by CONFIG_PATH and from environment variables (which
// win), validation, and the embedded default prompt strategies.
//
// Config is loaded once in main; every other package receives its own sub-struct and never
// reads the environment.
package config

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Config is every setting of the proxy.
type Config struct {
	Server   Server   `yaml:"server"`
	NanoGPT  NanoGPT  `yaml:"nanogpt"`
	Vertex   Vertex   `yaml:"vertex"`
	Routing  Routing  `yaml:"routing"`
	Prompt   Prompt   `yaml:"prompt"`
	Storage  Storage  `yaml:"storage"`
	Admin    Admin    `yaml:"admin"`
	Log      Log      `yaml:"log"`
	Upstream Upstream `yaml:"upstream"`

	// Research configures the monthly benchmark research job (see research.go).
	Research Research `yaml:"research"`
	Context  Context  `yaml:"context"`
	MCP      MCP      `yaml:"mcp"`
}

// Server is the HTTP listener.
type Server struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
	// MaxBodyBytes caps a request body; larger bodies get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ShutdownTimeout is how long in-flight requests may run after SIGINT/SIGTERM.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// AdaptiveProcs runs the proxy's Go code on one thread while it needs less than a core
	// and on every core it may use when it needs more (internal/procs). Setting the
	// GOMAXPROCS environment variable turns it off: the operator's number is kept.
	AdaptiveProcs bool `yaml:"adaptive_procs"`
}

// Addr is host:port.
func (s Server) Addr() string { return s.Host + ":" + strconv.Itoa(s.Port) }

// Upstream holds timeouts shared by every backend.
type Upstream struct {
	// FirstByteTimeout bounds the wait for an upstream's response headers (504 past it).
	FirstByteTimeout time.Duration `yaml:"first_byte_timeout"`
	// IdleTimeout bounds the silence inside a stream (an SSE error event past it).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// CommitHeadersAfter: a stream still without content this long after the request
	// arrived sends the client its 200, SSE headers and the upstream's keep-alive comments
	// (failover stays possible until the first data event); 0 holds them until content.
	CommitHeadersAfter time.Duration `yaml:"commit_headers_after"`
}

// NanoGPT configures the NanoGPT backend and its subscription quota.
type NanoGPT struct {
	// APIKey enables the backend; empty disables it. Never logged.
	APIKey          string `yaml:"-"`
	BaseURL         string `yaml:"base_url"`
	MonthlyQuota    int64  `yaml:"monthly_quota"`
	QuotaUnit       string `yaml:"quota_unit"`
	SubscriptionURL string `yaml:"subscription_url"`
}

// Enabled reports whether the backend has a key.
func (n NanoGPT) Enabled() bool { return n.APIKey != "" }

// Vertex configures the Vertex AI backend.
type Vertex struct {
	ProjectID string `yaml:"project_id"`
	Location  string `yaml:"location"`
	// BaseURL overrides the endpoint; no Google credentials are needed then.
	BaseURL string `yaml:"base_url"`
}

// Enabled reports whether a project is set.
func (v Vertex) Enabled() bool { return v.ProjectID != "" }

// Routing configures model selection, failover and the quota. See README "Model routing".
type Routing struct {
	ActiveProfile string `yaml:"active_profile"`
	RankingsPath  string `yaml:"rankings_path"`

	// ReloadInterval is how often the rankings file is checked for changes (mtime, size).
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Profiles are the selectable profiles by name; personal and work are predefined and
	// may be redefined.
	Profiles map[string]Profile `yaml:"profiles"`
	// ExplicitFallback lets a request for an explicit model fall back to its role's chain.
	ExplicitFallback bool `yaml:"explicit_fallback"`
	// MaxAttempts bounds the upstream attempts of one request.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxFailoverTime is the longest after a request's arrival that a fallback may start.
	MaxFailoverTime time.Duration `yaml:"max_failover_time"`
	// CircuitFailures failures in a row bench a backend+model for CircuitCooldown; then one
	// probe request is let through.
	CircuitFailures int           `yaml:"circuit_failures"`
	CircuitCooldown time.Duration `yaml:"circuit_cooldown"`
	// StickyTTL and StickyMax bound conversation stickiness.
	StickyTTL time.Duration `yaml:"sticky_ttl"`
	StickyMax int           `yaml:"sticky_max"`
	Quota     Quota         `yaml:"quota"`
}

// Profile is a routing profile: which backends, in which order of preference.
type Profile struct {
	// Backends in order of preference; a backend not listed is not used.
	Backends []string `yaml:"backends"`
	// Exclude lists backends never used under this profile.
	Exclude []string `yaml:"exclude"`
	// PreferSubscription puts subscription and free-tier models before paid ones.
	PreferSubscription bool `yaml:"prefer_subscription"`
}

// Quota configures the NanoGPT subscription quota beyond NANOGPT_MONTHLY_QUOTA and
// NANOGPT_QUOTA_UNIT.
type Quota struct {
	// Threshold is the used fraction (0-1] at which routing moves off subscription models.
	Threshold float64 `yaml:"threshold"`
	// DailyCap is an optional cap per UTC day (0: none).
	DailyCap int64 `yaml:"daily_cap"`
	// SubscriptionModels are the covered models when the subscription API is unreachable.
	SubscriptionModels []string `yaml:"subscription_models"`
	// SyncInterval is how often the subscription API's usage is read.
	SyncInterval time.Duration `yaml:"sync_interval"`
	// SaveInterval is how often the in-memory counts are written to SQLite.
	SaveInterval time.Duration `yaml:"save_interval"`
}

// Prompt configures the prompt engineer.
type Prompt struct {
	StrategiesPath string `yaml:"strategies_path"`
	// ReloadInterval is how often the strategies file is checked for changes; 0 disables.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Modes maps coding-agent mode slugs (Roo Code, Kilo Code, Cline, custom modes) to
	// roles, on top of the built-in map (architect, code, debug, ask, orchestrator, plan, act).
	Modes map[string]string `yaml:"modes"`
	// Injection says per role where guidance goes: "append" (default), "prepend" or "off".
	Injection map[string]string `yaml:"injection"`
	// Optimizer is the optional rewrite of the latest user message by a local model.
	Optimizer PromptOptimizer `yaml:"optimizer"`
}

// PromptOptimizer configures the local OpenAI-compatible model that rewrites prompts.
// It is off unless both BaseURL and Model are set.
type PromptOptimizer struct {
	// BaseURL is the OpenAI-compatible API base, e.g. http://127.0.0.1:11434/v1 (Ollama).
	BaseURL string `yaml:"base_url"`
	Model   string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the model server's key (optional).
	APIKeyEnv string `yaml:"api_key_env"`
	// APIKey is read from APIKeyEnv. Never logged.
	APIKey string `yaml:"-"`
	// Timeout is the hard deadline of one rewrite (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// CacheSize bounds the rewrite cache by content hash (default 256 entries).
	CacheSize int `yaml:"cache_size"`
}

// Storage configures the SQLite database.
type Storage struct {
	DBPath string `yaml:"db_path"`
	// QueueSize is how many usage rows may wait for the writer before new ones are dropped.
	QueueSize int `yaml:"queue_size"`
	// FlushInterval is the longest a row waits before being written.
	FlushInterval time.Duration `yaml:"flush_interval"`
}

// Admin protects /admin/*.
type Admin struct {
	// Token, when set, is required as a bearer token on /admin/*. Never logged.
	Token string `yaml:"-"`
}

// Log configures slog.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Default returns the documented defaults.
func Default() Config {
	return Config{
		Server: Server{Host: "127.0.0.1", Port: 8090, MaxBodyBytes: 32 << 20, ShutdownTimeout: 30 * time.Second, AdaptiveProcs: true},
		Upstream: Upstream{
			FirstByteTimeout: 5 * time.Minute,
			IdleTimeout:      2 * time.Minute,

			CommitHeadersAfter: 8 * time.Second,
		},
		NanoGPT: NanoGPT{
			BaseURL:      "https://nano-gpt.com/api/v1",
			MonthlyQuota: 60000,
			QuotaUnit:    "requests",
		},
		Vertex: Vertex{Location: "us-central1"},
		Routing: Routing{ActiveProfile: "personal", RankingsPath: "data/model_routing.json",
			ReloadInterval: 5 * time.Second,
			Profiles: map[string]Profile{
				"personal": {Backends: []string{"nanogpt", "vertex"}, PreferSubscription: true},
				"work":     {Backends: []string{"vertex", "nanogpt"}},
			},
			MaxAttempts: 4, MaxFailoverTime: 2 * time.Minute,
			CircuitFailures: 3, CircuitCooldown: 30 * time.Second,
			StickyTTL: 2 * time.Hour, StickyMax: 10000,
			Quota: Quota{Threshold: 0.95, SyncInterval: 10 * time.Minute, SaveInterval: 5 * time.Second},
		},
		Prompt: Prompt{StrategiesPath: "config/prompt_strategies.yaml", ReloadInterval: 5 * time.Second,
			Optimizer: PromptOptimizer{Timeout: time.Second, CacheSize: 256}},
		Storage: Storage{DBPath: "~/.mcp/proxy/usage.db", QueueSize: 4096, FlushInterval: 200 * time.Millisecond},
		Log:     Log{Level: "info", Format: "text"},

		Research: DefaultResearch(),
		Context:  defaultContext(),
		MCP:      defaultMCP(),
	}
}

// Load builds the configuration: defaults, then the YAML file named by CONFIG_PATH (if
// any), then environment variables. getenv is os.Getenv in main and a map in tests.
func Load(getenv func(string) string) (*Config, error) {
	cfg := Default()
	if p := getenv("CONFIG_PATH"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("CONFIG_PATH: %w", err)
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("CONFIG_PATH %s: %w", p, err)
		}
	}
	envErr := applyEnv(&cfg, getenv)
	if cfg.NanoGPT.SubscriptionURL == "" {
		cfg.NanoGPT.SubscriptionURL = defaultSubscriptionURL(cfg.NanoGPT.BaseURL)
	}
	cfg.Storage.DBPath = expandHome(cfg.Storage.DBPath, getenv("HOME"))
	cfg.MCP.expandEnv(getenv)
	// Report every bad setting at once, unparseable ones included.
	if err := errors.Join(envErr, cfg.Validate()); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func applyEnv(cfg *Config, getenv func(string) string) error {
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	var errs []error
	integer := func(name string, dst *int64) {
		if v := getenv(name); v != "" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a whole number", name, v))
				return
			}
			*dst = n
		}
	}
	str("NANOGPT_API_KEY", &cfg.NanoGPT.APIKey)
	str("NANOGPT_BASE_URL", &cfg.NanoGPT.BaseURL)
	integer("NANOGPT_MONTHLY_QUOTA", &cfg.NanoGPT.MonthlyQuota)
	str("NANOGPT_QUOTA_UNIT", &cfg.NanoGPT.QuotaUnit)
	str("NANOGPT_SUBSCRIPTION_URL", &cfg.NanoGPT.SubscriptionURL)
	str("VERTEX_PROJECT_ID", &cfg.Vertex.ProjectID)
	str("VERTEX_LOCATION", &cfg.Vertex.Location)
	str("VERTEX_BASE_URL", &cfg.Vertex.BaseURL)
	str("ACTIVE_PROFILE", &cfg.Routing.ActiveProfile)
	str("HOST", &cfg.Server.Host)
	port := int64(cfg.Server.Port)
	integer("PORT", &port)
	cfg.Server.Port = int(port)
	str("DB_PATH", &cfg.Storage.DBPath)
	str("PROMPT_STRATEGIES_PATH", &cfg.Prompt.StrategiesPath)
	str("MODEL_ROUTING_PATH", &cfg.Routing.RankingsPath)
	if n := cfg.Prompt.Optimizer.APIKeyEnv; n != "" {
		str(n, &cfg.Prompt.Optimizer.APIKey)
	}
	str("ADMIN_TOKEN", &cfg.Admin.Token)
	str("LOG_LEVEL", &cfg.Log.Level)
	str("LOG_FORMAT", &cfg.Log.Format)
	integer("MAX_BODY_BYTES", &cfg.Server.MaxBodyBytes)
	if getenv("GOMAXPROCS") != "" { // the Go runtime's own variable: the runtime has applied it
		cfg.Server.AdaptiveProcs = false
	}
	str("RESEARCH_SCHEDULE", &cfg.Research.Schedule)
	str("RESEARCH_TIMEZONE", &cfg.Research.Timezone)
	return errors.Join(errs...)
}

// Validate reports every invalid setting, each naming its variable.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Server.Port < 1 || c.Server.Port > 65535 {
		bad("PORT: %d is not a TCP port (1-65535)", c.Server.Port)
	}
	if c.Server.MaxBodyBytes < 1024 {
		bad("MAX_BODY_BYTES: %d is too small (at least 1024)", c.Server.MaxBodyBytes)
	}
	if err := checkURL(c.NanoGPT.BaseURL); err != nil {
		bad("NANOGPT_BASE_URL: %v", err)
	}
	if err := checkURL(c.NanoGPT.SubscriptionURL); err != nil {
		bad("NANOGPT_SUBSCRIPTION_URL: %v", err)
	}
	if c.NanoGPT.MonthlyQuota < 0 {
		bad("NANOGPT_MONTHLY_QUOTA: %d must not be negative", c.NanoGPT.MonthlyQuota)
	}
	if u := c.NanoGPT.QuotaUnit; u != "requests" && u != "tokens" {
		bad("NANOGPT_QUOTA_UNIT: %q must be \"requests\" or \"tokens\"", u)
	}
	if c.Vertex.BaseURL != "" {
		if err := checkURL(c.Vertex.BaseURL); err != nil {
			bad("VERTEX_BASE_URL: %v", err)
		}
	}
	if c.Vertex.Location == "" {
		bad("VERTEX_LOCATION: must not be empty")
	}
	if _, ok := c.Routing.Profiles[c.Routing.ActiveProfile]; !ok {
		p := c.Routing.ActiveProfile
		bad("ACTIVE_PROFILE: %q is not a defined profile (personal, work or one under routing.profiles)", p)
	}
	c.validateRouting(bad)
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL: %q must be debug, info, warn or error", c.Log.Level)
	}
	if f := c.Log.Format; f != "text" && f != "json" {
		bad("LOG_FORMAT: %q must be \"text\" or \"json\"", f)
	}
	if c.Storage.DBPath == "" {
		bad("DB_PATH: must not be empty")
	}
	if c.Storage.QueueSize < 1 {
		bad("storage.queue_size: %d must be positive", c.Storage.QueueSize)
	}
	if c.Storage.FlushInterval <= 0 {
		bad("storage.flush_interval: must be positive")
	}
	if c.Upstream.FirstByteTimeout < 0 || c.Upstream.IdleTimeout < 0 || c.Upstream.CommitHeadersAfter < 0 {
		bad("upstream timeouts must not be negative")
	}
	errs = append(errs, c.Research.validate()...)
	errs = append(errs, c.validateContext()...)
	errs = append(errs, c.Prompt.validate()...)
	return errors.Join(errs...)
}

func (c *Config) validateRouting(bad func(string, ...any)) {
	r := c.Routing
	for name, p := range r.Profiles {
		for _, b := range append(append([]string(nil), p.Backends...), p.Exclude...) {
			if b != "nanogpt" && b != "vertex" {
				bad("routing.profiles.%s: unknown backend %q (nanogpt or vertex)", name, b)
			}
		}
	}
	if r.ReloadInterval <= 0 {
		bad("routing.reload_interval: must be positive")
	}
	if r.MaxAttempts < 1 {
		bad("routing.max_attempts: %d must be at least 1", r.MaxAttempts)
	}
	if r.MaxFailoverTime < 0 || r.CircuitCooldown <= 0 || r.StickyTTL <= 0 {
		bad("routing: max_failover_time must not be negative; circuit_cooldown and sticky_ttl must be positive")
	}
	if r.CircuitFailures < 1 || r.StickyMax < 1 {
		bad("routing: circuit_failures and sticky_max must be at least 1")
	}
	if q := r.Quota; q.Threshold <= 0 || q.Threshold > 1 {
		bad("routing.quota.threshold: %v must be in (0, 1]", q.Threshold)
	}
	if r.Quota.DailyCap < 0 {
		bad("routing.quota.daily_cap: must not be negative")
	}
	if r.Quota.SyncInterval <= 0 || r.Quota.SaveInterval <= 0 {
		bad("routing.quota: sync_interval and save_interval must be positive")
	}
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q must be an http(s) URL with a host", s)
	}
	return nil
}

// defaultSubscriptionURL is <origin of base>/api/subscription/v1.
func defaultSubscriptionURL(base string) string {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return "https://nano-gpt.com/api/subscription/v1"
	}
	return u.Scheme + "://" + u.Host + "/api/subscription/v1"
}

func expandHome(p, home string) string {
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}

// validate checks the prompt engineer's settings.
func (p *Prompt) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if p.ReloadInterval < 0 {
		bad("prompt.reload_interval: must not be negative")
	}
	for _, slug := range slices.Sorted(maps.Keys(p.Modes)) {
		if _, ok := roles.Parse(p.Modes[slug]); !ok {
			bad("prompt.modes.%s: %q is not a role (valid roles: %s)", slug, p.Modes[slug], roles.List())
		}
	}
	for _, r := range slices.Sorted(maps.Keys(p.Injection)) {
		if _, ok := roles.Parse(r); !ok {
			bad("prompt.injection: %q is not a role (valid roles: %s)", r, roles.List())
		}
		if m := p.Injection[r]; m != "append" && m != "prepend" && m != "off" {
			bad("prompt.injection.%s: %q must be append, prepend or off", r, m)
		}
	}
	o := p.Optimizer
	if o.BaseURL != "" {
		if err := checkURL(o.BaseURL); err != nil {
			bad("prompt.optimizer.base_url: %v", err)
		}
		if o.Model == "" {
			bad("prompt.optimizer.model: must be set when prompt.optimizer.base_url is")
		}
	}
	if o.Timeout <= 0 {
		bad("prompt.optimizer.timeout: must be positive")
	}
	if o.CacheSize < 1 {
		bad("prompt.optimizer.cache_size: %d must be positive", o.CacheSize)
	}
	return errs
}
