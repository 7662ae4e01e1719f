package research

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock whose time moves only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	waiting chan time.Time // receives each new waiter's deadline
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waiting: make(chan time.Time, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := waiter{at: c.now.Add(d), ch: make(chan time.Time, 1)}
	c.waiters = append(c.waiters, w)
	c.waiting <- w.at
	return w.ch
}

// Set moves the clock to t and fires every timer due by then.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

type firing struct {
	at      time.Time
	trigger string
}

func startScheduler(t *testing.T, clock *fakeClock, tz string, last, since time.Time) (<-chan firing, context.CancelFunc) {
	t.Helper()
	s, err := NewScheduler("0 2 1 * *", tz, clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	runs := make(chan firing, 4)
	s.Last = func() time.Time { return last }
	s.Since = func(time.Time) time.Time { return since }
	s.Run = func(_ context.Context, trigger string) { runs <- firing{clock.Now(), trigger} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return runs, cancel
}

func TestSchedulerFiresOnFirstOfMonthAt0200(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	cases := []struct {
		name string
		tz   string
		loc  *time.Location
	}{
		{"UTC", "UTC", time.UTC},
		{"Europe/Berlin", "Europe/Berlin", berlin},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Date(2026, 11, 28, 9, 0, 0, 0, tc.loc)
			clock := newFakeClock(start)
			lastRun := time.Date(2026, 11, 1, 2, 0, 0, 0, tc.loc)
			runs, _ := startScheduler(t, clock, tc.tz, lastRun, lastRun)

			due := <-clock.waiting
			want := time.Date(2026, 12, 1, 2, 0, 0, 0, tc.loc)
			if !due.Equal(want) {
				t.Fatalf("next run at %v, want %v", due, want)
			}
			select {
			case r := <-runs:
				t.Fatalf("ran at %v (%s) although nothing was missed", r.at, r.trigger)
			default:
			}
			clock.Set(want.Add(-time.Minute))
			clock.Set(want)
			r := <-runs
			if !r.at.Equal(want) || r.trigger != "schedule" {
				t.Errorf("ran at %v (%s), want %v (schedule)", r.at, r.trigger, want)
			}
			// Then it waits for the next month.
			if due := <-clock.waiting; !due.Equal(time.Date(2027, 1, 1, 2, 0, 0, 0, tc.loc)) {
				t.Errorf("following run at %v, want 2027-01-01 02:00", due)
			}
		})
	}
}

func TestSchedulerCatchesUpMissedRun(t *testing.T) {
	cases := []struct {
		name        string
		last, since time.Time
		now         time.Time
		wantCatchUp bool
	}{
		{"down over the 1st", time.Date(2026, 10, 1, 2, 0, 0, 0, time.UTC), time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC), true},
		{"never ran, scheduled since before the 1st", time.Time{}, time.Date(2026, 10, 20, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC), true},
		{"ran this month", time.Date(2026, 11, 1, 2, 0, 5, 0, time.UTC), time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC), false},
		{"first start ever", time.Time{}, time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock(tc.now)
			runs, _ := startScheduler(t, clock, "UTC", tc.last, tc.since)
			<-clock.waiting // the scheduler is now waiting for the next slot
			select {
			case r := <-runs:
				if !tc.wantCatchUp || r.trigger != "catch-up" || !r.at.Equal(tc.now) {
					t.Errorf("run %v (%s); want catch-up %v", r.at, r.trigger, tc.wantCatchUp)
				}
			default:
				if tc.wantCatchUp {
					t.Error("missed run not caught up at startup")
				}
			}
		})
	}
}

func TestStatusShowsNextRun(t *testing.T) {
	s, err := NewScheduler("0 2 1 * *", "UTC", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(Options{Now: func() time.Time { return time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC) }})
	svc.SetNextRun(s.Next)
	if got := svc.Status().NextRun; !got.Equal(time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)) {
		t.Errorf("next run = %v", got)
	}
}

func TestServiceScheduledFromPersists(t *testing.T) {
	p := t.TempDir() + "/state.json"
	first := time.Date(2026, 11, 3, 8, 0, 0, 0, time.UTC)
	if got := New(Options{StatePath: p}).ScheduledFrom(first); !got.Equal(first) {
		t.Fatalf("ScheduledFrom = %v", got)
	}
	if got := New(Options{StatePath: p}).ScheduledFrom(first.AddDate(0, 1, 0)); !got.Equal(first) {
		t.Errorf("after restart ScheduledFrom = %v, want %v", got, first)
	}
}
