package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// clock is an injected clock tests move by hand.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// rankingsJSON builds a valid rankings file: architect as given, every other role the
// general chain.
func rankingsJSON(t testing.TB, version int, architect RoleRanking) []byte {
	t.Helper()
	general := RoleRanking{
		Primary:   Entry{Model: "sub-b", Backend: "nanogpt"},
		Fallbacks: []Entry{{Model: "gem-flash", Backend: "vertex"}},
		FreeTier:  &Entry{Model: "sub-free", Backend: "nanogpt"},
	}
	rk := Rankings{Version: version, UpdatedAt: "2026-11-01T00:00:00Z", Roles: map[string]RoleRanking{}, Models: map[string]ModelInfo{
		"sub-a":    {Backend: "nanogpt", Subscription: true},
		"sub-b":    {Backend: "nanogpt", Subscription: true},
		"sub-free": {Backend: "nanogpt", Subscription: true},
		"paid-x":   {Backend: "nanogpt"},
		"gem-pro":  {Backend: "vertex"},
	}}
	for _, r := range roles.All {
		rk.Roles[string(r)] = general
	}
	rk.Roles["architect"] = architect
	b, err := json.Marshal(rk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// architectChain: a subscription primary, a Vertex and a paid NanoGPT fallback, a
// subscription free tier.
var architectChain = RoleRanking{
	Primary:   Entry{Model: "sub-a", Backend: "nanogpt"},
	Fallbacks: []Entry{{Model: "gem-pro", Backend: "vertex"}, {Model: "paid-x", Backend: "nanogpt"}},
	FreeTier:  &Entry{Model: "sub-free", Backend: "nanogpt"},
}

type fixture struct {
	r     *Router
	q     *Quota
	clock *clock
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	clk := newClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	q, err := NewQuota(t.Context(), QuotaConfig{Monthly: 100, Now: clk.Now}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Default: rankingsJSON(t, 1, architectChain),
		Profiles: append(DefaultProfiles(),
			Profile{Name: "offline", Backends: []string{"nanogpt"}},
			Profile{Name: "no-nano", Exclude: []string{"nanogpt"}}),
		Quota: q, Now: clk.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{r: r, q: q, clock: clk}
}

func names(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Backend + "/" + c.Model
	}
	return out
}

var errUpstream = &backends.APIError{Status: 503, Type: "server_error", Message: "Model is temporarily unavailable", Backend: "nanogpt"}

func TestSelectOrder(t *testing.T) {
	type state struct {
		used    int64    // quota units used of 100 (threshold 95)
		open    []string // backend/model with an open circuit
		vertex  bool     // vertex configured
		noQuota bool
	}
	healthy := state{vertex: true}
	tests := []struct {
		name    string
		model   string
		role    roles.Role
		profile string
		st      state
		want    []string
		status  int // expected error status instead
	}{
		{"personal prefers subscription and free tier, vertex last", "auto:architect", "", "personal", healthy,
			[]string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"work prefers vertex, keeps ranking order on nanogpt", "auto:architect", "", "work", healthy,
			[]string{"vertex/gem-pro", "nanogpt/sub-a", "nanogpt/paid-x", "nanogpt/sub-free"}, 0},
		{"default profile is personal", "auto", roles.Architect, "", healthy,
			[]string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"auto without role is general", "auto", "", "personal", healthy,
			[]string{"nanogpt/sub-b", "nanogpt/sub-free", "vertex/gem-flash"}, 0},
		{"profile excluding nanogpt", "auto:architect", "", "no-nano", healthy, []string{"vertex/gem-pro"}, 0},
		{"below threshold nothing moves", "auto:architect", "", "personal", state{used: 94, vertex: true},
			[]string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"at threshold subscription moves back (personal)", "auto:architect", "", "personal", state{used: 95, vertex: true},
			[]string{"nanogpt/paid-x", "vertex/gem-pro", "nanogpt/sub-a", "nanogpt/sub-free"}, 0},
		{"at threshold subscription moves back (work)", "auto:architect", "", "work", state{used: 95, vertex: true},
			[]string{"vertex/gem-pro", "nanogpt/paid-x", "nanogpt/sub-a", "nanogpt/sub-free"}, 0},
		{"exhausted drops subscription", "auto:architect", "", "personal", state{used: 100, vertex: true},
			[]string{"nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"exhausted, nanogpt-only profile keeps paid model", "auto:architect", "", "offline", state{used: 100, vertex: true},
			[]string{"nanogpt/paid-x"}, 0},
		{"exhausted with nothing else is a 429", "auto:general", "", "offline", state{used: 100, vertex: true}, nil, 429},
		{"exhausted, vertex not configured is a 429", "auto:general", "", "personal", state{used: 100}, nil, 429},
		{"vertex not configured is skipped", "auto:architect", "", "work", state{},
			[]string{"nanogpt/sub-a", "nanogpt/paid-x", "nanogpt/sub-free"}, 0},
		{"open circuit skipped", "auto:architect", "", "personal", state{open: []string{"nanogpt/sub-a"}, vertex: true},
			[]string{"nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"everything benched: tried anyway in order", "auto:architect", "", "no-nano", state{open: []string{"vertex/gem-pro"}, vertex: true},
			[]string{"vertex/gem-pro"}, 0},
		{"quota and health together", "auto:architect", "", "personal", state{used: 96, open: []string{"vertex/gem-pro"}, vertex: true},
			[]string{"nanogpt/paid-x", "nanogpt/sub-a", "nanogpt/sub-free"}, 0},
		{"no quota configured", "auto:architect", "", "personal", state{used: 100, vertex: true, noQuota: true},
			[]string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}, 0},
		{"explicit ranked model", "GEM-PRO", "", "personal", healthy, []string{"vertex/gem-pro"}, 0},
		{"explicit prefix forces backend", "vertex/gemini-9", "", "personal", healthy, []string{"vertex/gemini-9"}, 0},
		{"explicit prefix on nanogpt", "nanogpt/openai/gpt-5", "", "personal", healthy, []string{"nanogpt/openai/gpt-5"}, 0},
		{"explicit unknown model", "no-such-model", "", "personal", healthy, nil, 404},
		{"google/ spelling of a Gemini id goes to vertex", "google/gemini-3-pro", "", "personal", healthy, []string{"vertex/gemini-3-pro"}, 0},
		{"google/ prefix on a non-Gemini id is not routable", "google/gem-pro", "", "personal", healthy, nil, 404},
		{"explicit on excluded backend", "vertex/gem-pro", "", "offline", healthy, nil, 400},
		{"explicit subscription model over quota", "sub-a", "", "personal", state{used: 100, vertex: true}, nil, 429},
		{"explicit model is tried even when benched", "sub-a", "", "personal", state{open: []string{"nanogpt/sub-a"}, vertex: true}, []string{"nanogpt/sub-a"}, 0},
		{"unknown profile", "auto", "", "holiday", healthy, nil, 400},
		{"unknown alias role", "auto:poet", "", "personal", healthy, nil, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) {
				vertex := tc.st.vertex
				c.Enabled = func(b string) bool { return b == "nanogpt" || vertex }
				if tc.st.noQuota {
					c.Quota = nil
				}
			})
			f.q.add(tc.st.used, f.clock.Now())
			for _, o := range tc.st.open {
				var c Candidate
				c.Backend, c.Model = splitName(o)
				for range 3 {
					f.r.Observe(c, errUpstream, time.Second)
				}
			}
			got, err := f.r.Select(Request{Role: tc.role, Model: tc.model, Profile: tc.profile})
			if tc.status != 0 {
				var ae *backends.APIError
				if !errors.As(err, &ae) || ae.Status != tc.status {
					t.Fatalf("Select = %v, %v; want error status %d", names(got), err, tc.status)
				}
				if tc.status == 429 && (!ae.NoRetry || ae.Code != "quota_exceeded") {
					t.Errorf("quota error = %+v; want NoRetry and code quota_exceeded", ae)
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			if d := cmp.Diff(tc.want, names(got)); d != "" {
				t.Errorf("candidates (-want +got):\n%s", d)
			}
		})
	}
}

func splitName(s string) (backend, model string) {
	for i := range s {
		if s[i] == '/' {
			return s[:i], s[i+1:]
		}
	}
	return "", s
}

func TestQuotaErrorNamesQuotaAndReset(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Enabled = func(b string) bool { return b == "nanogpt" } })
	f.q.add(100, f.clock.Now())
	_, err := f.r.Select(Request{Model: "auto", Profile: "personal"})
	var ae *backends.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v", err)
	}
	want := "Quota exhausted: the NanoGPT subscription's monthly quota is used up (100 of 100 requests in 2026-11); it resets at 2026-12-01T00:00:00Z, and no model outside the subscription is available for this request under the current profile."
	if ae.Message != want {
		t.Errorf("message = %q\nwant      %q", ae.Message, want)
	}
	// The daily cap, when it is what ran out, is named instead.
	clk := newClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	q, _ := NewQuota(t.Context(), QuotaConfig{Monthly: 1000, Daily: 10, Now: clk.Now}, nil, nil)
	q.add(10, clk.Now())
	msg, reset := q.exhaustedMessage(clk.Now())
	if reset != time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC) || msg != "the NanoGPT subscription's daily quota is used up (10 of 10 requests today); it resets at 2026-11-29T00:00:00Z" {
		t.Errorf("daily: %q %v", msg, reset)
	}
}

