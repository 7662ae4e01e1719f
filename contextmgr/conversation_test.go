package contextmgr

import (
	"os"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

func parseFixture(t *testing.T, name string) *backends.ChatRequest {
	t.Helper()
	b, err := os.ReadFile("../testdata/clients/" + name)
	if err != nil {
		t.Fatal(err)
	}
	req, err := backends.ParseChatRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func parseBody(t *testing.T, body string) *backends.ChatRequest {
	t.Helper()
	req, err := backends.ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// The conversation key keeps every turn of one agent task together (stickiness, history)
// and keeps different tasks apart.
func TestConversationIDStableAcrossTurns(t *testing.T) {
	first := ConversationID(parseFixture(t, "roo-code-code-first-turn.json"), "")
	later := ConversationID(parseFixture(t, "roo-code-code-tool-turn.json"), "")
	if first != later {
		t.Errorf("a later turn of the same Roo Code task got key %s, the first turn %s", later, first)
	}
	other := ConversationID(parseFixture(t, "roo-code-debug-first-turn.json"), "")
	if other == first {
		t.Errorf("a different task got the same key %s", first)
	}

	long := strings.Repeat("You are an agent. ", 4000) // ~72 KB, past the hashed edges
	base := `{"model":"auto","messages":[{"role":"system","content":"` + long + `"},{"role":"user","content":"task A"}]}`
	a := ConversationID(parseBody(t, base), "")
	b := ConversationID(parseBody(t, strings.Replace(base, "task A", "task B", 1)), "")
	c := ConversationID(parseBody(t, strings.Replace(base, "You are an agent. ", "You are an Agent! ", 1)), "")
	if a == b || a == c {
		t.Errorf("different first user message or system prompt start gave the same key: %s %s %s", a, b, c)
	}
	if !strings.HasPrefix(a, "h-") {
		t.Errorf("derived key %q lacks the h- prefix", a)
	}

	req := parseBody(t, `{"model":"auto","conversation_id":"body-id","messages":[{"role":"user","content":"x"}]}`)
	if got := ConversationID(req, "header-id"); got != "body-id" {
		t.Errorf("body conversation_id should win, got %q", got)
	}
	if got := ConversationID(parseBody(t, `{"model":"auto","messages":[{"role":"user","content":"x"}]}`), "header-id"); got != "header-id" {
		t.Errorf("header conversation id should win over the hash, got %q", got)
	}
}
