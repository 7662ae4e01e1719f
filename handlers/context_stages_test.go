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

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// ctxEnv is the proxy with the real prompt engineer and the real context manager on a
// SQLite file, in front of an upstream that records what it is sent and answers
// "Answer N" (streamed).
type ctxEnv struct {
	proxy *httptest.Server
	ctx   *contextmgr.Manager
	store *contextmgr.SQLiteStore
	mu    sync.Mutex
	sent  []backends.ChatRequest // what the upstream received
}

func newCtxEnv(t *testing.T, opt promptengineer.OptimizerConfig) *ctxEnv {
	t.Helper()
	e := &ctxEnv{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req, err := backends.ParseChatRequest(b)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		e.mu.Lock()
		e.sent = append(e.sent, *req)
		n := len(e.sent)
		e.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		c, _ := json.Marshal("Answer " + string(rune('0'+n)))
		io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`+"\n\n"+
			`data: {"id":"c","object":"chat.completion.chunk","model":"m1","choices":[{"index":0,"delta":{"content":`+string(c)+`},"finish_reason":"stop"}]}`+"\n\n"+
			`data: {"id":"c","object":"chat.completion.chunk","model":"m1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e.store = contextmgr.NewSQLiteStore(db, nil)
	e.store.MinScore = config.Default().Context.MinScore
	e.ctx = contextmgr.New(config.Default().Context, e.store, nil)
	t.Cleanup(func() { e.ctx.Close(context.Background()) })
	prompt, err := promptengineer.New(promptengineer.Config{Default: config.DefaultStrategies, Optimizer: opt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	bes := map[string]backends.Backend{"nanogpt": backends.NewNanoGPT(backends.NanoGPTConfig{APIKey: "k", BaseURL: up.URL}, up.Client())}
	rk := routing.Rankings{Version: 1, Roles: map[string]routing.RoleRanking{}}
	for _, r := range []string{"architect", "implementation", "code_review", "debugging", "testing", "documentation", "research", "general"} {
		rk.Roles[r] = routing.RoleRanking{Primary: routing.Entry{Backend: "nanogpt", Model: "m1"}}
	}
	rb, _ := json.Marshal(rk)
	router, err := routing.New(routing.Config{Default: rb, Enabled: func(b string) bool { return bes[b] != nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.proxy = httptest.NewServer(New(Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal"},
		Deps{Prompt: prompt, Router: router, Context: e.ctx, Backends: bes}))
	t.Cleanup(e.proxy.Close)
	return e
}

// post sends a streamed chat completion, reads the answer and waits until the exchange is
// saved; it returns the role the proxy reports.
func (e *ctxEnv) post(t *testing.T, msgs []string, hdr map[string]string) string {
	t.Helper()
	body := chatBody(msgs)
	req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if err := e.ctx.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return resp.Header.Get("X-Proxy-Role")
}

// lastSent is the request the upstream received last.
func (e *ctxEnv) lastSent() backends.ChatRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sent[len(e.sent)-1]
}

// chatBody is a streamed request of role/content pairs.
func chatBody(pairs []string) string {
	var ms []string
	for i := 0; i+1 < len(pairs); i += 2 {
		c, _ := json.Marshal(pairs[i+1])
		ms = append(ms, `{"role":"`+pairs[i]+`","content":`+string(c)+`}`)
	}
	return `{"model":"auto","stream":true,"messages":[` + strings.Join(ms, ",") + `]}`
}

// With the prompt optimizer on, the upstream gets the rewritten words but the conversation
// store keeps the client's, so a full-history client's conversation is stored once; the
// role (and the guidance in the system prompt) of a client without a mode signal stays
// the one its first turn was classified as.
func TestContextStagesOptimizerConversation(t *testing.T) {
	local := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var call struct {
			Messages []struct{ Content string }
		}
		_ = json.NewDecoder(r.Body).Decode(&call)
		c, _ := json.Marshal("REWRITTEN: " + call.Messages[len(call.Messages)-1].Content)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","object":"chat.completion","created":1,"model":"local","choices":[{"index":0,"message":{"role":"assistant","content":`+string(c)+`},"finish_reason":"stop"}]}`)
	}))
	defer local.Close()
	e := newCtxEnv(t, promptengineer.OptimizerConfig{BaseURL: local.URL + "/v1", Model: "local"})

	sys := "You are a helpful assistant."
	u1 := "write table-driven unit tests for the clamp function with coverage of the edge cases"
	u2 := "it panics with a nil pointer dereference stack trace, debug the crash"
	u3 := "thanks"
	turns := [][]string{
		{"system", sys, "user", u1},
		{"system", sys, "user", u1, "assistant", "Answer 1", "user", u2},
		{"system", sys, "user", u1, "assistant", "Answer 1", "user", u2, "assistant", "Answer 2", "user", u3},
	}
	var roles, systems []string
	for i, msgs := range turns {
		roles = append(roles, e.post(t, msgs, nil))
		sent := e.lastSent()
		if got := sent.Messages[len(sent.Messages)-1].Text(0); !strings.HasPrefix(got, "REWRITTEN: ") {
			t.Errorf("turn %d: upstream got %q, want the rewrite", i+1, got)
		}
		systems = append(systems, sent.Messages[0].Text(0))
	}
	if roles[0] != "testing" || roles[1] != roles[0] || roles[2] != roles[0] {
		t.Errorf("X-Proxy-Role per turn %v, want testing throughout", roles)
	}
	if systems[1] != systems[0] || systems[2] != systems[0] {
		t.Errorf("the system prompt sent upstream changed between turns:\n%s", cmp.Diff(systems[0], systems[1]))
	}
	conv := contextmgr.ConversationID(mustParse(t, chatBody(turns[0])), "")
	got, err := e.store.History(context.Background(), conv, 0)
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for _, m := range got {
		stored = append(stored, m.Role+": "+m.Content)
	}
	want := []string{"user: " + u1, "assistant: Answer 1", "user: " + u2, "assistant: Answer 2", "user: " + u3, "assistant: Answer 3"}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("stored conversation (-want +got):\n%s", diff)
	}
}

// Past interactions stay within the request's profile (X-Profile), and helper requests
// (Roo Code's enhance prompt) are neither enriched nor saved.
func TestContextStagesProfileAndHelper(t *testing.T) {
	e := newCtxEnv(t, promptengineer.OptimizerConfig{})
	q := "How do I add limit offset pagination to ListOrders in the orders service?"
	e.post(t, []string{"user", q}, map[string]string{"X-Profile": "work", "X-Conversation-ID": "work-conv"})

	ask := []string{"system", "S.", "user", "limit offset pagination for ListOrders in the orders service"}
	for _, tc := range []struct {
		profile string
		want    bool
	}{{"personal", false}, {"work", true}} {
		e.post(t, ask, map[string]string{"X-Profile": tc.profile, "X-Conversation-ID": "new-" + tc.profile, "X-Proxy-No-Store": "true"})
		sent := e.lastSent()
		if got := strings.Contains(sent.Messages[0].Text(0), "<past_interactions>"); got != tc.want {
			t.Errorf("%s request: past interactions added = %v, want %v:\n%s", tc.profile, got, tc.want, sent.Messages[0].Text(0))
		}
	}

	enhance := []string{"user", "Generate an enhanced version of this prompt (reply with only the enhanced prompt - no conversation, explanations, lead-in, bullet points, placeholders, or surrounding quotes):\n\n" + q}
	e.post(t, enhance, map[string]string{"X-Profile": "work"})
	sent := e.lastSent()
	if len(sent.Messages) != 1 || strings.Contains(string(sent.UpstreamBody("m1")), "past_interactions") {
		t.Errorf("helper request enriched: %d messages", len(sent.Messages))
	}
	conv := contextmgr.ConversationID(mustParse(t, chatBody(enhance)), "")
	if got, _ := e.store.History(context.Background(), conv, 0); len(got) != 0 {
		t.Errorf("helper request saved as a conversation: %v", got)
	}
}

// A context-condensing request the prompt engineer does not take for a helper (none of its
// special patterns says "condense the conversation") is still neither enriched nor saved:
// the handler asks contextmgr.IsCondensing of the client's request.
func TestCondensingRequestNeitherEnrichedNorSaved(t *testing.T) {
	e := newCtxEnv(t, promptengineer.OptimizerConfig{})
	q := "How do I add limit offset pagination to ListOrders in the orders service?"
	e.post(t, []string{"user", q}, map[string]string{"X-Profile": "work", "X-Conversation-ID": "work-conv"})

	condense := []string{"system", "S.", "user", "Condense the conversation: add limit offset pagination to ListOrders in the orders service"}
	e.post(t, condense, map[string]string{"X-Profile": "work"})
	sent := e.lastSent()
	if strings.Contains(string(sent.UpstreamBody("m1")), "past_interactions") {
		t.Errorf("condensing request enriched:\n%s", sent.UpstreamBody("m1"))
	}
	conv := contextmgr.ConversationID(mustParse(t, chatBody(condense)), "")
	if got, _ := e.store.History(context.Background(), conv, 0); len(got) != 0 {
		t.Errorf("condensing request saved as a conversation: %v", got)
	}
}

func mustParse(t *testing.T, body string) *backends.ChatRequest {
	t.Helper()
	req, err := backends.ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}
