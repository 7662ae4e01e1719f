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
	tr.Body([]byte(`{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}`))
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

// TestThinClientHistoryEndToEnd drives two turns of a thin client through the whole
// pipeline against a NanoGPT-shaped upstream: the second request reaches the upstream with
// the first exchange (the streamed answer assembled) as real turns.
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
	m := contextmgr.New(config.Default().Context, contextmgr.NewSQLiteStore(db, nil), nil)
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
		r.Header.Set("X-Conversation-ID", "thin-e2e")
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
	var roles []string
	for _, msg := range last.Messages {
		if msg.Role == "system" {
			continue // the prompt engineer's role guidance
		}
		roles = append(roles, msg.Role+": "+msg.Content)
	}
	if last.Messages[0].Role != "system" {
		t.Errorf("the role guidance should come first, before the stored history: %+v", last.Messages[0])
	}
	got := strings.Join(roles, "\n")
	if !strings.HasPrefix(got, "user: Explain the context window of this model.\nassistant: Context.") ||
		!strings.HasSuffix(got, "user: And how large is it?") || strings.Contains(got, "private aside") {
		t.Errorf("upstream messages of the third turn:\n%s", got)
	}
}
