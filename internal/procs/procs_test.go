package procs

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeMachine is a process whose CPU use the test dictates, on a machine whose runtime
// default is full Ps.
type fakeMachine struct {
	full    int
	procs   int
	cpu     time.Duration
	now     time.Time
	applied []int // GOMAXPROCS settings applied, 0 meaning the runtime's default
	noCPU   bool
}

func (m *fakeMachine) controller(cfg Config) *Controller {
	m.now = time.Unix(1_800_000_000, 0)
	return newController(cfg,
		func() (time.Duration, bool) { return m.cpu, !m.noCPU },
		func(n int) int {
			m.applied = append(m.applied, n)
			m.procs = n
			if n == 0 {
				m.procs = m.full
			}
			return m.procs
		},
		func() time.Time { return m.now })
}

// interval lets one 250 ms interval pass in which the process used load cores, and
// samples it.
func (m *fakeMachine) interval(c *Controller, load float64) {
	d := 250 * time.Millisecond
	m.now = m.now.Add(d)
	m.cpu += time.Duration(load * float64(d))
	c.sample()
}

func TestControllerFollowsTheLoad(t *testing.T) {
	type step struct {
		load  float64
		procs int // in force after the interval
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"light load stays on one P", []step{{0.1, 1}, {0.5, 1}, {0.74, 1}, {0.0, 1}}},
		{"a busy interval gets every core at once", []step{{0.2, 1}, {0.75, 4}, {2.5, 4}}},
		{"back to one P after four quiet intervals in a row", []step{
			{0.9, 4}, {0.3, 4}, {0.3, 4}, {0.3, 4}, {0.3, 1}, {0.3, 1}}},
		{"a busy interval among quiet ones starts the count again", []step{
			{0.9, 4}, {0.3, 4}, {0.3, 4}, {0.3, 4}, {0.6, 4}, {0.3, 4}, {0.3, 4}, {0.3, 4}, {0.3, 1}}},
		// A load between Down at full Ps and Up at one P keeps whichever state it found:
		// the same load costs more CPU with more Ps, so it would otherwise switch back and forth.
		{"a middling load does not flap", []step{
			{0.7, 1}, {0.7, 1}, {0.9, 4}, {0.65, 4}, {0.65, 4}, {0.65, 4}, {0.65, 4}, {0.65, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &fakeMachine{full: 4}
			c := m.controller(Config{})
			if !c.start() || m.procs != 1 {
				t.Fatalf("start: procs = %d, want 1", m.procs)
			}
			for i, s := range tt.steps {
				m.interval(c, s.load)
				if m.procs != s.procs || c.Status().Procs != s.procs {
					t.Fatalf("after interval %d (%.2f cores): GOMAXPROCS %d, status %d, want %d", i, s.load, m.procs, c.Status().Procs, s.procs)
				}
			}
		})
	}
}

func TestControllerStatus(t *testing.T) {
	m := &fakeMachine{full: 8}
	c := m.controller(Config{})
	c.start()
	m.interval(c, 1.2345)
	for range 4 {
		m.interval(c, 0.1)
	}
	m.interval(c, 0.25)
	want := Status{Mode: "adaptive", Procs: 1, Max: 8, Load: 0.25, Switches: 2}
	if d := cmp.Diff(want, c.Status()); d != "" {
		t.Errorf("status (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]int{0, 1, 0, 1}, m.applied); d != "" {
		t.Errorf("settings applied (-want +got):\n%s", d)
	}
}

// A machine whose CPUs (or quota) went down to one since the start: the default is
// applied, and it is not counted as a switch.
func TestControllerDefaultDownToOne(t *testing.T) {
	m := &fakeMachine{full: 4}
	c := m.controller(Config{})
	c.start()
	m.full = 1
	m.interval(c, 0.9)
	m.interval(c, 0.9)
	if s := c.Status(); s.Procs != 1 || s.Max != 1 || s.Switches != 0 {
		t.Errorf("status = %+v, want one P, max 1, no switches", s)
	}
}

// With one CPU, or without a way to read the process's CPU time, the controller leaves
// the runtime's default alone and says why.
func TestControllerFixed(t *testing.T) {
	tests := []struct {
		name   string
		m      *fakeMachine
		reason string
	}{
		{"one CPU", &fakeMachine{full: 1}, "one CPU: nothing to adapt"},
		{"no CPU time", &fakeMachine{full: 4, noCPU: true}, "the process's CPU time cannot be read on this system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.m.controller(Config{})
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c.Run(ctx) // returns at once
			want := Status{Mode: "fixed", Reason: tt.reason, Procs: tt.m.full, Max: tt.m.full}
			if d := cmp.Diff(want, c.Status()); d != "" {
				t.Errorf("status (-want +got):\n%s", d)
			}
			if d := cmp.Diff([]int{0}, tt.m.applied); d != "" {
				t.Errorf("settings applied (-want +got):\n%s", d)
			}
		})
	}
}

// The real thing: getrusage and the runtime's GOMAXPROCS. A busy goroutine gets the
// process every core; once it stops, the process is back on one P; when Run ends the
// runtime's default is in force again. The thresholds are low so that a loaded test
// machine still shows a busy loop as busy; the thresholds' own rules are tested above.
func TestControllerDrivesTheRuntime(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	runtime.SetDefaultGOMAXPROCS() // what the controller gives a busy process (GOMAXPROCS in the environment aside)
	full := runtime.GOMAXPROCS(0)
	if full < 2 {
		t.Skip("one CPU: nothing to adapt")
	}
	c := New(Config{Interval: 20 * time.Millisecond, Up: 0.3, Down: 0.15, DownAfter: 3})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS %d, status %+v", what, runtime.GOMAXPROCS(0), c.Status())
			}
		}
	}
	waitFor("started on one P", func() bool { return runtime.GOMAXPROCS(0) == 1 })

	stop := make(chan struct{})
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		for x := 0; ; x++ {
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	waitFor("busy: every core", func() bool { return runtime.GOMAXPROCS(0) == full })
	close(stop)
	<-spun
	waitFor("quiet: one P again", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	if s := c.Status(); s.Mode != "adaptive" || s.Max != full || s.Switches < 2 {
		t.Errorf("status = %+v, want adaptive with max %d and both switches counted", s, full)
	}
	cancel()
	<-done
	if n := runtime.GOMAXPROCS(0); n != full {
		t.Errorf("after Run: GOMAXPROCS %d, want the default %d", n, full)
	}
}
