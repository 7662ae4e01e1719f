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
	"strings"
	"syscall"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
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

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg.Log, stderr)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Storage: a database that cannot be opened costs usage tracking, not the proxy.
	status := map[string]func() any{}
	var usage handlers.UsageRecorder
	var usageWriter *storage.UsageWriter
	db, err := storage.Open(ctx, cfg.Storage.DBPath)
	if err != nil {
		log.Error("usage tracking disabled: database unavailable", "path", cfg.Storage.DBPath, "err", err)
		status["usage"] = func() any { return map[string]any{"enabled": false, "error": err.Error()} }
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
	if !cfg.Vertex.Enabled() {
		log.Info("backend disabled: VERTEX_PROJECT_ID is not set", "backend", "vertex")
	}
	status["backends"] = func() any {
		return map[string]any{
			"nanogpt": map[string]any{"configured": cfg.NanoGPT.Enabled(), "base_url": cfg.NanoGPT.BaseURL,
				"reason": disabledReason(cfg.NanoGPT.Enabled(), "NANOGPT_API_KEY is not set")},
			"vertex": map[string]any{"configured": bes["vertex"] != nil, "project": cfg.Vertex.ProjectID, "location": cfg.Vertex.Location,
				"reason": disabledReason(bes["vertex"] != nil, "VERTEX_PROJECT_ID is not set")},
		}
	}

	router, err := routing.New(routing.Config{
		RankingsPath: cfg.Routing.RankingsPath,
		Default:      data.DefaultRouting,
		Enabled:      func(b string) bool { return bes[b] != nil },
	}, log)
	if err != nil {
		return err
	}
	status["rankings"] = func() any {
		rk := router.Rankings()
		return map[string]any{"version": rk.Version, "updated_at": rk.UpdatedAt, "source": router.Source()}
	}

	// Prompt engineer: strategies (file or embedded), mode map, injection, optional optimizer.
	prompt, err := promptengineer.New(promptConfig(cfg.Prompt), log)
	if err != nil {
		return err
	}
	status["prompt"] = prompt.Status
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
	}, handlers.Deps{
		Log:      log,
		Prompt:   prompt,
		Router:   router,
		Context:  contextmgr.New(),
		Backends: bes,
		Usage:    usage,
		Status:   status,
	})

	ln, err := net.Listen("tcp", cfg.Server.Addr())
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Server.Addr(), err)
	}
	hs := &http.Server{
		Handler:           srv,
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