func TestExplicitFallbackToRoleChain(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ExplicitFallback = true })
	got, err := f.r.Select(Request{Role: roles.Architect, Model: "vertex/gemini-9", Profile: "personal"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"vertex/gemini-9", "nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}
	if d := cmp.Diff(want, names(got)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	// Over quota the explicit subscription model is dropped, the chain's others remain.
	f.q.add(100, f.clock.Now())
	got, err = f.r.Select(Request{Role: roles.Architect, Model: "sub-a", Profile: "personal"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"nanogpt/paid-x", "vertex/gem-pro"}, names(got)); d != "" {
		t.Errorf("over quota (-want +got):\n%s", d)
	}
}

func TestCatalogRoutesUnrankedModels(t *testing.T) {
	f := newFixture(t, nil)
	if _, err := f.r.Select(Request{Model: "claude-sonnet-4-5-20250929"}); err == nil {
		t.Fatal("unranked model routed before the catalog knew it")
	}
	f.r.SetCatalog("nanogpt", []string{"claude-sonnet-4-5-20250929"})
	got, err := f.r.Select(Request{Model: "claude-sonnet-4-5-20250929"})
	if err != nil || !cmp.Equal(names(got), []string{"nanogpt/claude-sonnet-4-5-20250929"}) {
		t.Errorf("Select = %v, %v", names(got), err)
	}
}

func TestCircuitBreaker(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Circuit = CircuitConfig{Failures: 2, Cooldown: 30 * time.Second} })
	sel2 := func() []string {
		t.Helper()
		got, err := f.r.Select(Request{Model: "auto:architect", Profile: "personal"})
		if err != nil {
			t.Fatal(err)
		}
		return names(got)
	}
	primary := Candidate{Backend: "nanogpt", Model: "sub-a"}
	full := []string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}
	benched := full[1:]

	f.r.Observe(primary, errUpstream, 0)
	if d := cmp.Diff(full, sel2()); d != "" {
		t.Fatalf("one failure benches already:\n%s", d)
	}
	// A 400 says nothing about the upstream's health.
	for range 5 {
		f.r.Observe(primary, &backends.APIError{Status: 400, Message: "bad", Backend: "nanogpt"}, 0)
	}
	f.r.Observe(primary, errors.New("connection refused"), 0)
	if d := cmp.Diff(benched, sel2()); d != "" {
		t.Fatalf("after 2 failures (-want +got):\n%s", d)
	}
	if st := f.r.Circuits(); len(st) == 0 || !hasCircuit(st, "sub-a", "open") {
		t.Errorf("status does not show the open circuit: %+v", st)
	}
	f.clock.Add(31 * time.Second)
	// Cool-down over: exactly one request gets the probe.
	if d := cmp.Diff(full, sel2()); d != "" {
		t.Fatalf("probe (-want +got):\n%s", d)
	}
	if d := cmp.Diff(benched, sel2()); d != "" {
		t.Fatalf("second request during the probe (-want +got):\n%s", d)
	}
	// The probe fails: benched again for a full cool-down.
	f.r.Observe(primary, errUpstream, 0)
	f.clock.Add(10 * time.Second)
	if d := cmp.Diff(benched, sel2()); d != "" {
		t.Fatalf("after failed probe (-want +got):\n%s", d)
	}
	f.clock.Add(25 * time.Second)
	_ = sel2() // probe handed out
	f.r.Observe(primary, nil, time.Second)
	if d := cmp.Diff(full, sel2()); d != "" {
		t.Fatalf("after successful probe (-want +got):\n%s", d)
	}
	if d := cmp.Diff(full, sel2()); d != "" {
		t.Fatalf("closed circuit serves everyone (-want +got):\n%s", d)
	}
}

