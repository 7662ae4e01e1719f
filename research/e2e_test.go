package research

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

const newModel = "acme/coder-x"

// world is a set of httptest upstreams speaking each source's wire format, plus a
// rankings file on disk and a running router.
type world struct {
	t    *testing.T
	down atomic.Bool // every upstream answers 503
	// unsubscribed leaves the new model off NanoGPT's subscription list.
	unsubscribed atomic.Bool
	path         string
	router       *routing.Router
	svc          *Service
	cfg          config.Research
	statePth     string
}

func withNewModel(t *testing.T, name string, edit func(doc map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(fixture(t, name), &doc); err != nil {
		t.Fatal(err)
	}
	edit(doc)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newWorld(t *testing.T, rankings []byte) *world {
	t.Helper()
	w := &world{t: t}
	openrouter := withNewModel(t, "benchmarks/openrouter_models.excerpt.json", func(doc map[string]any) {
		doc["data"] = append(doc["data"].([]any), map[string]any{
			"id": newModel, "canonical_slug": newModel + "-20261120", "context_length": 256000,
			"pricing":    map[string]any{"prompt": "0.0000008", "completion": "0.000004"},
			"benchmarks": map[string]any{"artificial_analysis": map[string]any{"intelligence_index": 50.0, "coding_index": 90.0, "agentic_index": 70.0}},
		})
	})
	nanoModels := withNewModel(t, "nanogpt/models-detailed.json", func(doc map[string]any) {
		doc["data"] = append(doc["data"].([]any), map[string]any{
			"id": newModel, "object": "model", "owned_by": "acme", "context_length": 256000,
			"pricing": map[string]any{"prompt": 0.8, "completion": 4.0, "currency": "USD", "unit": "per_million_tokens"},
		})
	})
	aider := append(fixture(t, "benchmarks/aider_polyglot_leaderboard.excerpt.yml"),
		[]byte("\n- dirname: 2026-11-20--coder-x\n  model: Coder X\n  pass_rate_2: 93.1\n  command: aider --model openai/acme/coder-x\n  total_cost: 4.2\n  seconds_per_case: 20.5\n  date: 2026-11-20\n")...)
	pages := map[string][]byte{
		"0":   fixture(t, "benchmarks/lmarena_hf_rows.offset0.constructed.json"),
		"100": fixture(t, "benchmarks/lmarena_hf_rows.offset100.constructed.json"),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/models", func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("detailed") == "true" {
			_, _ = rw.Write(nanoModels)
			return
		}
		_, _ = rw.Write(openrouter)
	})
	mux.HandleFunc("/api/subscription/v1/models", func(rw http.ResponseWriter, r *http.Request) {
		// The new model is also on the subscription, so the personal profile (which
		// prefers subscription models) puts it first once it ranks first.
		sub := fixture(t, "nanogpt/subscription-models.json")
		if w.unsubscribed.Load() {
			_, _ = rw.Write(sub)
			return
		}
		i := bytes.LastIndex(sub, []byte("}"))
		i = bytes.LastIndex(sub[:i], []byte("}"))
		sub = append(append(append([]byte{}, sub[:i+1]...), []byte(`,{"id":"`+newModel+`","object":"model","created":1764000000,"owned_by":"acme"}`)...), sub[i+1:]...)
		_, _ = rw.Write(sub)
	})
	mux.HandleFunc("/rows", func(rw http.ResponseWriter, r *http.Request) { _, _ = rw.Write(pages[r.URL.Query().Get("offset")]) })
	mux.HandleFunc("/polyglot_leaderboard.yml", func(rw http.ResponseWriter, r *http.Request) { _, _ = rw.Write(aider) })
	ts := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.down.Load() {
			rw.WriteHeader(http.StatusServiceUnavailable)
			_, _ = rw.Write([]byte(`{"error":"maintenance"}`))
			return
		}
		mux.ServeHTTP(rw, r)
	}))
	t.Cleanup(ts.Close)

	dir := t.TempDir()
	w.path = filepath.Join(dir, "data", "model_routing.json")
	if rankings != nil {
		if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(w.path, rankings, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rc := config.DefaultResearch()
	src := func(u string) config.ResearchSource {
		s := testSrc(u)
		s.Retries = 0
		return s
	}
	rc.Sources.OpenRouter = src(ts.URL + "/api/v1/models")
	rc.Sources.LMArena = src(ts.URL + "/rows")
	rc.Sources.Aider = src(ts.URL + "/polyglot_leaderboard.yml")
	rc.Sources.NanoGPTModels = src("")
	rc.Sources.NanoGPTSubscription = src("")
	w.cfg = rc
	be := Backends{NanoGPT: config.NanoGPT{APIKey: "test-key", BaseURL: ts.URL + "/api/v1", SubscriptionURL: ts.URL + "/api/subscription/v1"}}
	router, err := routing.New(routing.Config{RankingsPath: w.path, Default: data.DefaultRouting,
		Enabled: func(b string) bool { return b == "nanogpt" }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.router = router
	m, err := NewMatcher("", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.statePth = filepath.Join(dir, "research_state.json")
	w.svc = New(Options{Config: rc, RankingsPath: w.path, Default: data.DefaultRouting, Router: router,
		Sources: BuildSources(rc, be, testGetter()), Matcher: m, StatePath: w.statePth,
		Now: func() time.Time { return time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC) }})
	return w
}

// pinnedRankings is the shipped rankings with the architect role pinned as a whole
// and the testing primary pinned as an entry.
func pinnedRankings(t *testing.T) []byte {
	t.Helper()
	var rk routing.Rankings
	if err := json.Unmarshal(data.DefaultRouting, &rk); err != nil {
		t.Fatal(err)
	}
	a := rk.Roles["architect"]
	a.Pinned = true
	rk.Roles["architect"] = a
	tr := rk.Roles["testing"]
	tr.Primary.Pinned = true
	rk.Roles["testing"] = tr
	b, err := json.MarshalIndent(rk, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func entries(rr routing.RoleRanking) []string {
	var out []string
	for _, e := range append([]routing.Entry{rr.Primary}, rr.Fallbacks...) {
		out = append(out, e.Backend+"/"+e.Model)
	}
	return out
}

func TestRunAddsNewModelAndRouterServesIt(t *testing.T) {
	before := pinnedRankings(t)
	w := newWorld(t, before)
	old := w.router.Rankings()
	if _, ok := old.BackendOf(newModel); ok {
		t.Fatal("the new model is already known before the run")
	}

	rep, err := w.svc.Run(context.Background(), false, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != "updated" {
		t.Fatalf("outcome %q (error %q), want updated; sources %+v", rep.Outcome, rep.Error, rep.Sources)
	}
	if !slices.Contains(rep.NewModels, newModel) {
		t.Errorf("new models %v lack %s", rep.NewModels, newModel)
	}

	// The live router serves the new model at once, without a restart.
	cands, err := w.router.Select(routing.Request{Model: "auto:implementation", Role: roles.Implementation})
	if err != nil {
		t.Fatal(err)
	}
	if cands[0].Model != newModel {
		t.Errorf("implementation primary after reload = %s, want %s", cands[0].Model, newModel)
	}
	if got, err := w.router.Select(routing.Request{Model: newModel}); err != nil || got[0].Backend != "nanogpt" {
		t.Errorf("explicit %s: %v %v", newModel, got, err)
	}

	now := w.router.Rankings()
	// Ranked where it is best: coding roles, not documentation (no writing data).
	impl := now.Roles["implementation"]
	if !strings.Contains(impl.Primary.Reason, "coverage") || impl.Primary.Score == 0 {
		t.Errorf("primary not explained: %+v", impl.Primary)
	}
	if now.Roles["documentation"].Primary.Model == newModel {
		t.Error("the new model became documentation primary without writing data")
	}
	// Existing entries are kept: the old implementation list follows the new model.
	if got, want := entries(impl)[1:], entries(old.Roles["implementation"]); !slices.Equal(got, want) {
		t.Errorf("implementation after new model = %v, want old list %v kept", got, want)
	}
	// A pinned role is untouched; a pinned primary stays primary.
	if a, b := now.Roles["architect"], old.Roles["architect"]; !slices.Equal(entries(a), entries(b)) || a.Pinned != true {
		t.Errorf("pinned architect role changed: %v -> %v", entries(b), entries(a))
	}
	tr := now.Roles["testing"]
	if tr.Primary.Model != old.Roles["testing"].Primary.Model || !tr.Primary.Pinned {
		t.Errorf("pinned testing primary displaced by %s", tr.Primary.Model)
	}
	if got := entries(tr); len(got) < 2 || got[1] != "nanogpt/"+newModel {
		t.Errorf("testing (coding-heavy) did not gain the new model as first fallback: %v", got)
	}
	info := now.Models[newModel]
	if info.FirstSeen == "" || info.Backend != "nanogpt" || len(info.Sources) == 0 || info.Scores["implementation"] == 0 {
		t.Errorf("model info = %+v", info)
	}

	// The diff explains the change: old primary → new primary with scores.
	var implChange string
	for _, d := range rep.Diff {
		if strings.HasPrefix(d, "implementation:") {
			implChange = d
		}
	}
	if !strings.Contains(implChange, "nanogpt/qwen/qwen3-coder") || !strings.Contains(implChange, "→ nanogpt/"+newModel+" (") {
		t.Errorf("implementation diff = %q", implChange)
	}

	// Written atomically with the previous version kept, no temp file left behind.
	hist, err := os.ReadDir(filepath.Join(filepath.Dir(w.path), "history"))
	if err != nil || len(hist) != 1 {
		t.Fatalf("history = %v, %v; want one file", hist, err)
	}
	if b, _ := os.ReadFile(filepath.Join(filepath.Dir(w.path), "history", hist[0].Name())); !bytes.Equal(b, before) {
		t.Error("history file is not the previous rankings")
	}
	files, _ := os.ReadDir(filepath.Dir(w.path))
	for _, f := range files {
		if strings.Contains(f.Name(), ".tmp") {
			t.Errorf("temp file left behind: %s", f.Name())
		}
	}

	// State survives a restart.
	again := New(Options{StatePath: w.statePth})
	if st := again.Status(); st.LastRun == nil || st.LastRun.Outcome != "updated" || st.LastRun.ID != rep.ID {
		t.Errorf("state after restart = %+v", st.LastRun)
	}

	// A second normal run finds nothing new and writes nothing.
	written, _ := os.ReadFile(w.path)
	rep2, err := w.svc.Run(context.Background(), false, false, "test")
	if err != nil || rep2.Outcome != "unchanged" {
		t.Fatalf("second run: %v %+v", err, rep2)
	}
	if b, _ := os.ReadFile(w.path); !bytes.Equal(b, written) {
		t.Error("an unchanged run rewrote the file")
	}
}

func TestRunWithEmbeddedDefaultCreatesFile(t *testing.T) {
	w := newWorld(t, nil)
	rep, err := w.svc.Run(context.Background(), false, false, "test")
	if err != nil || rep.Outcome != "updated" {
		t.Fatalf("%v %+v", err, rep)
	}
	if w.router.Source() != w.path {
		t.Errorf("router reads %q after the run, want the new file %q", w.router.Source(), w.path)
	}
}

func TestForceRefreshReranksButKeepsPins(t *testing.T) {
	w := newWorld(t, pinnedRankings(t))
	old := w.router.Rankings()
	rep, err := w.svc.Run(context.Background(), true, false, "test")
	if err != nil || rep.Outcome != "updated" {
		t.Fatalf("%v %+v", err, rep)
	}
	now := w.router.Rankings()
	if !slices.Equal(entries(now.Roles["architect"]), entries(old.Roles["architect"])) {
		t.Error("force-refresh changed a pinned role")
	}
	if now.Roles["testing"].Primary.Model != old.Roles["testing"].Primary.Model {
		t.Error("force-refresh displaced a pinned primary")
	}
	// Every unpinned entry is now scored by this run; the vertex fallback (Vertex not
	// configured, so not eligible) is gone.
	for _, e := range now.Roles["implementation"].Fallbacks {
		if e.Backend == "vertex" || e.Score == 0 {
			t.Errorf("implementation fallback %+v not re-evaluated", e)
		}
	}
	if n := len(now.Roles["implementation"].Fallbacks); n != w.cfg.MaxFallbacks {
		t.Errorf("%d fallbacks, want %d", n, w.cfg.MaxFallbacks)
	}
}

func TestFailedRunsLeaveRankingsUntouched(t *testing.T) {
	before := pinnedRankings(t)
	w := newWorld(t, before)
	w.down.Store(true)
	old := w.router.Rankings()
	rep, err := w.svc.Run(context.Background(), true, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Outcome != "failed" || !strings.Contains(rep.Error, "every source failed") {
		t.Errorf("outcome %q error %q", rep.Outcome, rep.Error)
	}
	for _, s := range rep.Sources {
		if s.State != "failed" || !strings.Contains(s.Error, "HTTP 503") {
			t.Errorf("source %s: %s %q", s.Name, s.State, s.Error)
		}
	}
	if b, _ := os.ReadFile(w.path); !bytes.Equal(b, before) {
		t.Error("rankings file changed after a run where every source failed")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(w.path), "history")); !os.IsNotExist(err) {
		t.Error("history written by a failed run")
	}
	if w.router.Rankings() != old {
		t.Error("router reloaded after a failed run")
	}
	if sum := w.svc.Summary().(map[string]any); sum["degraded"] != true {
		t.Errorf("/status research section does not say degraded: %v", sum)
	}
	if st := New(Options{StatePath: w.statePth}).Status(); st.LastRun == nil || st.LastRun.Outcome != "failed" {
		t.Errorf("failed run not recorded in state: %+v", st.LastRun)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	before := pinnedRankings(t)
	w := newWorld(t, before)
	rep, err := w.svc.Run(context.Background(), false, true, "cli")
	if err != nil || rep.Outcome != "dry_run" || len(rep.Diff) == 0 || rep.Next == nil {
		t.Fatalf("%v %+v", err, rep)
	}
	if b, _ := os.ReadFile(w.path); !bytes.Equal(b, before) {
		t.Error("dry run wrote the rankings")
	}
	if _, err := os.Stat(w.statePth); !os.IsNotExist(err) {
		t.Error("dry run wrote the state")
	}
}

// TestRunBuildsOnTheFileNotTheRoutersCopy: a pin a person added to the file after the
// router loaded it survives the run.
func TestRunBuildsOnTheFileNotTheRoutersCopy(t *testing.T) {
	w := newWorld(t, data.DefaultRouting)
	if err := os.WriteFile(w.path, pinnedRankings(t), 0o644); err != nil { // router not reloaded
		t.Fatal(err)
	}
	if _, err := w.svc.Run(context.Background(), true, false, "test"); err != nil {
		t.Fatal(err)
	}
	if rk := w.router.Rankings(); !rk.Roles["architect"].Pinned || !rk.Roles["testing"].Primary.Pinned {
		t.Error("the run overwrote pins made in the file since the router's last reload")
	}
}

// A new primary that the subscription does not cover is ranked first, but the personal
// profile (subscription first) keeps serving a covered model: the run says so per profile.
func TestRunReportsWhatEachProfileServes(t *testing.T) {
	w := newWorld(t, pinnedRankings(t))
	w.unsubscribed.Store(true)
	rep, err := w.svc.Run(context.Background(), false, false, "test")
	if err != nil || rep.Outcome != "updated" {
		t.Fatalf("run: %v %+v", err, rep)
	}
	var impl *RoleChange
	for i := range rep.Changes {
		if rep.Changes[i].Role == "implementation" {
			impl = &rep.Changes[i]
		}
	}
	if impl == nil || impl.NewPrimary == nil || impl.NewPrimary.Model != newModel {
		t.Fatalf("implementation change %+v, want %s as the new primary", impl, newModel)
	}
	personal, work := impl.ServedFirst["personal"], impl.ServedFirst["work"]
	if personal == "" || strings.HasSuffix(personal, newModel) {
		t.Errorf("personal serves %q first; want a subscription model ahead of the unsubscribed %s", personal, newModel)
	}
	if work != "nanogpt/"+newModel {
		t.Errorf("work serves %q first; want nanogpt/%s (vertex is off)", work, newModel)
	}
	cands, err := w.router.Select(routing.Request{Model: "auto:implementation", Role: roles.Implementation, Profile: "personal"})
	if err != nil || cands[0].Backend+"/"+cands[0].Model != personal {
		t.Errorf("personal actually tries %v first (err %v); the report said %s", cands, err, personal)
	}
}
