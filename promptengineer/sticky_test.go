package promptengineer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// fakeClock is an injected clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// chatTurn is a request of a client without a mode signal (a plain OpenAI SDK chat): a
// system prompt and the user turns so far.
func chatTurn(users ...string) []byte {
	var sb strings.Builder
	sb.WriteString(`{"model":"auto","messages":[{"role":"system","content":"You are a helpful assistant."}`)
	for i, u := range users {
		if i > 0 {
			sb.WriteString(`,{"role":"assistant","content":"OK."}`)
		}
		sb.WriteString(`,{"role":"user","content":` + string(quoteJSON(u)) + `}`)
	}
	sb.WriteString(`]}`)
	return []byte(sb.String())
}

const (
	askTests = "write table-driven unit tests for the clamp function with coverage of the edge cases"
	askDebug = "it panics with a nil pointer dereference stack trace, debug the crash"
)

// A conversation classified by content keeps its role, and so its guidance block, on
// later turns whose latest message reads like another role; an explicit signal still
// wins for its turn; other conversations are classified on their own.
func TestConversationRoleSticky(t *testing.T) {
	e := newEngineer(t, Config{})
	// The messages classify as different roles on their own.
	if r, _ := e.Resolve(parse(t, chatTurn(askTests)), Input{}); r.Role != roles.Testing || r.Signal != SignalContent {
		t.Fatalf("first message resolves to %s (%s)", r.Role, r.Signal)
	}
	if r, _ := e.Resolve(parse(t, chatTurn(askDebug)), Input{}); r.Role != roles.Debugging {
		t.Fatalf("second message alone resolves to %s", r.Role)
	}

	conv := "h-conv-1"
	prep := func(body []byte, in Input) (Result, string) {
		t.Helper()
		req := parse(t, body)
		res, err := e.Prepare(context.Background(), req, in)
		if err != nil {
			t.Fatal(err)
		}
		return res, req.Messages[0].Text(0)
	}
	r1, sys1 := prep(chatTurn(askTests), Input{ConversationID: conv})
	r2, sys2 := prep(chatTurn(askTests, askDebug), Input{ConversationID: conv})
	if r1.Role != roles.Testing || r2.Role != roles.Testing || r2.Signal != SignalConversation ||
		r2.Reason != "conversation role (first classified as testing)" {
		t.Errorf("turn 2 resolved to %s (%s: %q); want the conversation's testing", r2.Role, r2.Signal, r2.Reason)
	}
	if sys1 != sys2 {
		t.Errorf("the system prompt changed between turns of one conversation:\n%s\n---\n%s", sys1, sys2)
	}

	// Explicit signals win for their turn and do not replace the conversation's role.
	for _, tc := range []struct {
		name string
		body []byte
		in   Input
		want roles.Role
	}{
		{"header", chatTurn(askTests, askDebug), Input{ConversationID: conv, HeaderRole: "architect"}, roles.Architect},
		{"alias", chatTurn(askTests, askDebug), Input{ConversationID: conv, AliasRole: roles.Documentation}, roles.Documentation},
		{"body role", []byte(strings.Replace(string(chatTurn(askTests, askDebug)), `"model":"auto"`, `"model":"auto","role":"research"`, 1)), Input{ConversationID: conv}, roles.Research},
		{"agent mode", chatTurn(askTests, askDebug+"\n<environment_details>\n# Current Mode\n<slug>code</slug>\n</environment_details>"), Input{ConversationID: conv}, roles.Implementation},
		{"back to no signal", chatTurn(askTests, askDebug, "and more"), Input{ConversationID: conv}, roles.Testing},
		{"another conversation", chatTurn(askDebug), Input{ConversationID: "h-conv-2"}, roles.Debugging},
		{"no conversation key", chatTurn(askTests, askDebug), Input{}, roles.Debugging},
	} {
		if r, _ := prep(tc.body, tc.in); r.Role != tc.want {
			t.Errorf("%s: role %s (%s), want %s", tc.name, r.Role, r.Reason, tc.want)
		}
	}
	if n := e.Status().(map[string]any)["conversation_roles"]; n != 2 {
		t.Errorf("status conversation_roles = %v, want 2", n)
	}
}

