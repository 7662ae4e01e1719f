// Command nanogpt-proxy is an OpenAI-compatible LLM gateway: it works out the role of each
// request, picks the best model for it, adds context, calls NanoGPT or Vertex AI and
// records usage. main only wires the packages together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/internal/procs"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Nothing reads heap profiles (there is no pprof endpoint): sampling them cost a stack
	// walk every 512 KB allocated and, under load, over a MiB of profile buckets.
	runtime.MemProfileRate = 0
	if len(os.Args) > 1 && os.Args[1] == "research" { // CLI: see cli_research.go
		if err := runResearchCLI(context.Background(), os.Args[2:], os.Getenv, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "nanogpt-proxy research:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nanogpt-proxy:", err)
		os.Exit(1)
	}
}

func newLogger(c config.Log, out io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(c.Level)))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// usage is printed by -h, --help and help.
const usage = `nanogpt-proxy: an OpenAI-compatible LLM gateway (NanoGPT, Vertex AI) on localhost:8090.

Usage:
  nanogpt-proxy                     run the proxy (settings from the environment and CONFIG_PATH)
  nanogpt-proxy research [--dry-run] [--force] [--sources-dir DIR]
                                    run the benchmark research once and print the ranking diff
  nanogpt-proxy version             print the version
  nanogpt-proxy help                print this text

Point a client at http://localhost:8090/v1 with model "auto". Environment variables and
endpoints are documented in the README.
`

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			_, err := io.WriteString(stderr, usage)
			return err
		case "version", "--version", "-version":
			_, err := fmt.Fprintln(stderr, "nanogpt-proxy", version)
			return err
		default:
			return fmt.Errorf("unknown argument %q (see nanogpt-proxy help)", args[0])
		}
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	logOut := newLogOutput(stderr)
	defer logOut.Close()
	log := newLogger(cfg.Log, logOut)
	log = slog.New(flushingHandler{Handler: log.Handler(), out: logOut})

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Storage: a database that cannot be opened costs usage tracking, not the proxy.
	status := map[string]func() any{}
	var usage handlers.UsageRecorder
	var usageWriter *storage.UsageWriter
	db, dbErr := storage.Open(ctx, cfg.Storage.DBPath)
	if dbErr != nil {
		log.Error("usage tracking disabled: database unavailable", "path", cfg.Storage.DBPath, "err", dbErr)
		status["usage"] = func() any { return map[string]any{"enabled": false, "error": dbErr.Error()} }
	} else {
		defer db.Close()
		usageWriter = storage.NewUsageWriter(db, log, cfg.Storage.QueueSize, cfg.Storage.FlushInterval)
		usage = usageWriter
		status["usage"] = func() any {
			return map[string]any{"enabled": true, "db_path": db.Path, "writer": usageWriter.Stats()}
		}
	}

	// Backends.
	bes := map[string]backends.Backend{}
	if cfg.NanoGPT.Enabled() {
		bes["nanogpt"] = backends.NewNanoGPT(backends.NanoGPTConfig{
			APIKey: cfg.NanoGPT.APIKey, BaseURL: cfg.NanoGPT.BaseURL,
			FirstByteTimeout: cfg.Upstream.FirstByteTimeout, IdleTimeout: cfg.Upstream.IdleTimeout,
			UserAgent: "nanogpt-proxy/" + version,
		}, nil)
		log.Info("backend enabled", "backend", "nanogpt", "base_url", cfg.NanoGPT.BaseURL)
	} else {
		log.Warn("backend disabled: NANOGPT_API_KEY is not set", "backend", "nanogpt")
	}
	vertexReason := "VERTEX_PROJECT_ID is not set"
	if !cfg.Vertex.Enabled() {
		log.Info("backend disabled: VERTEX_PROJECT_ID is not set", "backend", "vertex")
	} else if vx, err := backends.NewVertex(ctx, backends.VertexConfig{
		ProjectID: cfg.Vertex.ProjectID, Location: cfg.Vertex.Location, BaseURL: cfg.Vertex.BaseURL,
		FirstByteTimeout: cfg.Upstream.FirstByteTimeout, IdleTimeout: cfg.Upstream.IdleTimeout,
	}, nil, log); err != nil {
		vertexReason = err.Error()
		log.Error("backend disabled: cannot create the Vertex client", "backend", "vertex", "err", err)
	} else {
		bes["vertex"] = vx
		log.Info("backend enabled", "backend", "vertex", "project", cfg.Vertex.ProjectID, "location", cfg.Vertex.Location,
			"base_url", cfg.Vertex.BaseURL)
	}
	status["backends"] = func() any {
		return map[string]any{
			"nanogpt": map[string]any{"configured": cfg.NanoGPT.Enabled(), "base_url": cfg.NanoGPT.BaseURL,
				"reason": disabledReason(cfg.NanoGPT.Enabled(), "NANOGPT_API_KEY is not set")},
			"vertex": map[string]any{"configured": bes["vertex"] != nil, "project": cfg.Vertex.ProjectID, "location": cfg.Vertex.Location,
				"reason": disabledReason(bes["vertex"] != nil, vertexReason)},
		}
	}

	// Model routing: quota, rankings (hot-reloaded), profiles, circuits, stickiness.
	quota, err := newQuota(ctx, cfg, db, log)
	if err != nil {
		return err
	}
	router, err := routing.New(routing.Config{
		RankingsPath:     cfg.Routing.RankingsPath,
		Default:          data.DefaultRouting,
		Enabled:          func(b string) bool { return bes[b] != nil },
		Profiles:         routingProfiles(cfg.Routing.Profiles),
		DefaultProfile:   cfg.Routing.ActiveProfile,
		ExplicitFallback: cfg.Routing.ExplicitFallback,
		Circuit:          routing.CircuitConfig{Failures: cfg.Routing.CircuitFailures, Cooldown: cfg.Routing.CircuitCooldown},
		StickyTTL:        cfg.Routing.StickyTTL,
		StickyMax:        cfg.Routing.StickyMax,
		Quota:            quota,
	}, log)
	if err != nil {
		return err
	}
	reloadTick := time.NewTicker(cfg.Routing.ReloadInterval)
	defer reloadTick.Stop()
	go router.Watch(ctx, reloadTick.C)
	if quota != nil {
		saveTick, syncTick := time.NewTicker(cfg.Routing.Quota.SaveInterval), time.NewTicker(cfg.Routing.Quota.SyncInterval)
		defer saveTick.Stop()
		defer syncTick.Stop()
		go quota.Run(ctx, saveTick.C, syncTick.C)
		defer func() {
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := quota.Flush(fctx); err != nil {
				log.Error("saving quota counts at shutdown", "err", err)
			}
		}()
		status["quota"] = func() any { return quota.Status() }
	} else {
		status["quota"] = func() any { return map[string]any{"enabled": false, "reason": "NANOGPT_MONTHLY_QUOTA is 0"} }
	}
	if usageWriter != nil {
		usageWriter.OnCommit(router.CountUsage)
	}
	status["routing"] = router.StatusSection
	// Backend catalogs: explicit model ids that no ranking names still reach their backend.
	for name, be := range bes {
		if l, ok := be.(interface{ Models() []string }); ok {
			router.SetCatalog(name, l.Models())
		}
	}
	if cfg.NanoGPT.Enabled() {
		go func() {
			ids, err := routing.FetchModels(ctx, nil, cfg.NanoGPT.BaseURL, cfg.NanoGPT.APIKey)
			if err != nil {
				log.Warn("NanoGPT model list unavailable; explicit ids route by rankings and prefixes only", "backend", "nanogpt", "err", err)
				return
			}
			router.SetCatalog("nanogpt", ids)
			log.Info("model catalog loaded", "backend", "nanogpt", "models", len(ids))
		}()
	}
	status["rankings"] = func() any {
		rk := router.Rankings()
		return map[string]any{"version": rk.Version, "updated_at": rk.UpdatedAt, "source": router.Source()}
	}

	// Research: admin routes, /status section, monthly scheduler (cli_research.go).
	adminRoutes := startResearch(ctx, cfg, router, log, status)
	// Context manager and MCP bridge: servers connect in the background; the embedded
	// store needs the database, an MCP store the named server.
	bridge := mcp.New(cfg.MCP, version, log)
	var ctxStore contextmgr.Store
	switch {
	case cfg.Context.Store == "mcp":
		ctxStore = contextmgr.NewMCPStore(bridge.Server(cfg.Context.MCPStore.Server), cfg.Context.MCPStore)
	case db != nil:
		st := contextmgr.NewSQLiteStore(db, nil)
		st.MinScore = cfg.Context.MinScore
		ctxStore = st
	default:
		log.Warn("context manager disabled: no database for the embedded store")
	}
	ctxMgr := contextmgr.New(cfg.Context, ctxStore, log)
	status["mcp"] = func() any { return map[string]any{"servers": bridge.Status()} }
	status["context"] = func() any { return ctxMgr.Stats() }
	// Prompt engineer: strategies (file or embedded), mode map, injection, optional optimizer.
	prompt, err := promptengineer.New(promptConfig(cfg.Prompt), log)
	if err != nil {
		return err
	}
	status["prompt"] = prompt.Status
	// Threads: one P while the proxy needs less than a core, every core when it needs more.
	if cfg.Server.AdaptiveProcs {
		pc := procs.New(procs.Config{})
		pctx, pcancel := context.WithCancel(ctx)
		pdone := make(chan struct{})
		go func() { defer close(pdone); pc.Run(pctx) }()
		defer func() { pcancel(); <-pdone }() // the runtime's default is back before run returns
		status["gomaxprocs"] = func() any { return pc.Status() }
	} else {
		reason := "server.adaptive_procs is false"
		if getenv("GOMAXPROCS") != "" {
			reason = "GOMAXPROCS is set"
		}
		status["gomaxprocs"] = func() any {
			n := runtime.GOMAXPROCS(0)
			return procs.Status{Mode: "fixed", Reason: reason, Procs: n, Max: n}
		}
	}
	if cfg.Prompt.ReloadInterval > 0 {
		t := time.NewTicker(cfg.Prompt.ReloadInterval)
		defer t.Stop()
		go prompt.Watch(ctx, t.C)
	}
	if cfg.Prompt.Optimizer.BaseURL != "" {
		log.Info("prompt optimizer enabled", "base_url", cfg.Prompt.Optimizer.BaseURL, "model", cfg.Prompt.Optimizer.Model,
			"timeout", cfg.Prompt.Optimizer.Timeout)
	}

	srv := handlers.New(handlers.Config{
		MaxBodyBytes:   cfg.Server.MaxBodyBytes,
		AdminToken:     cfg.Admin.Token,
		DefaultProfile: cfg.Routing.ActiveProfile,
		Version:        version,

		MaxAttempts:     cfg.Routing.MaxAttempts,
		MaxFailoverTime: cfg.Routing.MaxFailoverTime,

		CommitHeadersAfter: cfg.Upstream.CommitHeadersAfter,
	}, handlers.Deps{
		Log:      log,
		Prompt:   prompt,
		Router:   router,
		Context:  ctxMgr,
		Backends: bes,
		Usage:    usage,
		Status:   status,
		Admin:    append(adminRoutes, handlers.ConversationRoutes(ctxMgr, log)),
	})

	ln, err := net.Listen("tcp", cfg.Server.Addr())
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Server.Addr(), err)
	}
	var active inflight
	hs := &http.Server{
		Handler:           active.wrap(srv),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	log.Info("listening", "addr", "http://"+ln.Addr().String(), "version", version, "profile", cfg.Routing.ActiveProfile)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: letting in-flight requests finish", "timeout", cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; closing remaining connections", "err", err)
		_ = hs.Close()
		// Closing cancels the remaining requests; their handlers still record usage.
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if err := active.wait(dctx); err != nil {
			log.Warn("requests still running after their connections closed", "err", err)
		}
	}
	{
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := ctxMgr.Close(cctx); err != nil {
			log.Error("flushing conversation saves", "err", err)
		}
		if err := bridge.Close(cctx); err != nil {
			log.Error("stopping MCP servers", "err", err)
		}
		ccancel()
	}
	if usageWriter != nil {
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		if err := usageWriter.Close(fctx); err != nil {
			log.Error("flushing usage rows", "err", err)
		}
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

func disabledReason(enabled bool, why string) string {
	if enabled {
		return ""
	}
	return why
}

// newQuota builds the NanoGPT subscription quota (nil when NANOGPT_MONTHLY_QUOTA is 0).
// Without a database the counts live in memory only.
func newQuota(ctx context.Context, cfg *config.Config, db *storage.DB, log *slog.Logger) (*routing.Quota, error) {
	if cfg.NanoGPT.MonthlyQuota <= 0 {
		return nil, nil
	}
	qc := routing.QuotaConfig{
		Monthly: cfg.NanoGPT.MonthlyQuota, Daily: cfg.Routing.Quota.DailyCap, Unit: cfg.NanoGPT.QuotaUnit,
		Threshold: cfg.Routing.Quota.Threshold, Models: cfg.Routing.Quota.SubscriptionModels,
	}
	if cfg.NanoGPT.Enabled() {
		qc.SubscriptionURL, qc.APIKey = cfg.NanoGPT.SubscriptionURL, cfg.NanoGPT.APIKey
	}
	q, err := routing.NewQuota(ctx, qc, db, log)
	if err != nil && db != nil {
		log.Error("quota counts kept in memory only: database unavailable", "err", err)
		return routing.NewQuota(ctx, qc, nil, log)
	}
	return q, err
}

// routingProfiles turns the configured profiles into the router's: personal and work
// first, then the others by name.
func routingProfiles(m map[string]config.Profile) []routing.Profile {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	order := func(s string) int {
		switch s {
		case "personal":
			return 0
		case "work":
			return 1
		}
		return 2
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := order(a) - order(b); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	out := make([]routing.Profile, 0, len(names))
	for _, n := range names {
		p := m[n]
		out = append(out, routing.Profile{Name: n, Backends: p.Backends, Exclude: p.Exclude, PreferSubscription: p.PreferSubscription})
	}
	return out
}

// promptConfig converts the prompt settings (validated by config) for the prompt engineer.
func promptConfig(p config.Prompt) promptengineer.Config {
	pc := promptengineer.Config{
		StrategiesPath: p.StrategiesPath,
		Default:        config.DefaultStrategies,
		Modes:          map[string]roles.Role{},
		Injection:      map[roles.Role]promptengineer.Injection{},
		Optimizer: promptengineer.OptimizerConfig{
			BaseURL: p.Optimizer.BaseURL, Model: p.Optimizer.Model, APIKey: p.Optimizer.APIKey,
			Timeout: p.Optimizer.Timeout, CacheSize: p.Optimizer.CacheSize,
		},
	}
	for slug, r := range p.Modes {
		role, _ := roles.Parse(r)
		pc.Modes[strings.ToLower(slug)] = role
	}
	for r, m := range p.Injection {
		role, _ := roles.Parse(r)
		pc.Injection[role] = promptengineer.Injection(m)
	}
	return pc
}
