package handlers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/research"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// gatedSource returns its result once the test opens the gate.
type gatedSource struct {
	name    string
	started chan struct{}
	gate    chan struct{}
	res     *research.Result
	once    sync.Once
}

func (s *gatedSource) Name() string { return s.name }
func (s *gatedSource) Fetch(ctx context.Context) (*research.Result, error) {
	s.once.Do(func() { close(s.started) })
	select {
	case <-s.gate:
		return s.res, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type staticSource struct {
	name string
	res  *research.Result
}

func (s staticSource) Name() string                                    { return s.name }
func (s staticSource) Fetch(context.Context) (*research.Result, error) { return s.res, nil }

func adminDo(t *testing.T, h http.Handler, method, path, token string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, path, b, err)
	}
	return rec.Code, m
}

func TestResearchAdminAPI(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model_routing.json")
	router, err := routing.New(routing.Config{RankingsPath: path, Default: data.DefaultRouting}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bench := &gatedSource{name: "bench", started: make(chan struct{}), gate: make(chan struct{}), res: &research.Result{Observations: []research.Observation{
		{Name: "acme/coder-x", Metrics: map[string]float64{research.MetricAiderPolyglot: 93, research.MetricAACoding: 90, research.MetricAAAgentic: 70}},
		{Name: "qwen3-coder-480b-a35b-instruct", Metrics: map[string]float64{research.MetricAiderPolyglot: 60, research.MetricAACoding: 50, research.MetricAAAgentic: 40}},
	}}}
	backend := staticSource{name: "nanogpt", res: &research.Result{Offers: []research.Offer{
		{Backend: "nanogpt", Model: "acme/coder-x", PricePerMTok: 2, Subscription: true},
		{Backend: "nanogpt", Model: "qwen/qwen3-coder", Subscription: true},
	}}}
	m, _ := research.NewMatcher("", nil)
	svc := research.New(research.Options{Config: config.DefaultResearch(), RankingsPath: path, Default: data.DefaultRouting,
		Router: router, Sources: []research.Source{bench, backend}, Matcher: m, StatePath: filepath.Join(dir, "state.json")})
	srv := New(Config{AdminToken: "secret"}, Deps{Admin: []func(chi.Router){ResearchAdmin(svc, nil)}})

	if code, body := adminDo(t, srv, "POST", "/admin/research/trigger", ""); code != 401 || body["error"] == nil {
		t.Errorf("without token: %d %v, want 401 error envelope", code, body)
	}
	code, body := adminDo(t, srv, "POST", "/admin/research/trigger", "secret")
	id, _ := body["run_id"].(string)
	if code != 202 || !strings.HasPrefix(id, "run_") {
		t.Fatalf("trigger: %d %v, want 202 with run_id", code, body)
	}
	<-bench.started
	for _, p := range []string{"/admin/research/trigger", "/admin/research/force-refresh"} {
		code, body := adminDo(t, srv, "POST", p, "secret")
		e, _ := body["error"].(map[string]any)
		if code != 409 || e["code"] != "research_running" {
			t.Errorf("%s while running: %d %v, want 409 research_running", p, code, body)
		}
	}
	_, st := adminDo(t, srv, "GET", "/admin/research/status", "secret")
	cur, _ := st["current"].(map[string]any)
	if st["state"] != "running" || cur["run_id"] != id {
		t.Fatalf("status while running = %v", st)
	}
	progress := map[string]string{}
	for _, s := range cur["sources"].([]any) {
		s := s.(map[string]any)
		progress[s["name"].(string)] = s["state"].(string)
	}
	if progress["bench"] != "running" {
		t.Errorf("progress per source = %v, want bench running", progress)
	}

	close(bench.gate)
	svc.Wait()
	_, st = adminDo(t, srv, "GET", "/admin/research/status", "secret")
	last, _ := st["last_run"].(map[string]any)
	if st["state"] != "idle" || last["run_id"] != id || last["outcome"] != "updated" {
		t.Fatalf("status after run = %v", st)
	}
	diff := strings.Join(toStrings(last["diff"]), "\n")
	if !strings.Contains(diff, "implementation: nanogpt/qwen/qwen3-coder (") || !strings.Contains(diff, "→ nanogpt/acme/coder-x (") {
		t.Errorf("diff = %s, want implementation: qwen3-coder (score) → coder-x (score)", diff)
	}
	if nm := toStrings(last["new_models"]); len(nm) != 1 || nm[0] != "acme/coder-x" {
		t.Errorf("new models = %v", nm)
	}
	// The live router uses it at once.
	cands, err := router.Select(routing.Request{Model: "auto", Role: roles.Implementation})
	if err != nil || cands[0].Model != "acme/coder-x" {
		t.Errorf("router after trigger: %v %v", cands, err)
	}

	// force-refresh is accepted once idle.
	if code, body := adminDo(t, srv, "POST", "/admin/research/force-refresh", "secret"); code != 202 || body["force"] != true {
		t.Errorf("force-refresh: %d %v", code, body)
	}
	svc.Wait()
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}
