package handlers

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

func TestDeleteConversation(t *testing.T) {
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := contextmgr.NewSQLiteStore(db, nil)
	m := contextmgr.New(config.Default().Context, st, nil)
	defer m.Close(context.Background())
	req, _ := backends.ParseChatRequest([]byte(`{"model":"auto","messages":[{"role":"user","content":"secret"}]}`))
	tr := m.Track(req, contextmgr.Input{ConversationID: "conv-1"})
	content, calls, _ := backends.AnswerChoice([]byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`))
	tr.Answer(content, calls)
	tr.Finish(true)

	noStore := contextmgr.New(config.Default().Context, nil, nil)
	for _, tc := range []struct {
		name     string
		mgr      ConversationDeleter
		token    string
		id       string
		status   int
		wantCode string
	}{
		{"no token", m, "", "conv-1", 401, "invalid_admin_token"},
		{"deleted", m, "tok", "conv-1", 200, ""},
		{"already gone", m, "tok", "conv-1", 404, "conversation_not_found"},
		{"no embedded store", noStore, "tok", "conv-1", 409, "no_embedded_store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Config{AdminToken: "tok", MaxBodyBytes: 1 << 20}, Deps{Admin: []func(chi.Router){ConversationRoutes(tc.mgr, nil)}})
			r := httptest.NewRequest(http.MethodDelete, "/admin/conversations/"+tc.id, nil)
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			var body struct {
				Deleted bool `json:"deleted"`
				Error   *struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %s: %v", w.Body, err)
			}
			if tc.wantCode == "" && !body.Deleted || tc.wantCode != "" && (body.Error == nil || body.Error.Code != tc.wantCode) {
				t.Errorf("body %s, want code %q", w.Body, tc.wantCode)
			}
		})
	}
	if got, _ := st.History(context.Background(), "conv-1", 0); len(got) != 0 {
		t.Errorf("conversation still stored: %v", got)
	}
}

// TestThinClientHistoryEndToEnd drives turns of a thin client through the whole pipeline
// against a NanoGPT-shaped upstream: a later request reaches the upstream with the first
// exchange (the streamed answer assembled) as real turns, and a turn repeating words said
// before the history window is stored again. Without a conversation id, the same one-shot
// sent again starts its conversation again: it goes upstream alone.
func TestThinClientHistoryEndToEnd(t *testing.T) {
	sse, err := os.ReadFile("../testdata/nanogpt/chat-stream-text.sse")
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	var mu sync.Mutex
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(sse)
	}))
	defer up.Close()

	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := config.Default().Context
	cfg.HistoryTurns = 2 // one exchange
	st := contextmgr.NewSQLiteStore(db, nil)
	m := contextmgr.New(cfg, st, nil)
	defer m.Close(context.Background())
	router, err := routing.New(routing.Config{Default: data.DefaultRouting, Enabled: func(b string) bool { return b == "nanogpt" }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal"}, Deps{
		Prompt: defaultPrompt(t), Router: router, Context: m,
		Backends: map[string]backends.Backend{"nanogpt": backends.NewNanoGPT(backends.NanoGPTConfig{APIKey: "k", BaseURL: up.URL}, nil)},
	})
	post := func(user string, hdr map[string]string) {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions",
			strings.NewReader(`{"model":"auto","stream":true,"messages":[{"role":"user","content":`+strconv.Quote(user)+`}]}`))
		r.Header.Set("X-Conversation-ID", "thin-e2e") // unless hdr sets it ("": none)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if err := m.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	post("Explain the context window of this model.", nil)
	post("A private aside.", map[string]string{"X-Proxy-No-Store": "true"})
	post("And how large is it?", nil)

	var last struct {
		Messages []struct{ Role, Content string }
	}
	if err := json.Unmarshal(bodies[len(bodies)-1], &last); err != nil {
		t.Fatal(err)
	}
	if last.Messages[0].Role != "system" {
		t.Errorf("the role guidance should come first, before the stored history: %+v", last.Messages[0])
	}
	got := nonSystemTurns(t, bodies[len(bodies)-1])
	if !strings.HasPrefix(got, "user: Explain the context window of this model.\nassistant: Context.") ||
		!strings.HasSuffix(got, "user: And how large is it?") || strings.Contains(got, "private aside") {
		t.Errorf("upstream messages of the third turn:\n%s", got)
	}

	// The first question again: the history window (one exchange) no longer holds it, yet
	// it is this turn's own, not a stored one.
	post("Explain the context window of this model.", nil)
	stored, err := st.History(context.Background(), "thin-e2e", 0)
	if err != nil {
		t.Fatal(err)
	}
	var asked []string
	for _, turn := range stored {
		if turn.Role == "user" {
			asked = append(asked, turn.Content)
		}
	}
	if want := []string{"Explain the context window of this model.", "And how large is it?", "Explain the context window of this model."}; strings.Join(asked, "|") != strings.Join(want, "|") {
		t.Errorf("stored questions %q, want %q", asked, want)
	}

	// A one-shot without an id, twice: its key is derived from it, and the stored first
	// exchange does not go before it.
	for range 2 {
		post("Say hi.", map[string]string{"X-Conversation-ID": ""})
	}
	if a, b := nonSystemTurns(t, bodies[len(bodies)-2]), nonSystemTurns(t, bodies[len(bodies)-1]); a != "user: Say hi." || b != a {
		t.Errorf("one-shot sent twice went upstream as %q, then %q", a, b)
	}
}

// nonSystemTurns is the non-system messages (not the prompt engineer's role guidance) of an
// upstream request body, one per line.
func nonSystemTurns(t *testing.T, body []byte) string {
	t.Helper()
	var req struct {
		Messages []struct{ Role, Content string }
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, msg := range req.Messages {
		if msg.Role != "system" {
			out = append(out, msg.Role+": "+msg.Content)
		}
	}
	return strings.Join(out, "\n")
}
