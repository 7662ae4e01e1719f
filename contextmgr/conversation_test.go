package contextmgr

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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

// rooTurns builds turns 1-3 of the task in fixture the way Roo Code and Cline send them
// with prompt caching on: the system prompt as one text part with cache_control, and
// cache_control on the last text part of the last two user messages only, so the first
// user message carries the marker on turns 1 and 2 and loses it on turn 3 (mark false:
// caching off, no markers). grow, when set, is appended to the first user message's last
// text part (a long environment).
func rooTurns(t *testing.T, fixture, grow string, mark bool) [][]byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/clients/" + fixture)
	if err != nil {
		t.Fatal(err)
	}
	var req map[string]any
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	msgs := req["messages"].([]any)
	var base []any
	for _, m := range msgs {
		mm := m.(map[string]any)
		if mm["role"] == "system" && mark {
			mm["content"] = []any{map[string]any{"type": "text", "text": mm["content"], "cache_control": map[string]any{"type": "ephemeral"}}}
		}
		base = append(base, mm)
		if mm["role"] == "user" {
			if parts, ok := mm["content"].([]any); ok && grow != "" {
				last := parts[len(parts)-1].(map[string]any)
				last["text"] = last["text"].(string) + grow
			}
			break // the task's first turn
		}
	}
	user := func(text string) map[string]any {
		return map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": text}}}
	}
	asst := func(text string) map[string]any { return map[string]any{"role": "assistant", "content": text} }
	convs := [][]any{
		base,
		append(append([]any(nil), base...), asst("Reading the file."), user("<feedback>go on</feedback>")),
		append(append([]any(nil), base...), asst("Reading the file."), user("<feedback>go on</feedback>"), asst("Fixed."), user("<feedback>now add a test</feedback>")),
	}
	var out [][]byte
	for _, conv := range convs {
		// A deep copy per turn, then the markers on the last two user messages.
		cb, _ := json.Marshal(conv)
		var ms []any
		_ = json.Unmarshal(cb, &ms)
		marked := 0
		for i := len(ms) - 1; i >= 0 && marked < 2 && mark; i-- {
			m := ms[i].(map[string]any)
			if m["role"] != "user" {
				continue
			}
			parts, ok := m["content"].([]any)
			if !ok {
				continue
			}
			for j := len(parts) - 1; j >= 0; j-- {
				if p := parts[j].(map[string]any); p["type"] == "text" {
					p["cache_control"] = map[string]any{"type": "ephemeral"}
					break
				}
			}
			marked++
		}
		req["messages"] = ms
		rb, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rb)
	}
	return out
}

// With prompt caching, Roo Code and Cline move cache_control markers from turn to turn;
// the conversation key must not move with them (stickiness, history and "similar" search
// all hang on it), also when the first user message is longer than the hashed edges.
func TestConversationIDIgnoresCacheControl(t *testing.T) {
	for _, tc := range []struct{ name, fixture, grow string }{
		{"roo code", "roo-code-code-first-turn.json", ""},
		{"cline", "cline-first-turn.json", ""},
		{"roo code, long environment", "roo-code-code-first-turn.json", strings.Repeat("src/orders/service_\u00e9\"x\".go\n", 2000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			turns := rooTurns(t, tc.fixture, tc.grow, true)
			if !strings.Contains(string(turns[0]), "cache_control") || strings.Count(string(turns[2]), "cache_control") != 3 {
				t.Fatalf("fixture turns do not carry the markers as Roo Code sends them")
			}
			var ids []string
			for _, b := range turns {
				ids = append(ids, ConversationID(parseBody(t, string(b)), ""))
			}
			if ids[0] != ids[1] || ids[1] != ids[2] {
				t.Errorf("conversation key changed between turns: %v", ids)
			}
			// The same task without any marker (caching off) is the same conversation too.
			if plain := ConversationID(parseBody(t, string(rooTurns(t, tc.fixture, tc.grow, false)[2])), ""); plain != ids[0] {
				t.Errorf("the same task without cache_control got key %s, with markers %s", plain, ids[0])
			}
			// A different first request is a different conversation.
			other := strings.Replace(string(turns[2]), "Add pagination", "Add sorting", 1)
			if got := ConversationID(parseBody(t, other), ""); got == ids[0] {
				t.Errorf("a different task got the same key %s", got)
			}
		})
	}
}

