package handlers_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// upstream is an httptest NanoGPT that records every body and streams a short answer.
type upstream struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	sse, err := os.ReadFile(filepath.Join("..", "testdata", "nanogpt", "chat-stream-text.sse"))
	if err != nil {
		t.Fatal(err)
	}
	completion, err := os.ReadFile(filepath.Join("..", "testdata", "nanogpt", "chat-completion.json"))
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.bodies = append(u.bodies, b)
		u.mu.Unlock()
		if !bytes.Contains(b, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(completion)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(sse)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) calls() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.bodies...)
}

type usageRows struct {
	mu   sync.Mutex
	rows []storage.Usage
}

func (r *usageRows) Record(u storage.Usage) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, u)
	return true
}

func newPromptProxy(t *testing.T, up *upstream) (*handlers.Server, *promptengineer.Engineer, *usageRows) {
	return newPromptProxyWith(t, up, promptengineer.Config{})
}

func newPromptProxyWith(t *testing.T, up *upstream, cfg promptengineer.Config) (*handlers.Server, *promptengineer.Engineer, *usageRows) {
	t.Helper()
	cfg.Default = config.DefaultStrategies
	eng, err := promptengineer.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	router, err := routing.New(routing.Config{Default: data.DefaultRouting, Enabled: func(b string) bool { return b == "nanogpt" }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	usage := &usageRows{}
	srv := handlers.New(handlers.Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal", Version: "test"}, handlers.Deps{
		Prompt: eng, Router: router, Context: contextmgr.New(config.Default().Context, nil, nil), Usage: usage,
		Backends: map[string]backends.Backend{"nanogpt": backends.NewNanoGPT(backends.NanoGPTConfig{APIKey: "test-key", BaseURL: up.URL}, nil)},
		Status:   map[string]func() any{"prompt": eng.Status},
	})
	return srv, eng, usage
}

func clientFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "clients", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(srv http.Handler, path string, body []byte, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, req)
	return rec
}

type explanation struct {
	Role struct {
		Name, Reason, Signal, Guidance string
	}
	Model, Backend string
	Candidates     []struct {
		Backend, Model, Reason string
		Available              bool
	}
	UpstreamRequest json.RawMessage `json:"upstream_request"`
}

// TestExplainShowsWhatGoesUpstream: a dry run (header or /v1/route/explain) calls no
// backend and shows the role and why, the candidates and why, and exactly the bytes a
// real request sends upstream.
func TestExplainShowsWhatGoesUpstream(t *testing.T) {
	tests := []struct {
		file    string
		role    roles.Role
		signal  string
		primary string
	}{
		{"roo-code-debug-first-turn.json", roles.Debugging, promptengineer.SignalMode, "primary for debugging"},
		{"cline-first-turn.json", roles.Implementation, promptengineer.SignalMode, "primary for implementation"},
		{"roo-code-condense.json", roles.Documentation, promptengineer.SignalSpecial, "primary for documentation"},
		{"roo-code-one-shot.json", roles.General, promptengineer.SignalSpecial, "primary for general"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			up := newUpstream(t)
			srv, _, usage := newPromptProxy(t, up)
			body := clientFixture(t, tt.file)

			// Its own conversation key, so the dry runs below are not pinned to the model
			// that served it (stickiness) and show the role's ranking.
			real := post(srv, "/v1/chat/completions", body, map[string]string{"X-Conversation-ID": "real-" + tt.file})
			if real.Code != 200 || len(up.calls()) != 1 {
				t.Fatalf("real request: status %d, %d upstream calls: %s", real.Code, len(up.calls()), real.Body)
			}
			sent := up.calls()[0]

			for _, how := range []struct {
				path string
				hdr  map[string]string
			}{
				{"/v1/chat/completions", map[string]string{"X-Proxy-Dry-Run": "true"}},
				{"/v1/route/explain", nil},
			} {
				rec := post(srv, how.path, body, how.hdr)
				if rec.Code != 200 {
					t.Fatalf("%s: status %d: %s", how.path, rec.Code, rec.Body)
				}
				if n := len(up.calls()); n != 1 {
					t.Fatalf("%s: the dry run called the upstream (%d calls)", how.path, n)
				}
				var ex explanation
				if err := json.Unmarshal(rec.Body.Bytes(), &ex); err != nil {
					t.Fatalf("%s: %v\n%s", how.path, err, rec.Body)
				}
				if ex.Role.Name != string(tt.role) || ex.Role.Signal != tt.signal || ex.Role.Reason == "" {
					t.Errorf("%s: role %+v; want %s by %s", how.path, ex.Role, tt.role, tt.signal)
				}
				if len(ex.Candidates) < 2 || ex.Candidates[0].Reason != tt.primary || ex.Model != ex.Candidates[0].Model || ex.Backend != "nanogpt" {
					t.Errorf("%s: model %s/%s candidates %+v; want the %s first", how.path, ex.Backend, ex.Model, ex.Candidates, tt.primary)
				}
				for _, c := range ex.Candidates {
					if c.Available != (c.Backend == "nanogpt") {
						t.Errorf("%s: candidate %+v: availability wrong (only nanogpt is configured)", how.path, c)
					}
				}
				if !bytes.Equal(ex.UpstreamRequest, sent) {
					t.Errorf("%s: upstream_request differs from what the real request sent\nexplain: %.300s\n   sent: %.300s", how.path, ex.UpstreamRequest, sent)
				}
				if got := rec.Header().Get("X-Proxy-Role"); got != string(tt.role) {
					t.Errorf("%s: X-Proxy-Role %q", how.path, got)
				}
			}
			usage.mu.Lock()
			defer usage.mu.Unlock()
			if len(usage.rows) != 1 || usage.rows[0].Role != string(tt.role) {
				t.Errorf("usage rows %+v; want one row (the real request) with role %s", usage.rows, tt.role)
			}
		})
	}
}

