package promptengineer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// localModel is an httptest OpenAI-compatible server standing in for Ollama / LM Studio.
type localModel struct {
	*httptest.Server
	mu    sync.Mutex
	calls []struct {
		Model    string
		Messages []struct{ Role, Content string }
	}
}

// newLocalModel answers with reply, or behaves as mode says: "hang" (until the caller
// gives up), "error" (a 500 in the OpenAI error envelope).
func newLocalModel(t *testing.T, mode, reply string) *localModel {
	t.Helper()
	m := &localModel{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" {
			http.NotFound(w, r)
			return
		}
		var call struct {
			Model    string
			Messages []struct{ Role, Content string }
		}
		_ = json.NewDecoder(r.Body).Decode(&call)
		m.mu.Lock()
		m.calls = append(m.calls, call)
		m.mu.Unlock()
		switch mode {
		case "hang":
			<-r.Context().Done()
			return
		case "error":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"error":{"message":"model failed to load","type":"server_error","code":null,"param":null}}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		c, _ := json.Marshal(reply)
		_, _ = w.Write([]byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1795680000,"model":"qwen3-30b-a3b",` +
			`"choices":[{"index":0,"message":{"role":"assistant","content":` + string(c) + `},"finish_reason":"stop"}],` +
			`"usage":{"prompt_tokens":90,"completion_tokens":20,"total_tokens":110}}`))
	}))
	t.Cleanup(m.Close)
	return m
}

func (m *localModel) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.calls)
}

func optEngineer(t *testing.T, m *localModel, timeout time.Duration) *Engineer {
	return newEngineer(t, Config{Optimizer: OptimizerConfig{BaseURL: m.URL + "/v1", Model: "qwen3-30b-a3b", Timeout: timeout}})
}

// TestRewriteSuccessAndCache: the user's words are replaced by the local model's rewrite;
// the model saw the role's guidance; a repeat is served from the cache.
func TestRewriteSuccessAndCache(t *testing.T) {
	m := newLocalModel(t, "ok", "<think>short</think>\nWrite table-driven Go unit tests for Clamp(x, lo, hi) covering x below, inside and above the range.")
	e := optEngineer(t, m, 5*time.Second)
	body := `{"model":"auto","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"write tests for clamp"}],"temperature":0}`

	req := parse(t, []byte(body))
	res, err := e.Prepare(context.Background(), req, Input{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Rewrite != RewriteDone || res.Role != "testing" {
		t.Fatalf("rewrite %q role %s", res.Rewrite, res.Role)
	}
	if got := req.Messages[1].Text(0); got != "Write table-driven Go unit tests for Clamp(x, lo, hi) covering x below, inside and above the range." {
		t.Errorf("user message after rewrite: %q", got)
	}
	// The client's own words are handed back for the conversation store.
	if res.Original == nil || res.Original.Text(0) != "write tests for clamp" || string(res.Original.JSON()) != `{"role":"user","content":"write tests for clamp"}` {
		t.Errorf("original message not kept: %+v", res.Original)
	}
	if m.count() != 1 || m.calls[0].Model != "qwen3-30b-a3b" || !strings.Contains(m.calls[0].Messages[0].Content, "Act as a test engineer") ||
		m.calls[0].Messages[1].Content != "write tests for clamp" {
		t.Errorf("local model calls: %+v", m.calls)
	}
	if !strings.HasSuffix(string(req.UpstreamBody("m")), `,"temperature":0}`) {
		t.Errorf("other fields changed: %s", req.UpstreamBody("m"))
	}

	again := parse(t, []byte(body))
	res, _ = e.Prepare(context.Background(), again, Input{})
	if res.Rewrite != RewriteCached || m.count() != 1 {
		t.Errorf("repeat: rewrite %q, %d model calls; want a cache hit and 1 call", res.Rewrite, m.count())
	}
	if res.Original == nil || res.Original.Text(0) != "write tests for clamp" {
		t.Errorf("cached rewrite: original message not kept: %+v", res.Original)
	}
	if string(again.UpstreamBody("m")) != string(req.UpstreamBody("m")) {
		t.Error("the cached rewrite differs from the first")
	}
	st := e.Status().(map[string]any)["optimizer"].(map[string]any)
	if st["rewrites"] != int64(1) || st["cache_hits"] != int64(1) {
		t.Errorf("optimizer status %v", st)
	}
}

// TestRewriteAgentMessage: in a Roo Code message only the words inside <user_message> are
// rewritten; the environment details part and the image stay byte-identical.
func TestRewriteAgentMessage(t *testing.T) {
	m := newLocalModel(t, "ok", "Explain why TestListOrders fails under -race.")
	e := optEngineer(t, m, 5*time.Second)
	req := parse(t, fixture(t, "roo-code-code-tool-turn.json"))
	last := len(req.Messages) - 1
	before := string(req.Messages[last].Content)
	res, err := e.Prepare(context.Background(), req, Input{})
	if err != nil || res.Rewrite != RewriteDone {
		t.Fatalf("rewrite %q err %v", res.Rewrite, err)
	}
	if m.calls[0].Messages[1].Content != "Here is the failing CI screenshot." {
		t.Errorf("model was sent %q", m.calls[0].Messages[1].Content)
	}
	after := string(req.Messages[last].Content)
	oldParts, newParts := splitParts([]byte(before)), splitParts([]byte(after))
	if len(oldParts) != 3 || len(newParts) != 3 {
		t.Fatalf("parts %d -> %d", len(oldParts), len(newParts))
	}
	if string(oldParts[1]) != string(newParts[1]) || string(oldParts[2]) != string(newParts[2]) {
		t.Error("image or environment details part changed")
	}
	if !strings.Contains(string(newParts[0]), "Explain why TestListOrders fails under -race.") {
		t.Errorf("first part %s", newParts[0])
	}
	// Everything but the last message is untouched.
	for i := 0; i < last; i++ {
		if req.Messages[i].Role != "system" && req.Messages[i].Raw == nil {
			t.Errorf("message %d was re-encoded", i)
		}
	}
}

// TestRewriteFallbacks: a hanging model (the request goes on unchanged once the deadline
// passes), a failing model and a tool-result turn all leave the message as sent.
func TestRewriteFallbacks(t *testing.T) {
	toolTurn := `{"model":"auto","messages":[{"role":"user","content":"read main.go"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"main.go\"}"}}]},` +
		`{"role":"tool","tool_call_id":"call_1","content":"package main"}]}`
	plain := `{"model":"auto","messages":[{"role":"user","content":"fix the login bug"}]}`
	tests := []struct {
		name, mode, body string
		want             string
		calls            int
	}{
		{"timeout", "hang", plain, RewriteTimeout, 1},
		{"error", "error", plain, RewriteError, 1},
		{"tool result", "ok", toolTurn, RewriteToolTurn, 0},
		{"condense helper", "ok", `{"model":"auto","messages":[{"role":"system","content":"You are a helpful AI assistant tasked with summarizing conversations."},{"role":"user","content":"Summarize the conversation so far."}]}`, RewriteHelper, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newLocalModel(t, tt.mode, "SHOULD NOT APPEAR")
			e := optEngineer(t, m, 100*time.Millisecond)
			req := parse(t, []byte(tt.body))
			last := req.Messages[len(req.Messages)-1].JSON()
			res, err := e.Prepare(context.Background(), req, Input{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Original != nil {
				t.Errorf("an original is reported for a message that was not rewritten")
			}
			if res.Rewrite != tt.want || m.count() != tt.calls {
				t.Errorf("rewrite %q with %d model calls; want %q with %d", res.Rewrite, m.count(), tt.want, tt.calls)
			}
			if got := req.Messages[len(req.Messages)-1].JSON(); string(got) != string(last) {
				t.Errorf("last message changed: %s", got)
			}
			if strings.Contains(string(req.UpstreamBody("m")), "SHOULD NOT APPEAR") {
				t.Error("model output leaked into the request")
			}
			st := e.Status().(map[string]any)["optimizer"].(map[string]any)
			if tt.calls > 0 && st["last_error"] == nil {
				t.Errorf("status does not show the optimizer failure: %v", st)
			}
		})
	}
}

// TestOptimizerOffByDefault: no optimizer unless configured; nothing is called.
func TestOptimizerOffByDefault(t *testing.T) {
	e := newEngineer(t, Config{})
	req := parse(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"write tests for clamp"}]}`))
	res, _ := e.Prepare(context.Background(), req, Input{})
	if res.Rewrite != "" || req.Messages[1].Text(0) != "write tests for clamp" {
		t.Errorf("rewrite %q, message %q", res.Rewrite, req.Messages[1].Text(0))
	}
}
