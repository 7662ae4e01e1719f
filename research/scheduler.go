package research

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/robfig/cron/v3"
)

// Clock is the time source of the scheduler; tests inject a fake.
type Clock interface {
	Now() time.Time
	// After is time.After.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Scheduler runs research on a cron schedule (robfig/cron syntax) in a time zone. A
// run missed while the proxy was down (the schedule came due after the last run, or
// after scheduling began) runs at startup.
type Scheduler struct {
	sched cron.Schedule
	loc   *time.Location
	clock Clock
	log   *slog.Logger
	// Last returns when the last run started (zero: never) and Since when scheduling
	// began; Run runs research.
	Last  func() time.Time
	Since func(now time.Time) time.Time
	Run   func(ctx context.Context, trigger string)
}

// NewScheduler parses spec (5 fields, e.g. "0 2 1 * *") in zone tz.
func NewScheduler(spec, tz string, clock Clock, log *slog.Logger) (*Scheduler, error) {
	sched, err := cron.ParseStandard(spec)
	if err != nil {
		return nil, fmt.Errorf("research: schedule %q: %w", spec, err)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("research: time zone %q: %w", tz, err)
	}
	if clock == nil {
		clock = RealClock
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{sched: sched, loc: loc, clock: clock, log: log}, nil
}

// Next is the first scheduled time after t.
func (s *Scheduler) Next(t time.Time) time.Time { return s.sched.Next(t.In(s.loc)) }

// Start runs the scheduler until ctx ends: first a catch-up run if one was missed,
// then a run at each scheduled time.
func (s *Scheduler) Start(ctx context.Context) {
	now := s.clock.Now()
	since := s.Since(now)
	last := s.Last()
	if last.Before(since) {
		last = since
	}
	if due := s.Next(last); !due.After(now) {
		s.log.Info("research: catching up a missed scheduled run", "was_due", due)
		s.Run(ctx, "catch-up")
	}
	var fired time.Time
	for {
		now = s.clock.Now()
		// A timer may fire a hair early; never schedule the same slot twice.
		next := s.Next(later(now, fired))
		s.log.Debug("research: next scheduled run", "at", next)
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(next.Sub(now)):
			fired = next
			s.Run(ctx, "schedule")
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
