package handlers

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// recRouter is the real router, recording what the handler tells it about attempts.
type recRouter struct {
	*routing.Router
	mu       sync.Mutex
	observed []string // "model ok" or "model <status>"
	pinned   []string
}

func (r *recRouter) Observe(c routing.Candidate, err error, d time.Duration) {
	r.mu.Lock()
	if err == nil {
		r.observed = append(r.observed, c.Model+" ok")
	} else {
		r.observed = append(r.observed, c.Model+" "+itoa(backends.AsAPIError(c.Backend, err).Status))
	}
	r.mu.Unlock()
	r.Router.Observe(c, err, d)
}

func (r *recRouter) Pin(conv string, c routing.Candidate) {
	r.mu.Lock()
	r.pinned = append(r.pinned, c.Model)
	r.mu.Unlock()
	r.Router.Pin(conv, c)
}

func (r *recRouter) seen() (observed, pinned []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.observed...), append([]string(nil), r.pinned...)
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// Upstream bytes of the test upstream below.
const (
	inbandErr = `data: {"error":{"message":"provider overloaded","type":"server_error","code":503}}` + "\n\n"
	keepAlive = ": PROCESSING\n\n"
)

func sfChunk(model, delta string) string {
	return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"` + model + `","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}` + "\n\n"
}

// sfUpstream is an OpenAI-compatible upstream chosen by model name: "ok…" answers (no
// usage when it is "okNoUsage"); "inband…" answers 200 with only an error (a stream's
// in-band event, or a JSON error envelope; "inband400" a 400 one); "midfail" streams
// content, then an in-band error and [DONE] ("cutafter" breaks off instead); "slow…"
// sends a keep-alive comment and waits for release, then answers ("slow"), breaks off
// ("slowcut") or sends an in-band error ("slowerr").
type sfUpstream struct {
	srv     *httptest.Server
	release chan struct{}
	mu      sync.Mutex
	bodies  map[string][]byte
}

func newSFUpstream(t *testing.T) *sfUpstream {
	u := &sfUpstream{release: make(chan struct{}), bodies: map[string][]byte{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *sfUpstream) body(model string) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bodies[model]
}

func (u *sfUpstream) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	_ = json.Unmarshal(b, &req)
	m := req.Model
	u.mu.Lock()
	u.bodies[m] = b
	u.mu.Unlock()
	answer := func() {
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			usage := `,"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}`
			if m == "okNoUsage" {
				usage = ""
			}
			io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"`+m+`","choices":[{"index":0,"message":{"role":"assistant","content":"Answer from `+m+`"},"finish_reason":"stop"}]`+usage+`}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sfChunk(m, `{"role":"assistant","content":""}`)+sfChunk(m, `{"content":"Answer from `+m+`"}`))
		if m != "okNoUsage" {
			io.WriteString(w, `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"`+m+`","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8}}`+"\n\n")
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}
	inband := func(status int) {
		ev := strings.Replace(inbandErr, "503", itoa(status), 1)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, strings.TrimSpace(strings.TrimPrefix(ev, "data: ")))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ev+"data: [DONE]\n\n")
	}
	switch {
	case m == "inband400":
		inband(400)
	case strings.HasPrefix(m, "inband"):
		inband(503)
	case m == "cutafter":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sfChunk(m, `{"role":"assistant","content":""}`)+sfChunk(m, `{"content":"Partial"}`))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	case m == "midfail":
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sfChunk(m, `{"role":"assistant","content":""}`)+sfChunk(m, `{"content":"Partial"}`)+inbandErr+"data: [DONE]\n\n")
	case strings.HasPrefix(m, "slow"):
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, sfChunk(m, `{"role":"assistant","content":""}`)+keepAlive)
		w.(http.Flusher).Flush()
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
		switch m {
		case "slowcut":
			panic(http.ErrAbortHandler)
		case "slowerr":
			io.WriteString(w, inbandErr+"data: [DONE]\n\n")
		default:
			io.WriteString(w, sfChunk(m, `{"content":"Answer from `+m+`"}`)+"data: [DONE]\n\n")
		}
	default:
		answer()
	}
}

type sfEnv struct {
	up     *sfUpstream
	router *recRouter
	usage  *foUsage
	proxy  *httptest.Server
}

