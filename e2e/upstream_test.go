package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Markers in a prompt choose what the mock NanoGPT answers.
const (
	markError402   = "E2E-UPSTREAM-402"
	markError429   = "E2E-UPSTREAM-429"
	markSlowStream = "E2E-SLOW-STREAM"
	markCutStream  = "E2E-CUT-STREAM"
)

// upstream is a mock NanoGPT /api/v1: it replays testdata/nanogpt fixtures byte for byte
// and records every request it gets.
//
//   - a body containing markError402 / markError429 gets that error fixture;
//   - a streaming body gets chat-stream-tool-call.sse, one event per write and flush; with
//     markSlowStream it stops after the first content event, closes Holding and waits for
//     Release (or the request's end); with markCutStream it breaks the connection there;
//   - any other body gets chat-completion.json.
type upstream struct {
	t   *testing.T
	srv *httptest.Server

	stream, completion, err402, err429 []byte

	// Holding is closed when a slow stream has sent its first content; closing Release lets
	// it finish. Cancelled is closed when the proxy cancels a held stream.
	Holding    chan struct{}
	Release    chan struct{}
	Cancelled  chan struct{}
	holdOnce   sync.Once
	cancelOnce sync.Once

	mu   sync.Mutex
	reqs []recorded
}

// recorded is one request the mock received.
type recorded struct {
	Path   string
	Header http.Header
	Body   []byte
}

const chatPath = "/api/v1/chat/completions"

// getFixtures are the GET endpoints the mock serves.
var getFixtures = map[string]string{
	"/api/v1/models":               "nanogpt/models-detailed.json",
	"/api/subscription/v1/models":  "nanogpt/subscription-models.json",
	"/api/subscription/v1/usage":   "nanogpt/subscription-usage.json",
	"/api/subscription/v1/usage/":  "nanogpt/subscription-usage.json",
	"/api/subscription/v1/models/": "nanogpt/subscription-models.json",
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{
		t:          t,
		stream:     readFixture(t, "nanogpt/chat-stream-tool-call.sse"),
		completion: readFixture(t, "nanogpt/chat-completion.json"),
		err402:     readFixture(t, "nanogpt/error-402-insufficient-balance.json"),
		err429:     readFixture(t, "nanogpt/error-429-daily-limit.json"),
		Holding:    make(chan struct{}),
		Release:    make(chan struct{}),
		Cancelled:  make(chan struct{}),
	}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) URL() string { return u.srv.URL }

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.reqs = append(u.reqs, recorded{Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	u.mu.Unlock()
	if r.Method == http.MethodGet {
		// NanoGPT's read-only endpoints, for features that look at models and quota.
		if name, ok := getFixtures[r.URL.Path]; ok {
			writeJSON(w, http.StatusOK, readFixture(u.t, name), nil)
		} else {
			http.NotFound(w, r)
		}
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != chatPath {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(body, &req)
	switch {
	case bytes.Contains(body, []byte(markError402)):
		writeJSON(w, http.StatusPaymentRequired, u.err402, nil)
	case bytes.Contains(body, []byte(markError429)):
		writeJSON(w, http.StatusTooManyRequests, u.err429, http.Header{"Retry-After": {"30"}})
	case req.Stream:
		u.serveStream(w, r, bytes.Contains(body, []byte(markSlowStream)), bytes.Contains(body, []byte(markCutStream)))
	default:
		writeJSON(w, http.StatusOK, u.completion, nil)
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte, h http.Header) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (u *upstream) serveStream(w http.ResponseWriter, r *http.Request, slow, cut bool) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	held := !slow
	for _, ev := range sseEvents(u.stream) {
		if _, err := io.WriteString(w, ev); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		if cut && hasContent(ev) {
			panic(http.ErrAbortHandler) // the connection breaks mid-stream
		}
		if !held && hasContent(ev) {
			held = true
			u.holdOnce.Do(func() { close(u.Holding) })
			select {
			case <-u.Release:
			case <-r.Context().Done():
				u.cancelOnce.Do(func() { close(u.Cancelled) })
				return
			}
		}
	}
}

// sseEvents splits an SSE stream into its events, each with its blank-line terminator;
// joined again they are the input byte for byte.
func sseEvents(b []byte) []string {
	var out []string
	for _, ev := range strings.SplitAfter(string(b), "\n\n") {
		if ev != "" {
			out = append(out, ev)
		}
	}
	return out
}

// hasContent reports whether an SSE event is a chunk with non-empty delta.content.
func hasContent(ev string) bool {
	data, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: ")
	if !ok {
		return false
	}
	var c struct {
		Choices []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	return json.Unmarshal([]byte(data), &c) == nil && len(c.Choices) > 0 && c.Choices[0].Delta.Content != ""
}

// requests returns the chat completion requests received so far.
func (u *upstream) requests() []recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []recorded
	for _, r := range u.reqs {
		if r.Path == chatPath {
			out = append(out, r)
		}
	}
	return out
}

// checkAuth checks that every request the mock got, of any kind, carried the proxy's key
// and nothing of the client's credential.
func (u *upstream) checkAuth(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+testAPIKey {
			t.Errorf("upstream %s: Authorization = %q, want the proxy's key", r.Path, got)
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, clientKey) {
					t.Errorf("upstream %s: the client's credential arrived in %s: %q", r.Path, k, v)
				}
			}
		}
	}
}

// promptSnippets returns the first 40 bytes of every message text the mock received:
// strings that must never appear in the proxy's log.
func (u *upstream) promptSnippets() []string {
	var out []string
	for _, r := range u.requests() {
		var body struct {
			Messages []struct {
				Content json.RawMessage `json:"content"`
			} `json:"messages"`
		}
		if json.Unmarshal(r.Body, &body) != nil {
			continue
		}
		for _, m := range body.Messages {
			var texts []string
			var s string
			var parts []struct {
				Text string `json:"text"`
			}
			if json.Unmarshal(m.Content, &s) == nil {
				texts = append(texts, s)
			} else if json.Unmarshal(m.Content, &parts) == nil {
				for _, p := range parts {
					texts = append(texts, p.Text)
				}
			}
			for _, s := range texts {
				if len(s) > 40 {
					s = s[:40]
				}
				if len(s) >= 12 {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// sseChunks returns the JSON payloads of the fixture's data events, without [DONE].
func sseChunks(b []byte) [][]byte {
	var out [][]byte
	for _, ev := range sseEvents(b) {
		data, ok := strings.CutPrefix(strings.TrimSpace(ev), "data: ")
		if ok && data != "[DONE]" {
			out = append(out, []byte(data))
		}
	}
	return out
}