func hasCircuit(st []CircuitStatus, model, state string) bool {
	for _, c := range st {
		if c.Model == model && c.State == state {
			return true
		}
	}
	return false
}

func TestRetryAfterBenches(t *testing.T) {
	f := newFixture(t, nil)
	c := Candidate{Backend: "nanogpt", Model: "sub-a"}
	f.r.Observe(c, &backends.APIError{Status: 429, Message: "Daily request limit exceeded", RetryAfter: "120", Backend: "nanogpt"}, 0)
	first := func() string {
		got, err := f.r.Select(Request{Model: "auto:architect"})
		if err != nil {
			t.Fatal(err)
		}
		return names(got)[0]
	}
	if got := first(); got != "nanogpt/sub-free" {
		t.Fatalf("right after a 429 with Retry-After, first = %s", got)
	}
	f.clock.Add(100 * time.Second) // past the 30s cool-down, within Retry-After
	if got := first(); got != "nanogpt/sub-free" {
		t.Fatalf("within Retry-After, first = %s", got)
	}
	f.clock.Add(21 * time.Second)
	if got := first(); got != "nanogpt/sub-a" {
		t.Fatalf("after Retry-After, first = %s", got)
	}
}

func TestStickiness(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.StickyTTL = time.Hour })
	sel := func(conv string) []string {
		t.Helper()
		got, err := f.r.Select(Request{Model: "auto:architect", ConversationID: conv})
		if err != nil {
			t.Fatal(err)
		}
		return names(got)
	}
	gem := Candidate{Backend: "vertex", Model: "gem-pro"}
	f.r.Pin("conv-1", gem)
	if got := sel("conv-1"); got[0] != "vertex/gem-pro" || len(got) != 4 {
		t.Fatalf("pinned conversation: %v", got)
	}
	if got := sel("conv-2"); got[0] != "nanogpt/sub-a" {
		t.Fatalf("other conversation: %v", got)
	}
	// A pinned model from another role's chain is kept too (the task does not flip models).
	f.r.Pin("conv-3", Candidate{Backend: "vertex", Model: "gem-flash"})
	if got := sel("conv-3"); got[0] != "vertex/gem-flash" {
		t.Fatalf("cross-role pin: %v", got)
	}
	// Not while it is unhealthy.
	for range 3 {
		f.r.Observe(gem, errUpstream, 0)
	}
	if got := sel("conv-1"); got[0] != "nanogpt/sub-a" {
		t.Fatalf("pinned but benched model still first: %v", got)
	}
	// Nor when the profile excludes its backend.
	got, _ := f.r.Select(Request{Model: "auto:architect", ConversationID: "conv-3", Profile: "offline"})
	if names(got)[0] != "nanogpt/sub-a" {
		t.Fatalf("pin overrides profile: %v", names(got))
	}
	// Nor a subscription model once the quota is near its end.
	f.r.Pin("conv-4", Candidate{Backend: "nanogpt", Model: "sub-free", Subscription: true})
	f.q.add(96, f.clock.Now())
	if got := sel("conv-4"); got[0] != "nanogpt/paid-x" {
		t.Fatalf("pin kept a subscription model past the threshold: %v", got)
	}
	// Expiry.
	f.clock.Add(2 * time.Hour)
	if got := sel("conv-3"); got[0] != "nanogpt/paid-x" {
		t.Fatalf("expired pin still applies: %v", got)
	}
}

