package handlers

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// foUpstream is an OpenAI-compatible upstream whose behaviour is chosen by the requested
// model's name: "ok…" answers, "e503…"/"e402…"/"e429…" answer with NanoGPT's error
// bodies, "e404…" model not found, "e400…" a bad request, "reset…" drops the connection,
// "hang…" never answers, "cut…" streams a role chunk and breaks off, "cutafter…" breaks
// off after the first content, "flaky…" fails its first call only.
type foUpstream struct {
	t     *testing.T
	srv   *httptest.Server
	mu    sync.Mutex
	calls map[string]int
	// onCall, when set, runs on every upstream call (tests move their clock with it).
	onCall func()
}

func newFOUpstream(t *testing.T) *foUpstream {
	u := &foUpstream{t: t, calls: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func foFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/nanogpt/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (u *foUpstream) count(model string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[model]
}

func (u *foUpstream) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &req); err != nil {
		http.Error(w, "bad json", 400)
		return
	}
	u.mu.Lock()
	u.calls[req.Model]++
	n := u.calls[req.Model]
	u.mu.Unlock()
	if u.onCall != nil {
		u.onCall()
	}
	m := req.Model
	fail := func(status int, fixture string) {
		w.Header().Set("Content-Type", "application/json")
		if status == 429 {
			w.Header().Set("Retry-After", "60")
		}
		w.WriteHeader(status)
		w.Write(foFixture(u.t, fixture))
	}
	chunk := func(delta string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"` + m + `","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}` + "\n\n"
	}
	switch {
	case strings.HasPrefix(m, "e503"), strings.HasPrefix(m, "flaky") && n == 1:
		fail(503, "error-503-unavailable.json")
	case strings.HasPrefix(m, "e402"):
		fail(402, "error-402-insufficient-balance.json")
	case strings.HasPrefix(m, "e429"):
		fail(429, "error-429-daily-limit.json")
	case strings.HasPrefix(m, "e404"):
		w.WriteHeader(404)
		io.WriteString(w, `{"error":{"message":"Model `+m+` not found","type":"invalid_request_error","code":"model_not_found","param":null}}`)
	case strings.HasPrefix(m, "e401"):
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(401)
		io.WriteString(w, `{"error":{"message":"Invalid API key","type":"authentication_error","code":"invalid_api_key","param":null}}`)
	case strings.HasPrefix(m, "e400"):
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded","param":"messages"}}`)
	case strings.HasPrefix(m, "reset"):
		panic(http.ErrAbortHandler)
	case strings.HasPrefix(m, "hang"):
		<-r.Context().Done()
	case strings.HasPrefix(m, "cutafter"):
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk(`{"role":"assistant","content":""}`)+chunk(`{"content":"Partial"}`))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case strings.HasPrefix(m, "cut"):
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk(`{"role":"assistant","content":""}`))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case req.Stream:
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunk(`{"role":"assistant","content":""}`)+chunk(`{"content":"Answer from `+m+`"}`)+
			`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"`+m+`","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`+"\n\ndata: [DONE]\n\n")
	default:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"`+m+`","choices":[{"index":0,"message":{"role":"assistant","content":"Answer from `+m+`"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`)
	}
}

// foBackend gives a backend another name (the upstream is the same test server).
type foBackend struct {
	backends.Backend
	name string
}

func (b foBackend) Name() string { return b.name }

type foUsage struct {
	mu   sync.Mutex
	rows []storage.Usage
}

func (u *foUsage) Record(row storage.Usage) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rows = append(u.rows, row)
	return true
}

// last returns the newest row, waiting for it: a JSON answer reaches the client before
// the handler records its usage row.
func (u *foUsage) last() storage.Usage {
	deadline := time.Now().Add(5 * time.Second)
	for {
		u.mu.Lock()
		if n := len(u.rows); n > 0 {
			defer u.mu.Unlock()
			return u.rows[n-1]
		}
		u.mu.Unlock()
		if time.Now().After(deadline) {
			return storage.Usage{}
		}
		time.Sleep(time.Millisecond)
	}
}

// foRankings ranks chain (backend/model or model on nanogpt) for every role; models
// named sub… are on the subscription.
func foRankings(t *testing.T, chain ...string) []byte {
	t.Helper()
	entry := func(s string) routing.Entry {
		if b, m, ok := strings.Cut(s, "/"); ok {
			return routing.Entry{Backend: b, Model: m}
		}
		return routing.Entry{Backend: "nanogpt", Model: s}
	}
	rr := routing.RoleRanking{Primary: entry(chain[0])}
	for _, c := range chain[1:] {
		rr.Fallbacks = append(rr.Fallbacks, entry(c))
	}
	rk := routing.Rankings{Version: 1, Roles: map[string]routing.RoleRanking{}, Models: map[string]routing.ModelInfo{}}
	for _, r := range roles.All {
		rk.Roles[string(r)] = rr
	}
	for _, c := range chain {
		if e := entry(c); strings.HasPrefix(e.Model, "sub") {
			rk.Models[e.Model] = routing.ModelInfo{Backend: e.Backend, Subscription: true}
		}
	}
	b, err := json.Marshal(rk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type foEnv struct {
	up     *foUpstream
	router *routing.Router
	usage  *foUsage
	proxy  *httptest.Server
}

type foOptions struct {
	maxAttempts int
	maxTime     time.Duration
	now         func() time.Time
	quota       *routing.Quota
	noVertex    bool
}

func newFOEnv(t *testing.T, opt foOptions, chain ...string) *foEnv {
	t.Helper()
	up := newFOUpstream(t)
	nano := backends.NewNanoGPT(backends.NanoGPTConfig{APIKey: "sk-test", BaseURL: up.srv.URL + "/api/v1",
		FirstByteTimeout: 300 * time.Millisecond}, up.srv.Client())
	bes := map[string]backends.Backend{"nanogpt": nano}
	if !opt.noVertex {
		bes["vertex"] = foBackend{nano, "vertex"}
	}
	router, err := routing.New(routing.Config{Default: foRankings(t, chain...), Enabled: func(b string) bool { return bes[b] != nil },
		Quota: opt.quota}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if opt.maxAttempts == 0 {
		opt.maxAttempts = 4
	}
	usage := &foUsage{}
	status := map[string]func() any{"routing": router.StatusSection}
	if opt.quota != nil {
		status["quota"] = func() any { return opt.quota.Status() }
	}
	if opt.maxTime == 0 {
		opt.maxTime = time.Minute
	}
	srv := New(Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal", MaxAttempts: opt.maxAttempts, MaxFailoverTime: opt.maxTime},
		Deps{Prompt: defaultPrompt(t), Router: router, Context: contextmgr.New(config.Default().Context, nil, nil), Backends: bes, Usage: usage, Status: status, Now: opt.now})
	proxy := httptest.NewServer(srv)
	t.Cleanup(proxy.Close)
	return &foEnv{up: up, router: router, usage: usage, proxy: proxy}
}

type foResult struct {
	status int
	header http.Header
	body   string
}

func (e *foEnv) chat(t *testing.T, stream bool, conv string) foResult {
	t.Helper()
	body := fmt.Sprintf(`{"model":"auto","messages":[{"role":"user","content":"Why does my test deadlock?"}],"stream":%v}`, stream)
	req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if conv != "" {
		req.Header.Set("X-Conversation-ID", conv)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return foResult{resp.StatusCode, resp.Header, string(b)}
}

func TestFailover(t *testing.T) {
	tests := []struct {
		name       string
		chain      []string
		stream     bool
		status     int
		model      string // X-Proxy-Model
		attempts   string
		calls      map[string]int
		body       []string // substrings of the client's body
		notBody    []string
		retryAfter string
	}{
		{"503 falls over", []string{"e503", "ok-b"}, false, 200, "ok-b", "2", map[string]int{"e503": 1, "ok-b": 1}, []string{"Answer from ok-b"}, nil, ""},
		{"402 falls over", []string{"e402", "ok-b"}, false, 200, "ok-b", "2", map[string]int{"e402": 1, "ok-b": 1}, []string{"Answer from ok-b"}, nil, ""},
		{"429 falls over", []string{"e429", "vertex/ok-v"}, false, 200, "ok-v", "2", map[string]int{"e429": 1, "ok-v": 1}, []string{"Answer from ok-v"}, nil, ""},
		{"401 (that backend's key) falls over", []string{"e401", "vertex/ok-v"}, false, 200, "ok-v", "2", map[string]int{"e401": 1, "ok-v": 1}, []string{"Answer from ok-v"}, nil, ""},
		{"404 model not found falls over", []string{"e404", "ok-b"}, false, 200, "ok-b", "2", map[string]int{"e404": 1, "ok-b": 1}, nil, nil, ""},
		{"connection dropped falls over", []string{"reset", "ok-b"}, false, 200, "ok-b", "2", map[string]int{"reset": 1, "ok-b": 1}, nil, nil, ""},
		{"timeout falls over", []string{"hang", "ok-b"}, true, 200, "ok-b", "2", map[string]int{"hang": 1, "ok-b": 1}, []string{"Answer from ok-b", "[DONE]"}, nil, ""},
		{"400 is the client's and is not retried", []string{"e400", "ok-b"}, false, 400, "", "1", map[string]int{"e400": 1, "ok-b": 0},
			[]string{"maximum context length is 8192 tokens", `"code":"context_length_exceeded"`}, nil, ""},
		{"stream cut before first content falls over", []string{"cut", "ok-b"}, true, 200, "ok-b", "2", map[string]int{"cut": 1, "ok-b": 1},
			[]string{"Answer from ok-b", "data: [DONE]"}, []string{`"model":"cut"`}, ""},
		{"stream cut after first content is not retried", []string{"cutafter", "ok-b"}, true, 200, "cutafter", "1", map[string]int{"cutafter": 1, "ok-b": 0},
			[]string{`"content":"Partial"`, `data: {"error":{`, "stream_interrupted"}, []string{"[DONE]", "ok-b"}, ""},
		{"all fail: the last upstream's error", []string{"e503", "e402"}, false, 402, "", "2", map[string]int{"e503": 1, "e402": 1},
			[]string{"Insufficient balance"}, nil, ""},
		{"all fail with 429 last: Retry-After kept", []string{"e503", "e429"}, false, 429, "", "2", map[string]int{"e503": 1, "e429": 1},
			[]string{"Daily request limit exceeded"}, nil, "60"},
		{"attempts are bounded", []string{"e503-a", "e503-b", "ok-c"}, false, 503, "", "2", map[string]int{"e503-a": 1, "e503-b": 1, "ok-c": 0}, nil, nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opt := foOptions{}
			if tc.name == "attempts are bounded" {
				opt.maxAttempts = 2
			}
			e := newFOEnv(t, opt, tc.chain...)
			res := e.chat(t, tc.stream, "")
			if res.status != tc.status {
				t.Fatalf("status = %d; want %d; body %s", res.status, tc.status, res.body)
			}
			if got := res.header.Get("X-Proxy-Model"); got != tc.model {
				t.Errorf("X-Proxy-Model = %q; want %q", got, tc.model)
			}
			if got := res.header.Get("X-Proxy-Attempts"); got != tc.attempts {
				t.Errorf("X-Proxy-Attempts = %q; want %q", got, tc.attempts)
			}
			if got := res.header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q; want %q", got, tc.retryAfter)
			}
			got := map[string]int{}
			for m := range tc.calls {
				got[m] = e.up.count(m)
			}
			if d := cmp.Diff(tc.calls, got); d != "" {
				t.Errorf("upstream calls (-want +got):\n%s", d)
			}
			for _, s := range tc.body {
				if !strings.Contains(res.body, s) {
					t.Errorf("body lacks %q:\n%s", s, res.body)
				}
			}
			for _, s := range tc.notBody {
				if strings.Contains(res.body, s) {
					t.Errorf("body has %q:\n%s", s, res.body)
				}
			}
			if row := e.usage.last(); row.Attempts != sum(got) {
				t.Errorf("usage row attempts = %d; want %d (one per upstream call)", row.Attempts, sum(got))
			}
		})
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestFailoverTimeBound: no new attempt starts once max_failover_time has passed since the
// request arrived. Each upstream call moves the injected clock by a minute.
func TestFailoverTimeBound(t *testing.T) {
	var ns atomic.Int64
	ns.Store(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC).UnixNano())
	now := func() time.Time { return time.Unix(0, ns.Load()) }
	e := newFOEnv(t, foOptions{maxTime: 90 * time.Second, now: now}, "e503-a", "e503-b", "ok-c")
	e.up.onCall = func() { ns.Add(int64(time.Minute)) }
	res := e.chat(t, false, "")
	if res.status != 503 || res.header.Get("X-Proxy-Attempts") != "2" {
		t.Fatalf("status %d attempts %q; want the last upstream's 503", res.status, res.header.Get("X-Proxy-Attempts"))
	}
	calls := []int{e.up.count("e503-a"), e.up.count("e503-b"), e.up.count("ok-c")}
	if d := cmp.Diff([]int{1, 1, 0}, calls); d != "" {
		t.Errorf("upstream calls (-want +got):\n%s", d)
	}
	if row := e.usage.last(); row.Attempts != 2 {
		t.Errorf("usage attempts = %d; want 2", row.Attempts)
	}
}

// TestOutageBurst: during an outage of the primary, a burst of requests is served by the
// fallback with no client-visible error, and the primary is then benched (/status shows it).
func TestOutageBurst(t *testing.T) {
	e := newFOEnv(t, foOptions{}, "e503", "vertex/ok-v")
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Distinct conversations: stickiness must not hide the failing primary.
			res := e.chat(t, i%2 == 0, fmt.Sprintf("burst-%d", i))
			if res.status != 200 || res.header.Get("X-Proxy-Model") != "ok-v" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of 20 requests saw an error during the outage", bad.Load())
	}
	before := e.up.count("e503")
	res := e.chat(t, false, "after-burst")
	if res.header.Get("X-Proxy-Attempts") != "1" || e.up.count("e503") != before {
		t.Errorf("after the burst the failing primary was still tried (attempts %s)", res.header.Get("X-Proxy-Attempts"))
	}
	resp, err := http.Get(e.proxy.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Routing struct {
			Circuits []routing.CircuitStatus `json:"circuits"`
		} `json:"routing"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	found := false
	for _, c := range st.Routing.Circuits {
		if c.Model == "e503" && c.State == "open" && c.OpenUntil != "" && strings.Contains(c.LastError, "temporarily unavailable") {
			found = true
		}
	}
	if !found {
		t.Errorf("/status does not show the open circuit: %+v", st.Routing.Circuits)
	}
}

// TestQuotaSwitchAtThreshold: subscription model until the threshold, then the
// non-subscription fallback; with no fallback, a 429 clients must not retry.
func TestQuotaSwitchAtThreshold(t *testing.T) {
	q, err := routing.NewQuota(t.Context(), routing.QuotaConfig{Monthly: 10, Threshold: 0.8}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newFOEnv(t, foOptions{quota: q}, "sub-ok", "vertex/ok-v")
	var served []string
	for range 10 {
		served = append(served, e.chat(t, false, "").header.Get("X-Proxy-Model"))
	}
	want := []string{"sub-ok", "sub-ok", "sub-ok", "sub-ok", "sub-ok", "sub-ok", "sub-ok", "sub-ok", "ok-v", "ok-v"}
	if d := cmp.Diff(want, served); d != "" {
		t.Errorf("models served (-want +got):\n%s", d)
	}
	if st := q.Status(); st.Month.Used != 8 || st.State != "near_limit" {
		t.Errorf("quota: %+v", st)
	}

	q2, _ := routing.NewQuota(t.Context(), routing.QuotaConfig{Monthly: 2}, nil, nil)
	e2 := newFOEnv(t, foOptions{quota: q2, noVertex: true}, "sub-ok", "vertex/ok-v")
	for range 2 {
		if res := e2.chat(t, true, ""); res.status != 200 {
			t.Fatalf("within quota: %d %s", res.status, res.body)
		}
	}
	res := e2.chat(t, true, "")
	if res.status != 429 || res.header.Get("X-Should-Retry") != "false" || res.header.Get("Retry-After") == "" {
		t.Fatalf("exhausted: %d %v", res.status, res.header)
	}
	if !strings.Contains(res.body, "monthly quota is used up (2 of 2 requests") || !strings.Contains(res.body, "resets at") || !strings.Contains(res.body, `"code":"quota_exceeded"`) {
		t.Errorf("exhausted body: %s", res.body)
	}
	if e2.up.count("sub-ok") != 2 {
		t.Errorf("upstream called %d times; want 2 (the 429 is the proxy's)", e2.up.count("sub-ok"))
	}
}

// TestConversationSticks: a conversation whose first turn was served by the fallback
// stays there; another conversation gets the primary.
func TestConversationSticks(t *testing.T) {
	e := newFOEnv(t, foOptions{}, "flaky", "ok-b")
	if res := e.chat(t, true, "task-1"); res.header.Get("X-Proxy-Model") != "ok-b" {
		t.Fatalf("first turn served by %q", res.header.Get("X-Proxy-Model"))
	}
	res := e.chat(t, true, "task-1")
	if res.header.Get("X-Proxy-Model") != "ok-b" || res.header.Get("X-Proxy-Attempts") != "1" || e.up.count("flaky") != 1 {
		t.Errorf("second turn: model %q attempts %q; flaky called %d times", res.header.Get("X-Proxy-Model"), res.header.Get("X-Proxy-Attempts"), e.up.count("flaky"))
	}
	if res := e.chat(t, true, "task-2"); res.header.Get("X-Proxy-Model") != "flaky" {
		t.Errorf("another conversation served by %q; want the primary", res.header.Get("X-Proxy-Model"))
	}
}
