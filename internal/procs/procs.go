// Package procs owns how many threads run the proxy's Go code at once (GOMAXPROCS). A
// gateway in front of language models spends ~0.1-0.3 ms of CPU on a request that takes
// seconds upstream: one core serves thousands of requests a second. With more Ps than
// that, every goroutine made runnable (a socket ready, a writer woken) also wakes an idle
// thread that spins looking for work and goes back to sleep; on a laptop shared with an
// editor, a language server and builds, that costs more CPU than the request itself (the
// load benchmark measured the same requests at 19-26 % less CPU each with one P).
//
// The Controller runs the proxy on one P while the process uses less than a core and
// gives it the runtime's default (every core it may use) as soon as it needs more: it
// samples the process's CPU time (user and system, all threads) every Interval, switches
// up after one interval at or above Up cores, and back down after DownAfter intervals in a
// row under Down cores. Down is below Up measured with more Ps (which cost more CPU for the
// same load), so a steady load settles in one state instead of switching back and forth.
// An operator who sets GOMAXPROCS keeps exactly that: the proxy does not start a
// Controller then.
package procs

import (
	"context"
	"runtime"
	"sync"
	"time"
)

// Config tunes the Controller. The zero value of a field means its default.
type Config struct {
	Interval  time.Duration // how often CPU use is sampled; 250ms
	Up        float64       // cores used in one interval at one P that switch to all; 0.75
	Down      float64       // cores used with all Ps under which, DownAfter times in a row, one P is enough again; 0.6
	DownAfter int           // 4
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.Up <= 0 {
		c.Up = 0.75
	}
	if c.Down <= 0 {
		c.Down = 0.6
	}
	if c.DownAfter <= 0 {
		c.DownAfter = 4
	}
	return c
}

// Controller switches GOMAXPROCS between one and the runtime's default. Safe for
// concurrent use.
type Controller struct {
	cfg Config
	// cpu reports the process's CPU time so far; set applies a GOMAXPROCS setting: 1, or
	// 0 for the runtime's default, and returns the setting now in force. Tests inject both.
	cpu func() (time.Duration, bool)
	set func(n int) int
	now func() time.Time

	mu       sync.Mutex
	procs    int // in force
	full     int // the runtime's default when last applied
	low      int // intervals in a row under Down
	switches int
	lastCPU  time.Duration
	lastAt   time.Time
	load     float64 // cores used in the last interval
	disabled string  // why the controller does nothing, if it does not
}

// New returns a Controller that measures the process with getrusage and sets the
// runtime's GOMAXPROCS. It does nothing until Run.
func New(cfg Config) *Controller {
	return newController(cfg, processCPU, applyProcs, time.Now)
}

func newController(cfg Config, cpu func() (time.Duration, bool), set func(int) int, now func() time.Time) *Controller {
	return &Controller{cfg: cfg.withDefaults(), cpu: cpu, set: set, now: now}
}

// applyProcs sets GOMAXPROCS to n, or to the runtime's default (which follows the CPU
// count, affinity and cgroup quota) for 0.
func applyProcs(n int) int {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	} else {
		runtime.SetDefaultGOMAXPROCS()
	}
	return runtime.GOMAXPROCS(0)
}

// Run starts on one P and adapts until ctx ends; it then gives back the runtime's
// default, so shutdown work is not held to one P.
func (c *Controller) Run(ctx context.Context) {
	if !c.start() {
		return
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	defer c.stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.sample()
		}
	}
}

// start measures the runtime's default and, when it is more than one, switches to one P.
// It reports whether there is anything to adapt.
func (c *Controller) start() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cpu, ok := c.cpu()
	if !ok {
		c.disabled = "the process's CPU time cannot be read on this system"
		c.full = c.set(0)
		c.procs = c.full
		return false
	}
	c.full = c.set(0)
	if c.full <= 1 {
		c.disabled = "one CPU: nothing to adapt"
		c.procs = c.full
		return false
	}
	c.procs = c.set(1)
	c.lastCPU, c.lastAt = cpu, c.now()
	return true
}

func (c *Controller) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.procs == 1 {
		c.procs = c.set(0)
	}
}

// sample measures the CPU used since the last sample and switches if the load asks for
// it. Run calls it every Interval.
func (c *Controller) sample() {
	c.mu.Lock()
	defer c.mu.Unlock()
	cpu, ok := c.cpu()
	now := c.now()
	wall := now.Sub(c.lastAt)
	if !ok || wall <= 0 {
		return
	}
	c.load = float64(cpu-c.lastCPU) / float64(wall)
	c.lastCPU, c.lastAt = cpu, now
	switch {
	case c.procs == 1 && c.load >= c.cfg.Up:
		c.full = c.set(0) // the default follows the CPUs, affinity and quota of now
		c.low = 0
		if c.full > 1 {
			c.procs = c.full
			c.switches++
		}
	case c.procs > 1 && c.load < c.cfg.Down:
		c.low++
		if c.low >= c.cfg.DownAfter {
			c.procs = c.set(1)
			c.low = 0
			c.switches++
		}
	default:
		c.low = 0
	}
}

// Status is the controller's section of /status.
type Status struct {
	Mode     string  `json:"mode"`             // "adaptive", or "fixed" (with Reason)
	Reason   string  `json:"reason,omitempty"` // why fixed
	Procs    int     `json:"current"`          // in force
	Max      int     `json:"max"`              // the runtime's default: what a busy proxy gets
	Load     float64 `json:"load_cores"`       // CPU used over the last interval, in cores
	Switches int     `json:"switches"`         // changes of GOMAXPROCS so far
}

// Status reports the controller's state.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Mode: "adaptive", Procs: c.procs, Max: c.full, Load: float64(int(c.load*1000+0.5)) / 1000, Switches: c.switches}
	if c.disabled != "" {
		s.Mode, s.Reason = "fixed", c.disabled
	}
	return s
}
