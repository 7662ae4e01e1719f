package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/research"
)

// newResearch builds the research service for cfg. router is nil for the CLI; getter
// nil means the network.
func newResearch(cfg *config.Config, router research.RankingsHolder, getter research.Getter, log *slog.Logger) (*research.Service, error) {
	rc := cfg.Research
	if getter == nil {
		getter = &research.HTTPGetter{Client: &http.Client{}, UserAgent: rc.UserAgent}
	}
	m, err := research.NewMatcher(rc.AliasesPath, log)
	if err != nil {
		return nil, err
	}
	state := rc.StatePath
	if state == "" {
		state = filepath.Join(filepath.Dir(cfg.Storage.DBPath), "research_state.json")
	}
	return research.New(research.Options{
		Config:       rc,
		RankingsPath: cfg.Routing.RankingsPath,
		Default:      data.DefaultRouting,
		Router:       router,
		Sources:      research.BuildSources(rc, research.Backends{NanoGPT: cfg.NanoGPT, Vertex: cfg.Vertex}, getter),
		Matcher:      m,
		StatePath:    state,
		Log:          log,
	}), nil
}

// startResearch wires research into the server: the admin routes, the /status section
// and (when enabled) the scheduler. A research setup error disables research only.
func startResearch(ctx context.Context, cfg *config.Config, router research.RankingsHolder, log *slog.Logger, status map[string]func() any) []func(chi.Router) {
	svc, err := newResearch(cfg, router, nil, log)
	if err != nil {
		log.Error("research disabled", "err", err)
		status["research"] = func() any { return map[string]any{"enabled": false, "error": err.Error()} }
		return nil
	}
	svc.SetBaseContext(ctx)
	status["research"] = svc.Summary
	if cfg.Research.Enabled {
		sched, err := research.NewScheduler(cfg.Research.Schedule, cfg.Research.Timezone, nil, log)
		if err != nil {
			log.Error("research scheduler disabled", "err", err)
		} else {
			sched.Last, sched.Since = svc.LastRunAt, svc.ScheduledFrom
			svc.SetNextRun(sched.Next)
			sched.Run = func(ctx context.Context, trigger string) {
				if _, err := svc.Run(ctx, false, false, trigger); err != nil {
					log.Warn("research: scheduled run skipped", "err", err)
				}
			}
			go sched.Start(ctx)
			log.Info("research scheduler started", "schedule", cfg.Research.Schedule, "timezone", cfg.Research.Timezone)
		}
	}
	return []func(chi.Router){handlers.ResearchAdmin(svc, log)}
}

// runResearchCLI is `nanogpt-proxy research [--dry-run] [--force] [--sources-dir DIR]`:
// it runs the sources once and prints the ranking diff; with --dry-run nothing is written.
func runResearchCLI(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("research", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dry := fs.Bool("dry-run", false, "print the proposed ranking diff without writing")
	force := fs.Bool("force", false, "re-evaluate every model, not only new ones")
	dir := fs.String("sources-dir", "", "read saved source files from `DIR` instead of the network (openrouter_models.json, lmarena_rows.offset0.json, aider_polyglot_leaderboard.yml, nanogpt_models.json, nanogpt_subscription_models.json, html_<name>.html)")
	asJSON := fs.Bool("json", false, "print the run report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := newLogger(cfg.Log, stderr)
	var getter research.Getter
	if *dir != "" {
		getter = research.DirGetter{Dir: *dir}
		// Saved files stand for the backends too, so list their models even without keys.
		if cfg.NanoGPT.APIKey == "" {
			cfg.NanoGPT.APIKey = "saved-files"
		}
	}
	svc, err := newResearch(cfg, nil, getter, log)
	if err != nil {
		return err
	}
	rep, err := svc.Run(ctx, *force, *dry, "cli")
	if err != nil {
		return err
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printReport(stdout, rep)
	}
	if rep.Outcome == "failed" {
		return errors.New(rep.Error)
	}
	return nil
}

func printReport(w io.Writer, rep *research.RunReport) {
	fmt.Fprintf(w, "research run %s: %s\n", rep.ID, rep.Outcome)
	for _, s := range rep.Sources {
		line := fmt.Sprintf("  source %-12s %-8s %d entries", s.Name, s.State, s.Entries)
		if s.Error != "" {
			line += "  error: " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	for _, m := range rep.Match {
		fmt.Fprintf(w, "  match  %-12s %d/%d (%.0f%%)", m.Source, m.Matched, m.Candidates, m.Rate*100)
		if len(m.Ambiguous) > 0 {
			fmt.Fprintf(w, "  ambiguous refused: %s", strings.Join(m.Ambiguous, "; "))
		}
		fmt.Fprintln(w)
	}
	if len(rep.NewModels) > 0 {
		fmt.Fprintf(w, "new models: %s\n", strings.Join(rep.NewModels, ", "))
	}
	if len(rep.Diff) == 0 {
		fmt.Fprintln(w, "ranking diff: no change")
	} else {
		fmt.Fprintln(w, "ranking diff:")
		for _, d := range rep.Diff {
			fmt.Fprintln(w, "  "+d)
		}
	}
	if rep.Error != "" {
		fmt.Fprintln(w, "error: "+rep.Error)
	}
}
