package research

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testSrc(url string) config.ResearchSource {
	return config.ResearchSource{Enabled: true, URL: url, Timeout: 5 * time.Second, MaxBytes: 1 << 20, Retries: 1, Backoff: time.Millisecond}
}

func testGetter() *HTTPGetter {
	return &HTTPGetter{UserAgent: "nanogpt-proxy-research-test", Sleep: func(context.Context, time.Duration) error { return nil }}
}

// serve answers every request with body (status 200).
func serve(t testing.TB, body []byte) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(body) }))
	t.Cleanup(ts.Close)
	return ts
}

func byName(obs []Observation) map[string]Observation {
	m := map[string]Observation{}
	for _, o := range obs {
		m[o.Name] = o
	}
	return m
}

func lmarenaServer(t *testing.T, requests *[]string, mu *sync.Mutex) *httptest.Server {
	t.Helper()
	pages := map[string][]byte{
		"0":   fixture(t, "benchmarks/lmarena_hf_rows.offset0.constructed.json"),
		"100": fixture(t, "benchmarks/lmarena_hf_rows.offset100.constructed.json"),
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		*requests = append(*requests, r.URL.RawQuery)
		mu.Unlock()
		if n, _ := strconv.Atoi(r.URL.Query().Get("length")); n > 100 {
			w.WriteHeader(422)
			_, _ = w.Write([]byte(`{"error":"Parameter 'length' must not be greater than 100"}`))
			return
		}
		b, ok := pages[r.URL.Query().Get("offset")]
		if !ok {
			w.WriteHeader(404)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func TestSourcesParseFixtures(t *testing.T) {
	g := testGetter()
	ctx := context.Background()

	t.Run("openrouter", func(t *testing.T) {
		ts := serve(t, fixture(t, "benchmarks/openrouter_models.excerpt.json"))
		res, err := (&OpenRouter{Cfg: testSrc(ts.URL), Get: g}).Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := byName(res.Observations)
		if _, ok := m["openrouter/auto-beta"]; ok {
			t.Error("the openrouter/auto-beta router was taken for a model")
		}
		if _, ok := m["~anthropic/claude-opus-latest"]; ok {
			t.Error("the alias ~anthropic/claude-opus-latest was kept next to its target")
		}
		got := m["google/gemini-3.7-flash"].Metrics
		want := map[string]float64{MetricAAIntelligence: 56, MetricAACoding: 76.1, MetricAAAgentic: 45.1, MetricPrice: blended(0.375, 1.875)}
		if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 })); diff != "" {
			t.Errorf("gemini-3.7-flash metrics (-want +got):\n%s", diff)
		}
		if free := m["z-ai/glm-5.2:free"]; !free.Free {
			t.Error("z-ai/glm-5.2:free is not marked free")
		}
		if _, ok := m["deepseek/deepseek-v3.2"].Metrics[MetricAAIntelligence]; ok {
			t.Error("a null intelligence index became a number")
		}
	})

	t.Run("lmarena pagination", func(t *testing.T) {
		var reqs []string
		var mu sync.Mutex
		ts := lmarenaServer(t, &reqs, &mu)
		res, err := (&LMArena{Cfg: testSrc(ts.URL), Dataset: "lmarena-ai/leaderboard-dataset", Config: "text", Split: "latest", Get: g}).Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) != 2 || !strings.Contains(reqs[0], "offset=0") || !strings.Contains(reqs[1], "offset=100") ||
			!strings.Contains(reqs[0], "dataset=lmarena-ai%2Fleaderboard-dataset") {
			t.Fatalf("requests = %q, want offset 0 then 100 of the dataset", reqs)
		}
		m := byName(res.Observations)
		g5 := m["gpt-5-high"].Metrics
		// creative_writing only exists on the second page.
		for _, k := range []string{MetricArenaOverall, MetricArenaCoding, MetricArenaMath, MetricArenaHardPrompts, MetricArenaInstructions, MetricArenaCreative} {
			if _, ok := g5[k]; !ok {
				t.Errorf("gpt-5-high lacks %s (got %v)", k, g5)
			}
		}
		if len(res.Observations) != 22 {
			t.Errorf("%d models, want 22", len(res.Observations))
		}
	})

	t.Run("aider", func(t *testing.T) {
		ts := serve(t, fixture(t, "benchmarks/aider_polyglot_leaderboard.excerpt.yml"))
		res, err := (&Aider{Cfg: testSrc(ts.URL), Get: g}).Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := byName(res.Observations)
		if got := m["gpt-5 (high)"].Metrics[MetricAiderPolyglot]; got != 88.0 {
			t.Errorf("gpt-5 (high) polyglot = %v, want 88", got)
		}
		if _, ok := m["Quasar Alpha"].Metrics[MetricAiderCost]; ok {
			t.Error("total_cost 0 (unknown) became a cost")
		}
		if _, ok := m["o3 (high) + gpt-4.1"]; ok {
			t.Error("an architect+editor pair was scored as one model")
		}
		if diff := cmp.Diff([]string{"deepseek/deepseek-chat"}, m["DeepSeek Chat V3 (prev)"].AltNames); diff != "" {
			t.Errorf("alt names: %s", diff)
		}
	})

	t.Run("html table", func(t *testing.T) {
		ts := serve(t, fixture(t, "benchmarks/aider_polyglot_leaderboard.constructed.html"))
		src := &HTMLTable{Cfg: config.HTMLTable{Name: "polyglot", ResearchSource: testSrc(ts.URL), Selector: "table#polyglot",
			ModelColumn: "Model", Columns: map[string]string{"Percent correct": MetricAiderPolyglot, "Cost": MetricAiderCost}}, Get: g}
		res, err := src.Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m := byName(res.Observations)
		want := map[string]float64{MetricAiderPolyglot: 51.6, MetricAiderCost: 14.41}
		if diff := cmp.Diff(want, m["claude-3-5-sonnet-20241022"].Metrics); diff != "" {
			t.Errorf("claude-3-5-sonnet row (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(map[string]float64{MetricAiderPolyglot: 21.8}, m["qwen-max-2025-01-25"].Metrics); diff != "" {
			t.Errorf(`"?" cost must be missing, not 0 (-want +got):\n%s`, diff)
		}
		if len(res.Observations) != 14 {
			t.Errorf("%d rows, want 14", len(res.Observations))
		}
	})

	t.Run("nanogpt", func(t *testing.T) {
		var auth []string
		var mu sync.Mutex
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			auth = append(auth, r.Header.Get("Authorization"))
			mu.Unlock()
			if strings.Contains(r.URL.Path, "subscription") {
				_, _ = w.Write(fixture(t, "nanogpt/subscription-models.json"))
				return
			}
			if r.URL.Query().Get("detailed") != "true" {
				t.Errorf("models requested without detailed=true: %s", r.URL)
			}
			_, _ = w.Write(fixture(t, "nanogpt/models-detailed.json"))
		}))
		defer ts.Close()
		res, err := (&NanoGPT{Models: testSrc(ts.URL + "/api/v1/models?detailed=true"), Subscription: testSrc(ts.URL + "/api/subscription/v1/models"), APIKey: "k", Get: g}).Fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Offers) != 7 {
			t.Fatalf("%d offers, want 7", len(res.Offers))
		}
		subs := map[string]bool{}
		for _, o := range res.Offers {
			subs[o.Model] = o.Subscription
		}
		if !subs["zai-org/glm-4.6"] || subs["openai/gpt-5"] {
			t.Errorf("subscription flags wrong: %v", subs)
		}
		for _, a := range auth {
			if a != "Bearer k" {
				t.Errorf("Authorization = %q", a)
			}
		}
	})
}