func TestStickyBounded(t *testing.T) {
	s := newSticky(time.Hour, 3)
	for i := range 5 {
		s.put(fmt.Sprint(i), Candidate{Model: fmt.Sprint(i)}, 0)
	}
	if s.len() != 3 {
		t.Fatalf("len = %d", s.len())
	}
	if _, ok := s.get("0", 0); ok {
		t.Error("oldest entry not evicted")
	}
	if c, ok := s.get("4", 0); !ok || c.Model != "4" {
		t.Error("newest entry lost")
	}
}

func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model_routing.json")
	v1 := rankingsJSON(t, 1, architectChain)
	v2chain := RoleRanking{Primary: Entry{Model: "gem-pro", Backend: "vertex"}, Fallbacks: []Entry{{Model: "paid-x", Backend: "nanogpt"}}}
	v2 := rankingsJSON(t, 2, v2chain)
	writeAtomic(t, path, v1)
	var logs syncBuffer
	f := newFixture(t, func(c *Config) { c.RankingsPath = path })
	f.r.log = logs.logger()
	want1 := []string{"nanogpt/sub-a", "nanogpt/sub-free", "nanogpt/paid-x", "vertex/gem-pro"}
	want2 := []string{"nanogpt/paid-x", "vertex/gem-pro"}

	tick := make(chan time.Time)
	go f.r.Watch(t.Context(), tick)

	// Requests keep coming while the file is replaced; each sees v1 or v2, never a mix.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seen1, seen2 atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := f.r.Select(Request{Model: "auto:architect"})
				if err != nil {
					t.Error(err)
					return
				}
				n := names(got)
				switch {
				case cmp.Equal(n, want1):
					seen1.Add(1)
				case cmp.Equal(n, want2):
					seen2.Add(1)
				default:
					t.Errorf("mixed rankings: %v", n)
					return
				}
			}
		}()
	}
	for i := range 6 {
		b := v2
		if i%2 == 1 {
			b = v1
		}
		writeAtomic(t, path, b)
		bumpMtime(t, path, i)
		tick <- time.Time{}
		tick <- time.Time{} // the watcher has finished the previous check
		want := want2
		if i%2 == 1 {
			want = want1
		}
		if got, _ := f.r.Select(Request{Model: "auto:architect"}); !cmp.Equal(names(got), want) {
			t.Fatalf("after write %d: %v; want %v", i, names(got), want)
		}
	}
	close(stop)
	wg.Wait()
	if f.r.Rankings().Version != 1 {
		t.Errorf("after the last write (v1) version = %d", f.r.Rankings().Version)
	}

	// An invalid file is rejected, logged with its problem; the last good rankings stay.
	writeAtomic(t, path, v2)
	bumpMtime(t, path, 10)
	tick <- time.Time{}
	tick <- time.Time{}
	bad := []byte(`{"version": 3, "roles": {"architect": {"primary": {"model": "x", "backend": "openai"}}}}`)
	writeAtomic(t, path, bad)
	bumpMtime(t, path, 11)
	tick <- time.Time{}
	tick <- time.Time{}
	if v := f.r.Rankings().Version; v != 2 {
		t.Errorf("after an invalid file, version = %d; want the last good (2)", v)
	}
	got, _ := f.r.Select(Request{Model: "auto:architect"})
	if !cmp.Equal(names(got), want2) {
		t.Errorf("after an invalid file, candidates = %v", names(got))
	}
	for _, want := range []string{"rankings file rejected", `unknown backend \"openai\"`, `role \"general\" is missing`} {
		if !logs.contains(want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if seen1.Load()+seen2.Load() == 0 {
		t.Error("no concurrent request ran during the reloads")
	}
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// bumpMtime gives every write a distinct modification time (file systems with coarse
// timestamps would otherwise hide a same-size rewrite).
func bumpMtime(t *testing.T, path string, i int) {
	t.Helper()
	mt := time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
}
