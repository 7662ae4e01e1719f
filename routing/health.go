package routing

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// Circuit states.
const (
	circuitClosed int32 = iota
	circuitOpen
	circuitHalfOpen
)

var circuitNames = [...]string{"closed", "open", "half_open"}

// CircuitConfig configures the per backend+model circuit breaker.
type CircuitConfig struct {
	// Failures is how many failures in a row open the circuit (default 3).
	Failures int
	// Cooldown is how long an open circuit benches its model before one probe request is
	// let through (half-open). Default 30s.
	Cooldown time.Duration
	// MaxBench caps a bench taken from an upstream Retry-After (default 15m).
	MaxBench time.Duration
}

func (c *CircuitConfig) defaults() {
	if c.Failures <= 0 {
		c.Failures = 3
	}
	if c.Cooldown <= 0 {
		c.Cooldown = 30 * time.Second
	}
	if c.MaxBench <= 0 {
		c.MaxBench = 15 * time.Minute
	}
}

// circuit is the health of one backend+model. All fields are atomics: selection reads
// them without locks or allocations.
type circuit struct {
	backend, model string
	state          atomic.Int32
	until          atomic.Int64 // unix nanos: open until
	probeAt        atomic.Int64 // unix nanos: when the half-open probe was handed out
	fails          atomic.Int32
	lastErr        atomic.Pointer[string]
	lastFail       atomic.Int64
}

// available reports whether the model may be tried at now. An open circuit whose
// cool-down is over turns half-open and hands out exactly one probe; a probe that never
// reports back is handed out again after another cool-down.
func (c *circuit) available(now int64, cooldown time.Duration) bool {
	switch c.state.Load() {
	case circuitClosed:
		return true
	case circuitOpen:
		if now < c.until.Load() {
			return false
		}
		if c.state.CompareAndSwap(circuitOpen, circuitHalfOpen) {
			c.probeAt.Store(now)
			return true
		}
		return false
	default: // half-open: one probe in flight
		p := c.probeAt.Load()
		return now-p > int64(cooldown) && c.probeAt.CompareAndSwap(p, now)
	}
}

func (c *circuit) success() {
	c.fails.Store(0)
	c.state.Store(circuitClosed)
}

func (c *circuit) failure(now int64, err error, cfg CircuitConfig) {
	msg := err.Error()
	c.lastErr.Store(&msg)
	c.lastFail.Store(now)
	n := c.fails.Add(1)
	if c.state.Load() == circuitHalfOpen || int(n) >= cfg.Failures {
		c.open(now + int64(cfg.Cooldown))
	}
}

// bench opens the circuit until at least until (an upstream's Retry-After).
func (c *circuit) bench(now int64, d time.Duration, err error, cfg CircuitConfig) {
	msg := err.Error()
	c.lastErr.Store(&msg)
	c.lastFail.Store(now)
	c.fails.Add(1)
	c.open(now + int64(min(d, cfg.MaxBench)))
}

func (c *circuit) open(until int64) {
	for old := c.until.Load(); old < until && !c.until.CompareAndSwap(old, until); old = c.until.Load() {
	}
	c.state.Store(circuitOpen)
}

type circuitKey struct{ backend, model string }

// circuits is the registry of circuits; it outlives rankings reloads.
type circuits struct {
	mu sync.RWMutex
	m  map[circuitKey]*circuit
}

func (cs *circuits) get(backend, model string) *circuit {
	k := circuitKey{backend, model}
	cs.mu.RLock()
	c := cs.m[k]
	cs.mu.RUnlock()
	if c != nil {
		return c
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if c = cs.m[k]; c == nil {
		if cs.m == nil {
			cs.m = make(map[circuitKey]*circuit)
		}
		c = &circuit{backend: backend, model: model}
		cs.m[k] = c
	}
	return c
}

// CircuitStatus is one circuit as /status shows it.
type CircuitStatus struct {
	Backend   string `json:"backend"`
	Model     string `json:"model"`
	State     string `json:"state"`
	Failures  int    `json:"consecutive_failures"`
	OpenUntil string `json:"open_until,omitempty"`
	LastError string `json:"last_error,omitempty"`
	LastFail  string `json:"last_failure_at,omitempty"`
}

func (cs *circuits) status(now time.Time) []CircuitStatus {
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	out := make([]CircuitStatus, 0, len(cs.m))
	for _, c := range cs.m {
		st := CircuitStatus{Backend: c.backend, Model: c.model, State: circuitNames[c.state.Load()], Failures: int(c.fails.Load())}
		if st.State == "open" && c.until.Load() <= now.UnixNano() {
			st.State = "half_open" // cool-down over: the next request probes it
		}
		if st.State != "closed" {
			st.OpenUntil = time.Unix(0, c.until.Load()).UTC().Format(time.RFC3339)
		}
		if p := c.lastErr.Load(); p != nil {
			st.LastError = *p
			st.LastFail = time.Unix(0, c.lastFail.Load()).UTC().Format(time.RFC3339)
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backend != out[j].Backend {
			return out[i].Backend < out[j].Backend
		}
		return out[i].Model < out[j].Model
	})
	return out
}

// healthFailure reports whether err says something about the upstream's health (and so
// counts against its circuit), and the Retry-After it asked for.
func healthFailure(err error, now time.Time) (counts bool, retryAfter time.Duration) {
	if !backends.Retryable(err) {
		return false, 0
	}
	var ae *backends.APIError
	if errors.As(err, &ae) && ae.RetryAfter != "" {
		if d, ok := backends.RetryAfter(ae.RetryAfter, now); ok && d > 0 {
			return true, d
		}
	}
	return true, 0
}