func TestSourceErrors(t *testing.T) {
	good := fixture(t, "benchmarks/openrouter_models.excerpt.json")
	cases := []struct {
		name    string
		status  int
		body    []byte
		max     int64
		wantErr string
	}{
		{"malformed", 200, []byte(`{"data": [ {"id": }`), 0, "malformed JSON"},
		{"truncated", 200, good[:bytes.Index(good, []byte(`"pricing"`))+12], 0, "truncated JSON"},
		{"empty", 200, nil, 0, "empty response"},
		{"oversized", 200, good, 1024, "exceeds the size limit"},
		{"not the API", 200, []byte(`{"models": []}`), 0, `no "data" list`},
		{"server error", 503, []byte(`upstream down`), 0, "HTTP 503"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hits := 0
			var mu sync.Mutex
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				hits++
				mu.Unlock()
				w.WriteHeader(tc.status)
				_, _ = w.Write(tc.body)
			}))
			defer ts.Close()
			cfg := testSrc(ts.URL)
			if tc.max > 0 {
				cfg.MaxBytes = tc.max
			}
			_, err := (&OpenRouter{Cfg: cfg, Get: testGetter()}).Fetch(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "research: openrouter:") {
				t.Fatalf("err = %v, want research: openrouter: … %s", err, tc.wantErr)
			}
			if tc.status == 503 && hits != 2 {
				t.Errorf("%d attempts on 503, want 2 (1 retry)", hits)
			}
		})
	}

	// Every source names itself and the problem on a broken body.
	g := testGetter()
	for _, body := range [][]byte{nil, []byte("{\"rows\": [ {"), []byte("<<<not: [yaml")} {
		ts := serve(t, body)
		srcs := []Source{
			&LMArena{Cfg: testSrc(ts.URL), Get: g},
			&Aider{Cfg: testSrc(ts.URL), Get: g},
			&NanoGPT{Models: testSrc(ts.URL), Get: g},
			&HTMLTable{Cfg: config.HTMLTable{Name: "t", ResearchSource: testSrc(ts.URL), Selector: "table", ModelColumn: "Model"}, Get: g},
		}
		for _, s := range srcs {
			_, err := s.Fetch(context.Background())
			if err == nil || !strings.HasPrefix(err.Error(), "research: "+s.Name()+":") {
				t.Errorf("%s on %q: err = %v, want a research: %s: error", s.Name(), body, err, s.Name())
			}
		}
	}
}

func TestHTTPGetterSendsUserAgent(t *testing.T) {
	var ua string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua = r.UserAgent()
		_, _ = w.Write([]byte("x"))
	}))
	defer ts.Close()
	if _, err := testGetter().Get(context.Background(), "x", ts.URL, testSrc(ts.URL), nil); err != nil {
		t.Fatal(err)
	}
	if ua != "nanogpt-proxy-research-test" {
		t.Errorf("User-Agent = %q", ua)
	}
}

func TestSourceTimeout(t *testing.T) {
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer ts.Close()
	defer close(release)
	cfg := testSrc(ts.URL)
	cfg.Timeout, cfg.Retries = 20*time.Millisecond, 0
	_, err := (&Aider{Cfg: cfg, Get: testGetter()}).Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "research: aider:") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("err = %v, want a research: aider: timeout error", err)
	}
}
