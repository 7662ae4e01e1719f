package research

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// ErrRunning is returned when a run is asked for while another is in progress.
var ErrRunning = errors.New("research: a run is already in progress")

// RankingsHolder is the live router; research reloads it after writing the file.
type RankingsHolder interface {
	Reload() error
}

// firstChooser is a RankingsHolder that can say what each profile now serves first for a
// role (routing.Router).
type firstChooser interface {
	FirstChoices(role roles.Role) map[string]string
}

// Options configures a Service.
type Options struct {
	Config config.Research
	// RankingsPath is the rankings file research writes (MODEL_ROUTING_PATH).
	RankingsPath string
	// Default is the embedded rankings, in force when the file does not exist.
	Default []byte
	// Router is reloaded after a write; nil (the CLI) means read the file directly.
	Router RankingsHolder
	// Sources are read on every run.
	Sources []Source
	Matcher *Matcher
	// StatePath is where the last run is kept; empty keeps it in memory only.
	StatePath string
	Log       *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// SourceStatus is the progress of one source in a run.
type SourceStatus struct {
	Name string `json:"name"`
	// State is pending, running, ok, partial or failed.
	State      string `json:"state"`
	Entries    int    `json:"entries"`
	Error      string `json:"error,omitempty"`
	DurationMS int64  `json:"duration_ms"`
}

// RunReport is one run: what was read, matched, changed, and how it ended.
type RunReport struct {
	ID         string    `json:"run_id"`
	Force      bool      `json:"force"`
	DryRun     bool      `json:"dry_run"`
	Trigger    string    `json:"trigger"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Outcome is running, updated, unchanged, dry_run or failed.
	Outcome     string         `json:"outcome"`
	Error       string         `json:"error,omitempty"`
	Sources     []SourceStatus `json:"sources"`
	NewModels   []string       `json:"new_models,omitempty"`
	Changes     []RoleChange   `json:"changes,omitempty"`
	Diff        []string       `json:"diff,omitempty"`
	Match       []MatchReport  `json:"match,omitempty"`
	HistoryFile string         `json:"history_file,omitempty"`
	// Next is the proposed rankings (dry runs only; not persisted).
	Next *routing.Rankings `json:"-"`
}

// State is what survives restarts.
type State struct {
	// ScheduledFrom is when the scheduler first ran; runs missed after it are caught up.
	ScheduledFrom time.Time  `json:"scheduled_from,omitzero"`
	LastRun       *RunReport `json:"last_run,omitempty"`
}

// Service runs research: on demand (admin API, CLI) and from the scheduler.
type Service struct {
	o   Options
	log *slog.Logger

	mu      sync.Mutex
	current *RunReport
	state   State
	wg      sync.WaitGroup
	base    context.Context
	nextRun func(time.Time) time.Time
}

// New returns a Service; the persisted state is read from Options.StatePath. A state
// file that cannot be read is logged and treated as empty.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Service{o: o, log: o.Log, base: context.Background()}
	if o.StatePath != "" {
		b, err := os.ReadFile(o.StatePath)
		switch {
		case err == nil:
			if err := json.Unmarshal(b, &s.state); err != nil {
				s.log.Warn("research: state file unreadable; starting fresh", "path", o.StatePath, "err", err)
			}
		case !os.IsNotExist(err):
			s.log.Warn("research: state file unreadable; starting fresh", "path", o.StatePath, "err", err)
		}
	}
	return s
}

// SetNextRun tells the status when the scheduler runs next (Scheduler.Next); nil
// means no scheduler.
func (s *Service) SetNextRun(next func(after time.Time) time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextRun = next
}

// SetBaseContext sets the context background runs (Trigger) use; cancel it on shutdown.
func (s *Service) SetBaseContext(ctx context.Context) { s.base = ctx }

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "run_" + hex.EncodeToString(b[:])
}

func (s *Service) begin(force, dryRun bool, trigger string) (*RunReport, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil {
		return nil, ErrRunning
	}
	r := &RunReport{ID: newRunID(), Force: force, DryRun: dryRun, Trigger: trigger, StartedAt: s.o.Now().UTC(), Outcome: "running"}
	for _, src := range s.o.Sources {
		r.Sources = append(r.Sources, SourceStatus{Name: src.Name(), State: "pending"})
	}
	s.current = r
	return r, nil
}

// Trigger starts a run in the background and returns its id; ErrRunning when busy.
func (s *Service) Trigger(force bool) (string, error) {
	r, err := s.begin(force, false, map[bool]string{false: "api", true: "api-force"}[force])
	if err != nil {
		return "", err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.execute(s.base, r)
	}()
	return r.ID, nil
}

// Run runs research now and returns its report; ErrRunning when busy. A dry run
// writes nothing (not even the state).
func (s *Service) Run(ctx context.Context, force, dryRun bool, trigger string) (*RunReport, error) {
	r, err := s.begin(force, dryRun, trigger)
	if err != nil {
		return nil, err
	}
	s.execute(ctx, r)
	return s.snapshot(r), nil
}

// Wait blocks until background runs have finished.
func (s *Service) Wait() { s.wg.Wait() }

func (s *Service) snapshot(r *RunReport) *RunReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := *r
	c.Sources = append([]SourceStatus(nil), r.Sources...)
	return &c
}

func (s *Service) setSource(r *RunReport, i int, f func(*SourceStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&r.Sources[i])
}

type fetched struct {
	res *Result
	err error
}

func (s *Service) execute(ctx context.Context, r *RunReport) {
	defer func() {
		s.mu.Lock()
		r.FinishedAt = s.o.Now().UTC()
		s.current = nil
		if !r.DryRun {
			s.state.LastRun = r
		}
		st := s.state
		s.mu.Unlock()
		if !r.DryRun {
			s.saveState(st)
		}
		s.log.Info("research: run finished", "run_id", r.ID, "outcome", r.Outcome, "new_models", len(r.NewModels), "changes", len(r.Changes), "err", r.Error)
	}()
	fail := func(err error) {
		s.mu.Lock()
		r.Outcome, r.Error = "failed", err.Error()
		s.mu.Unlock()
		s.log.Error("research: run failed; rankings unchanged", "run_id", r.ID, "err", err)
	}
	s.log.Info("research: run started", "run_id", r.ID, "force", r.Force, "dry_run", r.DryRun, "trigger", r.Trigger)

	results := make([]fetched, len(s.o.Sources))
	var wg sync.WaitGroup
	for i, src := range s.o.Sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := s.o.Now()
			s.setSource(r, i, func(ss *SourceStatus) { ss.State = "running" })
			res, err := src.Fetch(ctx)
			results[i] = fetched{res, err}
			s.setSource(r, i, func(ss *SourceStatus) {
				ss.DurationMS = s.o.Now().Sub(start).Milliseconds()
				switch {
				case res != nil && err != nil:
					ss.State, ss.Error = "partial", err.Error()
				case err != nil:
					ss.State, ss.Error = "failed", err.Error()
				default:
					ss.State = "ok"
				}
				if res != nil {
					ss.Entries = len(res.Observations) + len(res.Offers)
				}
			})
			if err != nil {
				s.log.Warn("research: source failed", "source", src.Name(), "run_id", r.ID, "err", err)
			}
		}()
	}
	wg.Wait()

	var offers []Offer
	bench := map[string][]Observation{}
	backendsOK, okCount := 0, 0
	for i, f := range results {
		if f.res == nil {
			continue
		}
		okCount++
		if len(f.res.Offers) > 0 {
			backendsOK++
			offers = append(offers, f.res.Offers...)
		}
		if len(f.res.Observations) > 0 {
			bench[s.o.Sources[i].Name()] = f.res.Observations
		}
	}
	switch {
	case okCount == 0:
		fail(errors.New("research: every source failed; rankings unchanged"))
		return
	case len(bench) == 0:
		fail(errors.New("research: no benchmark source answered; rankings unchanged"))
		return
	case backendsOK == 0:
		fail(errors.New("research: no backend model list answered (nothing is known to be servable); rankings unchanged"))
		return
	}

	cands, match := s.o.Matcher.BuildCandidates(offers, bench)
	evals := Evaluate(cands, s.o.Config.Weights, s.o.Config.MinCoverage)
	cur, prev, err := s.currentRankings()
	if err != nil {
		fail(err)
		return
	}
	now := s.o.Now()
	p, err := plan(cur, evals, cands, updateOpts{force: r.Force, now: now, maxFallbacks: s.o.Config.MaxFallbacks, minCoverage: s.o.Config.MinCoverage})
	if err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	r.Match, r.NewModels, r.Changes = match, p.NewModels, p.Changes
	for _, c := range p.Changes {
		r.Diff = append(r.Diff, c.String())
	}
	s.mu.Unlock()

	switch {
	case r.DryRun:
		s.mu.Lock()
		r.Outcome, r.Next = "dry_run", p.Next
		s.mu.Unlock()
		return
	case !p.Changed():
		s.mu.Lock()
		r.Outcome = "unchanged"
		s.mu.Unlock()
		return
	}
	hist, err := WriteRankings(s.o.RankingsPath, p.Next, prev, now)
	if err != nil {
		fail(err)
		return
	}
	s.mu.Lock()
	r.HistoryFile = hist
	s.mu.Unlock()
	if s.o.Router != nil {
		if err := s.o.Router.Reload(); err != nil {
			fail(fmt.Errorf("research: rankings written but the router did not reload them: %w", err))
			return
		}
	}
	s.mu.Lock()
	r.Outcome = "updated"
	if fc, ok := s.o.Router.(firstChooser); ok {
		for i := range r.Changes {
			if role, ok := roles.Parse(r.Changes[i].Role); ok {
				r.Changes[i].ServedFirst = fc.FirstChoices(role)
			}
		}
	}
	s.mu.Unlock()
	for _, d := range r.Diff {
		s.log.Info("research: ranking changed", "run_id", r.ID, "change", d)
	}
}

// currentRankings returns the rankings on disk (the embedded default when there is no
// file) and their bytes. The file, not the router's copy, is the base: a person's edit
// (a new pin) that the router has not reloaded yet must not be overwritten.
func (s *Service) currentRankings() (*routing.Rankings, []byte, error) {
	b, err := os.ReadFile(s.o.RankingsPath)
	if errors.Is(err, os.ErrNotExist) {
		b, err = s.o.Default, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("research: reading rankings: %w", err)
	}
	rk, err := routing.ParseRankings(b)
	if err != nil {
		return nil, nil, fmt.Errorf("research: current rankings: %w", err)
	}
	return rk, b, nil
}

func (s *Service) saveState(st State) {
	if s.o.StatePath == "" {
		return
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err == nil {
		err = writeAtomic(s.o.StatePath, append(b, '\n'))
	}
	if err != nil {
		s.log.Error("research: saving state", "path", s.o.StatePath, "err", err)
	}
}

// LastRunAt is when the last run started; zero when there was none.
func (s *Service) LastRunAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.LastRun == nil {
		return time.Time{}
	}
	return s.state.LastRun.StartedAt
}

// ScheduledFrom returns when scheduling began, setting and persisting it to now on the
// first call ever.
func (s *Service) ScheduledFrom(now time.Time) time.Time {
	s.mu.Lock()
	if !s.state.ScheduledFrom.IsZero() {
		defer s.mu.Unlock()
		return s.state.ScheduledFrom
	}
	s.state.ScheduledFrom = now.UTC()
	st := s.state
	s.mu.Unlock()
	s.saveState(st)
	return st.ScheduledFrom
}

// StatusView is GET /admin/research/status.
type StatusView struct {
	// State is idle or running.
	State   string     `json:"state"`
	Current *RunReport `json:"current,omitempty"`
	LastRun *RunReport `json:"last_run,omitempty"`
	// NextRun is the next scheduled run; zero when the scheduler is off.
	NextRun  time.Time `json:"next_run,omitzero"`
	Schedule string    `json:"schedule,omitempty"`
	Timezone string    `json:"timezone,omitempty"`
}

// Status returns the current run (with progress per source) and the last finished run.
func (s *Service) Status() StatusView {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := StatusView{State: "idle", Schedule: s.o.Config.Schedule, Timezone: s.o.Config.Timezone}
	if s.nextRun != nil {
		v.NextRun = s.nextRun(s.o.Now())
	}
	if s.current != nil {
		c := *s.current
		c.Sources = append([]SourceStatus(nil), s.current.Sources...)
		v.State, v.Current = "running", &c
	}
	if s.state.LastRun != nil {
		l := *s.state.LastRun
		v.LastRun = &l
	}
	return v
}

// Summary is the /status section: state, last run time and outcome, source errors.
func (s *Service) Summary() any {
	v := s.Status()
	out := map[string]any{"state": v.State, "schedule": v.Schedule, "timezone": v.Timezone}
	if !v.NextRun.IsZero() {
		out["next_run"] = v.NextRun
	}
	if l := v.LastRun; l != nil {
		errs := map[string]string{}
		for _, src := range l.Sources {
			if src.Error != "" {
				errs[src.Name] = src.Error
			}
		}
		out["last_run"] = map[string]any{"run_id": l.ID, "started_at": l.StartedAt, "outcome": l.Outcome,
			"error": l.Error, "new_models": len(l.NewModels), "changes": len(l.Changes), "source_errors": errs}
		out["degraded"] = l.Outcome == "failed" || len(errs) > 0
	}
	return out
}