// TestInvalidRoleIs400: an unknown explicit role is a 400 listing the valid roles, and
// nothing goes upstream.
func TestInvalidRoleIs400(t *testing.T) {
	up := newUpstream(t)
	srv, _, _ := newPromptProxy(t, up)
	withRole := strings.Replace(string(clientFixture(t, "roo-code-code-first-turn.json")), `"model": "auto",`, `"model": "auto", "role": "coder",`, 1)
	for name, rec := range map[string]*httptest.ResponseRecorder{
		"body":   post(srv, "/v1/chat/completions", []byte(withRole), nil),
		"header": post(srv, "/v1/chat/completions", clientFixture(t, "roo-code-code-first-turn.json"), map[string]string{"X-Proxy-Role": "hacker"}),
	} {
		var env struct {
			Error struct{ Message, Type, Code, Param string }
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || rec.Code != 400 {
			t.Fatalf("%s: status %d body %s", name, rec.Code, rec.Body)
		}
		if env.Error.Type != "invalid_request_error" || env.Error.Code != "invalid_role" {
			t.Errorf("%s: error %+v", name, env.Error)
		}
		for _, r := range roles.All {
			if !strings.Contains(env.Error.Message, string(r)) {
				t.Errorf("%s: message %q does not list %s", name, env.Error.Message, r)
			}
		}
	}
	if n := len(up.calls()); n != 0 {
		t.Errorf("%d upstream calls for rejected requests", n)
	}
}

// TestUpstreamIsClientPlusGuidance: through the whole proxy, the upstream body is the
// client's body with the chosen model and the guidance block, nothing else changed.
func TestUpstreamIsClientPlusGuidance(t *testing.T) {
	up := newUpstream(t)
	srv, eng, _ := newPromptProxy(t, up)
	body := clientFixture(t, "roo-code-code-tool-turn.json")
	rec := post(srv, "/v1/chat/completions", body, nil)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	sent := string(compactJSON(t, up.calls()[0]))
	added, _ := json.Marshal("\n\n" + eng.Strategies().Guidance(roles.Implementation))
	blockJSON := strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(string(added[1:len(added)-1]), `\u003c`, "<"), `\u003e`, ">"), `\u0026`, "&")
	if strings.Count(sent, blockJSON) != 1 {
		t.Fatalf("guidance block not found once in the upstream body: %.500s", sent)
	}
	got := strings.Replace(strings.Replace(sent, blockJSON, "", 1), `"model":"qwen/qwen3-coder"`, `"model":"auto"`, 1)
	if want := string(compactJSON(t, body)); got != want {
		t.Errorf("upstream minus guidance and model differs from the client body\n got: %s\nwant: %s", got, want)
	}
}

func compactJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestStatusShowsRoleCounts: /status counts requests per role and per signal.
func TestStatusShowsRoleCounts(t *testing.T) {
	up := newUpstream(t)
	srv, _, _ := newPromptProxy(t, up)
	for _, f := range []string{"roo-code-debug-first-turn.json", "roo-code-debug-first-turn.json", "roo-code-ask-first-turn.json", "roo-code-condense.json"} {
		if rec := post(srv, "/v1/chat/completions", clientFixture(t, f), nil); rec.Code != 200 {
			t.Fatalf("%s: %d %s", f, rec.Code, rec.Body)
		}
	}
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/status", nil))
	var st struct {
		Prompt struct {
			Roles   map[string]int64
			Signals map[string]int64
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"debugging": 2, "research": 1, "documentation": 1, "architect": 0}
	for r, n := range want {
		if st.Prompt.Roles[r] != n {
			t.Errorf("roles[%s] = %d; want %d (status %s)", r, st.Prompt.Roles[r], n, rec.Body)
		}
	}
	if st.Prompt.Signals["agent_mode"] != 3 || st.Prompt.Signals["special"] != 1 {
		t.Errorf("signals %v", st.Prompt.Signals)
	}
}

// TestSlowOptimizerDoesNotHoldTheRequest: a local model that never answers costs the
// request only the optimizer deadline; the client's message goes upstream unchanged and
// the client gets its answer.
func TestSlowOptimizerDoesNotHoldTheRequest(t *testing.T) {
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices a gone client only once the body is read
		<-r.Context().Done()
	}))
	defer hung.Close()
	up := newUpstream(t)
	srv, eng, _ := newPromptProxyWith(t, up, promptengineer.Config{Optimizer: promptengineer.OptimizerConfig{
		BaseURL: hung.URL + "/v1", Model: "qwen3-30b-a3b", Timeout: 100 * time.Millisecond}})
	rec := post(srv, "/v1/chat/completions", []byte(`{"model":"auto","messages":[{"role":"user","content":"fix the login bug, it returns 500"}]}`), nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "chat.completion") {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	calls := up.calls()
	if len(calls) != 1 || !strings.Contains(string(calls[0]), `{"role":"user","content":"fix the login bug, it returns 500"}`) {
		t.Fatalf("upstream got %q", calls)
	}
	st := eng.Status().(map[string]any)["optimizer"].(map[string]any)
	if st["timeouts"] != int64(1) {
		t.Errorf("optimizer status %v; want one timeout", st)
	}
}