// The hashed tail of a long message starts on a whole escape sequence and a whole UTF-8
// sequence wherever the cut falls, so the key is the same whatever the neighbouring bytes.
func TestConversationIDLongTextCut(t *testing.T) {
	for pad := range 8 {
		long := strings.Repeat("x", pad) + strings.Repeat(`é\"\\\u00e9`+"\n", 3000)
		mk := func(long, marker string) string {
			c, _ := json.Marshal(long)
			return `{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":` + string(c) + marker + `}]}]}`
		}
		a := ConversationID(parseBody(t, mk(long, "")), "")
		b := ConversationID(parseBody(t, mk(long, `,"cache_control":{"type":"ephemeral"}`)), "")
		if a != b {
			t.Errorf("pad %d: key changed with a cache_control marker: %s %s", pad, a, b)
		}
		c := ConversationID(parseBody(t, mk(long[:len(long)-2]+"y\n", "")), "")
		if c == a {
			t.Errorf("pad %d: a different end of a long message gave the same key", pad)
		}
	}
}

// legacyConversationID is ConversationID without memos: the key as it was computed
// before, which the memos must not change.
func legacyConversationID(req *backends.ChatRequest) string {
	h := sha256.New()
	for _, want := range []string{"system", "user"} {
		for i := range req.Messages {
			m := &req.Messages[i]
			if m.Role == want || (want == "system" && m.Role == "developer") {
				h.Write([]byte(m.Role))
				h.Write([]byte{0})
				writeText(h, m.Content)
				h.Write([]byte{0})
				break
			}
		}
	}
	return "h-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// Keys come from memos once the same system prompt and first message are seen again, and
// are exactly the keys computed from scratch: for tasks that share a system prompt, for a
// system prompt with other tasks in between, without a system prompt, with a developer
// message, and for a task whose first message follows another system prompt.
func TestConversationIDMemosChangeNoKey(t *testing.T) {
	long := func(s string) string {
		b, _ := json.Marshal(s + strings.Repeat(" Keep the code tidy and tested.", 40) + fmt.Sprint(time.Now().UnixNano()))
		return string(b)
	}
	sysA, sysB, dev := long("You are Roo."), long("You are Cline."), long("Developer rules.")
	task1 := `[{"type":"text","text":` + long("<task>add pagination</task>") + `,"cache_control":{"type":"ephemeral"}}]`
	task2 := long("<task>fix the login bug</task>")
	short := `"hi"`
	msg := func(role, content string) string { return `{"role":"` + role + `","content":` + content + `}` }
	bodies := []string{
		`[` + msg("system", sysA) + `,` + msg("user", task1) + `]`,
		`[` + msg("system", sysA) + `,` + msg("user", task2) + `]`,
		`[` + msg("system", sysB) + `,` + msg("user", task1) + `]`,
		`[` + msg("system", sysA) + `,` + msg("user", task1) + `,` + msg("assistant", `"ok"`) + `,` + msg("user", short) + `]`,
		`[` + msg("user", task1) + `]`,
		`[` + msg("developer", dev) + `,` + msg("user", task2) + `]`,
		`[` + msg("system", sysA) + `]`,
		`[` + msg("system", sysA) + `,` + msg("user", short) + `]`,
	}
	keys := map[string]string{}
	for round := range 4 { // the second sighting keeps the bytes; later rounds read memos
		for i, b := range bodies {
			req := parseBody(t, `{"model":"auto","messages":`+b+`}`)
			got, want := ConversationID(req, ""), legacyConversationID(req)
			if got != want {
				t.Errorf("round %d, body %d: key %s, computed from scratch %s", round, i, got, want)
			}
			if prev, ok := keys[b]; ok && prev != got {
				t.Errorf("round %d, body %d: key changed from %s to %s", round, i, prev, got)
			}
			keys[b] = got
		}
	}
	if keys[bodies[0]] == keys[bodies[1]] || keys[bodies[0]] == keys[bodies[2]] || keys[bodies[0]] == keys[bodies[4]] {
		t.Errorf("different tasks share a key: %v", keys)
	}
	if keys[bodies[0]] != keys[bodies[3]] {
		t.Errorf("a later turn of task 1 got another key")
	}
}