// The memory is bounded: the least recently used conversation goes first, an entry unused
// for the TTL is forgotten, a negative size turns the memory off, and Resolve (explain)
// only reads it.
func TestConversationRoleBounded(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)}
	e := newEngineer(t, Config{ConversationRoles: 2, ConversationRoleTTL: time.Hour, Now: clock.now})
	later := chatTurn(askTests, askDebug)
	role := func(conv string) roles.Role {
		t.Helper()
		r, err := e.Prepare(context.Background(), parse(t, later), Input{ConversationID: conv})
		if err != nil {
			t.Fatal(err)
		}
		return r.Role
	}
	if r, _ := e.Resolve(parse(t, chatTurn(askTests)), Input{ConversationID: "a"}); r.Role != roles.Testing {
		t.Fatalf("resolve: %s", r.Role)
	}
	if role("a") != roles.Debugging {
		t.Error("Resolve recorded a conversation role")
	}
	for _, c := range []string{"b", "c"} {
		if _, err := e.Prepare(context.Background(), parse(t, chatTurn(askTests)), Input{ConversationID: c}); err != nil {
			t.Fatal(err)
		}
	}
	if got := []roles.Role{role("b"), role("c")}; got[0] != roles.Testing || got[1] != roles.Testing {
		t.Errorf("b, c: %v, want testing", got)
	}
	// a (debugging, least recently used) was pushed out by b and c: its first turn sent
	// again is classified afresh.
	if r, _ := e.Prepare(context.Background(), parse(t, chatTurn(askTests)), Input{ConversationID: "a"}); r.Role != roles.Testing {
		t.Errorf("a still remembered as %s past the bound", r.Role)
	}
	if n := e.Status().(map[string]any)["conversation_roles"]; n != 2 {
		t.Errorf("%v conversations remembered, want the bound 2", n)
	}
	clock.add(59 * time.Minute)
	if role("c") != roles.Testing {
		t.Error("c forgotten before its TTL")
	}
	clock.add(61 * time.Minute)
	if role("c") != roles.Debugging {
		t.Error("c remembered past its TTL")
	}

	off := newEngineer(t, Config{ConversationRoles: -1})
	_, _ = off.Prepare(context.Background(), parse(t, chatTurn(askTests)), Input{ConversationID: "x"})
	if r, _ := off.Prepare(context.Background(), parse(t, later), Input{ConversationID: "x"}); r.Role != roles.Debugging {
		t.Errorf("memory off: role %s, want the turn's own debugging", r.Role)
	}
}

// Helper requests are flagged for the context manager (no past context, not saved);
// the task's own turns are not.
func TestHelperFlag(t *testing.T) {
	e := newEngineer(t, Config{})
	for _, tc := range []struct {
		name string
		body []byte
		want bool
	}{
		{"enhance prompt", chatTurn("Generate an enhanced version of this prompt (reply with only the enhanced prompt):\n\nfix the login bug"), true},
		{"commit message", chatTurn("Write a concise git commit message for these changes:\n\ndiff --git a/x b/x"), true},
		{"context condensing", fixture(t, "roo-code-condense.json"), true},
		{"roo code task", fixture(t, "roo-code-code-first-turn.json"), false},
		{"plain chat", chatTurn(askTests), false},
	} {
		res, err := e.Prepare(context.Background(), parse(t, tc.body), Input{ConversationID: "h-" + tc.name})
		if err != nil {
			t.Fatal(err)
		}
		if res.Helper != tc.want {
			t.Errorf("%s: Helper = %v (%s), want %v", tc.name, res.Helper, res.Reason, tc.want)
		}
	}
}
