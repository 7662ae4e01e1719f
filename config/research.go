package config

import (
	"fmt"
	"slices"
	"strings"
	"time"

	_ "time/tzdata" // RESEARCH_TIMEZONE works on hosts without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// Research configures the monthly research job: where benchmark data comes from, how
// models are scored per role, and when the job runs.
type Research struct {
	// Enabled turns the in-process scheduler on; the admin API and CLI work either way.
	Enabled bool `yaml:"enabled"`
	// Schedule is a 5-field cron expression (RESEARCH_SCHEDULE); default "0 2 1 * *".
	Schedule string `yaml:"schedule"`
	// Timezone is the IANA zone the schedule is read in (RESEARCH_TIMEZONE); default "UTC".
	Timezone string `yaml:"timezone"`
	// StatePath is the JSON file holding the last run and its result; empty means
	// research_state.json next to the database.
	StatePath string `yaml:"state_path"`
	// AliasesPath is an optional YAML file of extra name aliases (canonical: [names]).
	AliasesPath string `yaml:"aliases_path"`
	// UserAgent is sent to every source.
	UserAgent string `yaml:"user_agent"`
	// MinCoverage is the share (0..1) of a role's weights a model needs data for to
	// become primary.
	MinCoverage float64 `yaml:"min_coverage"`
	// MaxFallbacks caps the fallbacks a force-refresh writes per role.
	MaxFallbacks int `yaml:"max_fallbacks"`
	// Weights are per role: dimension -> weight. Dimensions: reasoning, coding, agentic,
	// writing, overall, speed, cost. A role set in the YAML file replaces its defaults.
	Weights map[string]map[string]float64 `yaml:"weights"`
	// VertexModels are the Gemini models the Vertex backend offers (eligible when Vertex
	// is configured).
	VertexModels []string `yaml:"vertex_models"`
	// Sources are the data sources.
	Sources ResearchSources `yaml:"sources"`
}

// ResearchSources configures each data source.
type ResearchSources struct {
	OpenRouter ResearchSource `yaml:"openrouter"`
	LMArena    ResearchSource `yaml:"lmarena"`
	// LMArenaDataset, LMArenaConfig and LMArenaSplit name the HF dataset read through
	// the datasets-server /rows API.
	LMArenaDataset string         `yaml:"lmarena_dataset"`
	LMArenaConfig  string         `yaml:"lmarena_config"`
	LMArenaSplit   string         `yaml:"lmarena_split"`
	Aider          ResearchSource `yaml:"aider"`
	// NanoGPTModels is GET /api/v1/models?detailed=true; empty URL means
	// <NANOGPT_BASE_URL>/models?detailed=true. Used only when NanoGPT is configured.
	NanoGPTModels ResearchSource `yaml:"nanogpt_models"`
	// NanoGPTSubscription is the subscription model list; empty URL means
	// <NANOGPT_SUBSCRIPTION_URL>/models.
	NanoGPTSubscription ResearchSource `yaml:"nanogpt_subscription"`
	// HTMLTables are generic leaderboard tables; none ship enabled.
	HTMLTables []HTMLTable `yaml:"html_tables"`
}

// ResearchSource is one fetched source.
type ResearchSource struct {
	Enabled bool   `yaml:"enabled"`
	URL     string `yaml:"url"`
	// Timeout bounds one attempt.
	Timeout time.Duration `yaml:"timeout"`
	// MaxBytes caps the response body; larger responses are an error.
	MaxBytes int64 `yaml:"max_bytes"`
	// Retries is how many times a failed attempt (network error, 429, 5xx) is repeated.
	Retries int `yaml:"retries"`
	// Backoff is the wait before the first retry; it doubles each time.
	Backoff time.Duration `yaml:"backoff"`
}

// HTMLTable is a leaderboard page read with a CSS selector. Only configure pages whose
// terms allow automated reading (Vellum's, for one, do not).
type HTMLTable struct {
	Name           string `yaml:"name"`
	ResearchSource `yaml:",inline"`
	// Selector is the CSS selector of the table.
	Selector string `yaml:"selector"`
	// ModelColumn is the header text of the model-name column.
	ModelColumn string `yaml:"model_column"`
	// Columns maps header text to a metric name (e.g. "Percent correct": aider_polyglot).
	Columns map[string]string `yaml:"columns"`
}

// DefaultResearch returns the documented research defaults.
func DefaultResearch() Research {
	src := func(url string, maxBytes int64) ResearchSource {
		return ResearchSource{Enabled: true, URL: url, Timeout: 30 * time.Second, MaxBytes: maxBytes, Retries: 2, Backoff: 2 * time.Second}
	}
	return Research{
		Enabled:      true,
		Schedule:     "0 2 1 * *",
		Timezone:     "UTC",
		UserAgent:    "nanogpt-proxy-research/1 (+https://github.com/nanogpt-proxy/nanogpt-proxy; monthly model ranking)",
		MinCoverage:  0.5,
		MaxFallbacks: 3,
		Weights: map[string]map[string]float64{
			"architect":      {"reasoning": 3, "speed": 1},
			"implementation": {"coding": 3, "agentic": 1},
			"code_review":    {"reasoning": 2, "coding": 2},
			"debugging":      {"coding": 2, "reasoning": 2},
			"testing":        {"coding": 3, "reasoning": 1},
			"documentation":  {"writing": 3, "cost": 1},
			"research":       {"reasoning": 2, "overall": 1, "writing": 1},
			"general":        {"speed": 1, "cost": 1},
		},
		VertexModels: []string{"gemini-2.5-pro", "gemini-2.5-flash"},
		Sources: ResearchSources{
			OpenRouter:          src("https://openrouter.ai/api/v1/models", 32<<20),
			LMArena:             src("https://datasets-server.huggingface.co/rows", 8<<20),
			LMArenaDataset:      "lmarena-ai/leaderboard-dataset",
			LMArenaConfig:       "text",
			LMArenaSplit:        "latest",
			Aider:               src("https://raw.githubusercontent.com/Aider-AI/aider/main/aider/website/_data/polyglot_leaderboard.yml", 8<<20),
			NanoGPTModels:       src("", 16<<20),
			NanoGPTSubscription: src("", 4<<20),
		},
	}
}

// ResearchDimensions are the scoring dimensions a weight may name.
var ResearchDimensions = []string{"reasoning", "coding", "agentic", "writing", "overall", "speed", "cost"}

func (r Research) validate() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := cron.ParseStandard(r.Schedule); err != nil {
		bad("RESEARCH_SCHEDULE: %q is not a cron expression: %v", r.Schedule, err)
	}
	if _, err := time.LoadLocation(r.Timezone); err != nil {
		bad("RESEARCH_TIMEZONE: %q is not an IANA time zone: %v", r.Timezone, err)
	}
	if r.MinCoverage < 0 || r.MinCoverage > 1 {
		bad("research.min_coverage: %v must be between 0 and 1", r.MinCoverage)
	}
	if r.MaxFallbacks < 0 {
		bad("research.max_fallbacks: %d must not be negative", r.MaxFallbacks)
	}
	for role, ws := range r.Weights {
		for dim, w := range ws {
			if !slices.Contains(ResearchDimensions, dim) {
				bad("research.weights.%s: unknown dimension %q (valid: %s)", role, dim, strings.Join(ResearchDimensions, ", "))
			}
			if w < 0 {
				bad("research.weights.%s.%s: %v must not be negative", role, dim, w)
			}
		}
	}
	check := func(name string, s ResearchSource) {
		if s.URL != "" {
			if err := checkURL(s.URL); err != nil {
				bad("research.sources.%s.url: %v", name, err)
			}
		}
		if s.Timeout < 0 || s.MaxBytes < 0 || s.Retries < 0 || s.Backoff < 0 {
			bad("research.sources.%s: timeout, max_bytes, retries and backoff must not be negative", name)
		}
	}
	check("openrouter", r.Sources.OpenRouter)
	check("lmarena", r.Sources.LMArena)
	check("aider", r.Sources.Aider)
	check("nanogpt_models", r.Sources.NanoGPTModels)
	check("nanogpt_subscription", r.Sources.NanoGPTSubscription)
	for i, t := range r.Sources.HTMLTables {
		check(fmt.Sprintf("html_tables[%d]", i), t.ResearchSource)
		if t.Enabled && (t.Name == "" || t.URL == "" || t.Selector == "" || t.ModelColumn == "") {
			bad("research.sources.html_tables[%d]: name, url, selector and model_column are required", i)
		}
	}
	return errs
}