func newSFEnv(t *testing.T, commitAfter time.Duration, bes map[string]backends.Backend, chain ...string) *sfEnv {
	t.Helper()
	up := newSFUpstream(t)
	if bes == nil {
		bes = map[string]backends.Backend{}
	}
	bes["nanogpt"] = backends.NewNanoGPT(backends.NanoGPTConfig{APIKey: "sk-test", BaseURL: up.srv.URL, FirstByteTimeout: 5 * time.Second}, up.srv.Client())
	rt, err := routing.New(routing.Config{Default: foRankings(t, chain...), Enabled: func(b string) bool { return bes[b] != nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	router := &recRouter{Router: rt}
	usage := &foUsage{}
	srv := New(Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal", MaxAttempts: 4, CommitHeadersAfter: commitAfter},
		Deps{Prompt: defaultPrompt(t), Router: router, Context: contextmgr.New(config.Default().Context, nil, nil), Backends: bes, Usage: usage})
	proxy := httptest.NewServer(srv)
	t.Cleanup(proxy.Close)
	return &sfEnv{up: up, router: router, usage: usage, proxy: proxy}
}

func (e *sfEnv) post(t *testing.T, body string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Conversation-ID", "conv-1")
	return http.DefaultClient.Do(req)
}

func (e *sfEnv) chat(t *testing.T, stream bool) foResult {
	t.Helper()
	resp, err := e.post(t, `{"model":"auto","stream":`+map[bool]string{true: "true", false: "false"}[stream]+`,"messages":[{"role":"user","content":"hello"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return foResult{resp.StatusCode, resp.Header, string(b)}
}

// An upstream that answers 200 with only an error (an in-band SSE error event, or a JSON
// error envelope) has failed: the request falls over to the next candidate, the failing
// model is counted unhealthy and the conversation is pinned to the one that answered.
// An in-band 400 is the request's own fault and reaches the client as a 400.
func TestInBandErrorBeforeContentFallsOver(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "json"}[stream], func(t *testing.T) {
			e := newSFEnv(t, 0, nil, "inband", "ok")
			res := e.chat(t, stream)
			if res.status != 200 || !strings.Contains(res.body, "Answer from ok") || strings.Contains(res.body, "provider overloaded") {
				t.Fatalf("status %d body %s; want ok's answer and no error", res.status, res.body)
			}
			if got := res.header.Get("X-Proxy-Model"); got != "ok" {
				t.Errorf("X-Proxy-Model = %q, want ok", got)
			}
			row := e.usage.last()
			if row.Model != "ok" || row.StatusCode != 200 || row.Attempts != 2 || row.Error != "" {
				t.Errorf("usage row model=%s status=%d attempts=%d err=%q; want ok 200 2 \"\"", row.Model, row.StatusCode, row.Attempts, row.Error)
			}
			obs, pin := e.router.seen()
			if diff := cmp.Diff([]string{"inband 503", "ok ok"}, obs); diff != "" {
				t.Errorf("observed attempts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"ok"}, pin); diff != "" {
				t.Errorf("pinned (-want +got):\n%s", diff)
			}
		})
		t.Run(map[bool]string{true: "stream", false: "json"}[stream]+"/400", func(t *testing.T) {
			e := newSFEnv(t, 0, nil, "inband400", "ok")
			res := e.chat(t, stream)
			if res.status != 400 || !strings.Contains(res.body, "provider overloaded") || e.up.body("ok") != nil {
				t.Errorf("status %d body %s, ok called: %v; want the upstream's 400 and no fallback", res.status, res.body, e.up.body("ok") != nil)
			}
		})
	}
}

// An upstream error event after the first content reaches the client as the provider
// sent it, with no second error from the proxy; the usage row records the failure, and
// the model is neither counted healthy nor pinned.
func TestInBandErrorAfterContentIsForwarded(t *testing.T) {
	e := newSFEnv(t, 0, nil, "midfail", "ok")
	res := e.chat(t, true)
	want := sfChunk("midfail", `{"role":"assistant","content":""}`) + sfChunk("midfail", `{"content":"Partial"}`) + inbandErr + "data: [DONE]\n\n"
	if res.status != 200 || res.body != want {
		t.Errorf("status %d, body (-want +got):\n%s", res.status, cmp.Diff(want, res.body))
	}
	row := e.usage.last()
	if row.Model != "midfail" || row.StatusCode != 503 || !strings.Contains(row.Error, "provider overloaded") {
		t.Errorf("usage row model=%s status=%d err=%q; want midfail 503 with the upstream's message", row.Model, row.StatusCode, row.Error)
	}
	obs, pin := e.router.seen()
	if diff := cmp.Diff([]string{"midfail 503"}, obs); diff != "" {
		t.Errorf("observed attempts (-want +got):\n%s", diff)
	}
	if len(pin) != 0 {
		t.Errorf("pinned %v after a failed stream", pin)
	}
}

// slowStream starts a stream request whose first candidate is slow and returns once the
// client has the response headers and the first line of the body; release lets the
// upstream go on.
func slowStream(t *testing.T, e *sfEnv) (*http.Response, *bufio.Reader) {
	t.Helper()
	type result struct {
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := e.post(t, `{"model":"auto","stream":true,"messages":[{"role":"user","content":"think hard"}]}`)
		got <- result{resp, err}
	}()
	// The upstream is held until release: the headers can only have come early.
	var r result
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		close(e.up.release)
		t.Fatal("no response headers before the first content")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.resp.Body.Close() })
	br := bufio.NewReader(r.resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != strings.SplitAfter(keepAlive, "\n")[0] {
		t.Fatalf("first line %q (%v); want the upstream's keep-alive comment", line, err)
	}
	return r.resp, br
}

// A slow model that sends keep-alives gets the 200, the SSE headers and its comments to
// the client before any content (so a client's headers timeout does not fire); the held
// role chunk follows with the content.
func TestSlowStreamSendsHeadersAndKeepAlivesEarly(t *testing.T) {
	e := newSFEnv(t, time.Nanosecond, nil, "slow", "ok")
	resp, br := slowStream(t, e)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Proxy-Model") != "slow" {
		t.Errorf("early headers: status %d, Content-Type %q, X-Proxy-Model %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Proxy-Model"))
	}
	close(e.up.release)
	rest, _ := io.ReadAll(br)
	want := "\n" + sfChunk("slow", `{"role":"assistant","content":""}`) + sfChunk("slow", `{"content":"Answer from slow"}`) + "data: [DONE]\n\n"
	if diff := cmp.Diff(want, string(rest)); diff != "" {
		t.Errorf("rest of the stream (-want +got):\n%s", diff)
	}
	if row := e.usage.last(); row.Model != "slow" || row.StatusCode != 200 {
		t.Errorf("usage row %s %d", row.Model, row.StatusCode)
	}
}

// A candidate that fails after the early headers but before its first data event falls
// over invisibly: the client sees the keep-alive and then the next candidate's answer.
// The headers, sent early, name the candidate that was being tried then.
func TestFailureAfterEarlyHeadersFallsOver(t *testing.T) {
	for _, first := range []string{"slowcut", "slowerr"} {
		t.Run(first, func(t *testing.T) {
			e := newSFEnv(t, time.Nanosecond, nil, first, "ok")
			resp, br := slowStream(t, e)
			close(e.up.release)
			rest, _ := io.ReadAll(br)
			if strings.Contains(string(rest), `"error"`) || !strings.Contains(string(rest), "Answer from ok") || strings.Contains(string(rest), first) {
				t.Errorf("stream after the keep-alive: %s; want only ok's answer", rest)
			}
			if resp.Header.Get("X-Proxy-Model") != first {
				t.Errorf("X-Proxy-Model = %q; the early headers name %s", resp.Header.Get("X-Proxy-Model"), first)
			}
			row := e.usage.last()
			if row.Model != "ok" || row.StatusCode != 200 || row.Attempts != 2 {
				t.Errorf("usage row model=%s status=%d attempts=%d; want ok 200 2", row.Model, row.StatusCode, row.Attempts)
			}
		})
	}
}

// When every candidate fails after the headers went out early, the client gets exactly
// one in-band error event, and the usage row records its status.
func TestAllFailAfterEarlyHeadersIsOneErrorEvent(t *testing.T) {
	e := newSFEnv(t, time.Nanosecond, nil, "slowcut", "slowerr")
	_, br := slowStream(t, e)
	close(e.up.release)
	rest, _ := io.ReadAll(br)
	var errs []string
	for _, ev := range strings.SplitAfter(string(rest), "\n\n") {
		if strings.HasPrefix(string(ev), `data: {"error"`) {
			errs = append(errs, string(ev))
		}
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "provider overloaded") {
		t.Fatalf("error events %q in %q; want one, the last candidate's", errs, rest)
	}
	row := e.usage.last()
	if row.StatusCode != 503 || row.Attempts != 2 || row.Error == "" {
		t.Errorf("usage row status=%d attempts=%d err=%q; want 503 2 and the error", row.StatusCode, row.Attempts, row.Error)
	}
}

// With a commit delay that has not passed, a fallback's headers name the model that
// answered (the keep-alive of the failed candidate is held, not sent).
func TestHeadersHeldBeforeCommitDelay(t *testing.T) {
	e := newSFEnv(t, time.Hour, nil, "slowcut", "ok")
	close(e.up.release)
	res := e.chat(t, true)
	if res.status != 200 || res.header.Get("X-Proxy-Model") != "ok" || res.header.Get("X-Proxy-Attempts") != "2" {
		t.Errorf("status %d X-Proxy-Model %q X-Proxy-Attempts %q; want 200 ok 2", res.status, res.header.Get("X-Proxy-Model"), res.header.Get("X-Proxy-Attempts"))
	}
	if strings.HasPrefix(res.body, ":") {
		t.Errorf("the failed candidate's keep-alive reached the client: %q", res.body)
	}
}

// Without upstream usage, prompt tokens are estimated from the body sent upstream (with
// the proxy's guidance), not the client's body.
func TestUsageEstimateUsesUpstreamBody(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(map[bool]string{true: "stream", false: "json"}[stream], func(t *testing.T) {
			e := newSFEnv(t, 0, nil, "okNoUsage")
			res := e.chat(t, stream)
			if res.status != 200 {
				t.Fatalf("status %d: %s", res.status, res.body)
			}
			sent := e.up.body("okNoUsage")
			row := e.usage.last()
			if !row.TokensEstimated || row.PromptTokens != len(sent)/4 {
				t.Errorf("prompt tokens %d (estimated %v); want %d, a quarter of the %d bytes sent upstream",
					row.PromptTokens, row.TokensEstimated, len(sent)/4, len(sent))
			}
		})
	}
}

// A request Vertex cannot take (a tool answer whose call was condensed away) is served by
// NanoGPT, which takes the OpenAI format as it is; Vertex's health is not touched.
func TestVertexTranslationErrorFallsOverToNanoGPT(t *testing.T) {
	google := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("Google called for an untranslatable request: %s", r.URL.Path)
		w.WriteHeader(500)
	}))
	defer google.Close()
	vx, err := backends.NewVertex(context.Background(), backends.VertexConfig{ProjectID: "p", Location: "us-central1", BaseURL: google.URL}, google.Client(), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newSFEnv(t, 0, map[string]backends.Backend{"vertex": vx}, "vertex/gemini-2.5-pro", "ok")
	resp, err := e.post(t, `{"model":"auto","messages":[{"role":"user","content":"go on"},{"role":"tool","tool_call_id":"call_gone","content":"ok"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "Answer from ok") || resp.Header.Get("X-Proxy-Backend") != "nanogpt" {
		t.Errorf("status %d backend %q body %s; want NanoGPT's answer", resp.StatusCode, resp.Header.Get("X-Proxy-Backend"), b)
	}
	obs, _ := e.router.seen()
	if diff := cmp.Diff([]string{"ok ok"}, obs); diff != "" {
		t.Errorf("observed attempts (-want +got):\n%s", diff)
	}
}

// A client that leaves while only keep-alives have been sent ends the request: no
// fallback is started for nobody, and the usage row says 499.
func TestClientLeavesDuringEarlyKeepAlives(t *testing.T) {
	e := newSFEnv(t, time.Nanosecond, nil, "slow", "ok")
	resp, _ := slowStream(t, e)
	resp.Body.Close()
	row := e.usage.last()
	if row.StatusCode != 499 || row.Attempts != 1 || e.up.body("ok") != nil {
		t.Errorf("usage row status=%d attempts=%d, ok called: %v; want 499 after one attempt and no fallback",
			row.StatusCode, row.Attempts, e.up.body("ok") != nil)
	}
	close(e.up.release)
}

// A stream that breaks off after its first content gets the proxy's one error event, and
// the model is counted as failed, not healthy, and not pinned.
func TestStreamBrokenAfterContentCountsAsFailure(t *testing.T) {
	e := newSFEnv(t, 0, nil, "cutafter", "ok")
	res := e.chat(t, true)
	if n := strings.Count(res.body, `data: {"error"`); n != 1 || !strings.Contains(res.body, "Partial") {
		t.Errorf("body %s; want the partial content and one error event", res.body)
	}
	obs, pin := e.router.seen()
	if diff := cmp.Diff([]string{"cutafter 502"}, obs); diff != "" {
		t.Errorf("observed attempts (-want +got):\n%s", diff)
	}
	if len(pin) != 0 {
		t.Errorf("pinned %v after a broken stream", pin)
	}
}
