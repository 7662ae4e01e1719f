package backends

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

var testSlot = NewMemoSlot()

// memoBody is a request whose system prompt (over validMin bytes) is unique to the test
// run: the validation cache is shared by the whole package.
func memoBody(t *testing.T, prompt string) []byte {
	t.Helper()
	p, _ := json.Marshal(prompt + strings.Repeat(" Follow the rules.", 20))
	return []byte(`{"model":"m","messages":[{"role":"system","content":` + string(p) + `},{"role":"user","content":"hi"}]}`)
}

func mustParseReq(t *testing.T, body []byte) *ChatRequest {
	t.Helper()
	r, err := ParseChatRequest(bytes.Clone(body)) // each request has its own copy of the bytes
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A memo belongs to a message's bytes: it is kept from the request whose bytes the
// validation cache keeps on, read by every later request with the same bytes, and never by
// a message with other bytes or one a stage changed.
func TestMemoFollowsTheBytes(t *testing.T) {
	prompt := fmt.Sprintf("You are the %s agent of %d.", t.Name(), time.Now().UnixNano())
	body := memoBody(t, prompt)

	first := mustParseReq(t, body) // first sighting: the cache does not keep the bytes yet
	first.Messages[0].SetMemo(testSlot, "first")
	if v := first.Messages[0].Memo(testSlot); v != nil {
		t.Errorf("memo of bytes seen once = %v, want none", v)
	}
	second := mustParseReq(t, body)
	if v := second.Messages[0].Memo(testSlot); v != nil {
		t.Errorf("memo before any was stored = %v", v)
	}
	second.Messages[0].SetMemo(testSlot, "derived")
	third := mustParseReq(t, body)
	if v := third.Messages[0].Memo(testSlot); v != "derived" {
		t.Errorf("memo of the same bytes in the next request = %v, want derived", v)
	}
	if v := third.Messages[1].Memo(testSlot); v != nil {
		t.Errorf("a short message has memo %v", v)
	}

	other := mustParseReq(t, memoBody(t, prompt+"!"))
	other = mustParseReq(t, memoBody(t, prompt+"!")) // kept now
	if v := other.Messages[0].Memo(testSlot); v != nil {
		t.Errorf("memo of other bytes = %v", v)
	}

	edited := mustParseReq(t, body)
	edited.Messages[0].AppendText("guidance")
	if v := edited.Messages[0].Memo(testSlot); v != nil {
		t.Errorf("memo of a message a stage added to = %v", v)
	}
	edited.Messages[0].SetMemo(testSlot, "wrong")
	if v := mustParseReq(t, body).Messages[0].Memo(testSlot); v != "derived" {
		t.Errorf("an edited message stored a memo for the client's bytes: %v", v)
	}
}

// A stage that replaces a parsed message's content and raw bytes (the prompt optimizer's
// rewrite) leaves a message whose copy and memo follow the new bytes, not the parse of
// the old ones.
func TestReplacedRawIsNotTheParse(t *testing.T) {
	body := memoBody(t, fmt.Sprintf("You are the %s agent of %d.", t.Name(), time.Now().UnixNano()))
	mustParseReq(t, body)
	req := mustParseReq(t, body) // built from the kept parse
	m := &req.Messages[0]
	m.SetMemo(testSlot, "old")
	content := json.RawMessage(`"rewritten"`)
	fs, err := SplitObject(m.Raw)
	if err != nil {
		t.Fatal(err)
	}
	m.Content = content
	m.Raw = JoinObject(SetField(fs, "content", content))
	if v := m.Memo(testSlot); v != nil {
		t.Errorf("replaced message has the old bytes' memo %v", v)
	}
	d := m.Detach()
	if got, want := string(d.JSON()), string(m.Raw); got != want {
		t.Errorf("Detach of a replaced message:\n got %s\nwant %s", got, want)
	}
	if got := d.Text(0); got != "rewritten" {
		t.Errorf("Detach text = %q, want rewritten", got)
	}
}

// A message whose bytes the validation cache keeps is detached onto the cache's own copy
// of them: saving a long conversation copies only its new messages, and the copy still
// shares nothing with the request bodies (each body is overwritten here).
func TestDetachOfKeptBytesUsesTheCachesCopy(t *testing.T) {
	body := memoBody(t, fmt.Sprintf("You are the %s agent of %d.", t.Name(), time.Now().UnixNano()))
	mustParseReq(t, body) // first sighting
	var detached []Message
	for range 2 {
		b := bytes.Clone(body)
		req, err := ParseChatRequest(b)
		if err != nil {
			t.Fatal(err)
		}
		detached = append(detached, req.Messages[0].Detach())
		for i := range b {
			b[i] = 'x'
		}
	}
	want := string(mustParseReq(t, body).Messages[0].Raw)
	for i, d := range detached {
		if got := string(d.JSON()); got != want {
			t.Errorf("detached message %d after its body was overwritten:\n got %s\nwant %s", i, got, want)
		}
		if !strings.HasPrefix(d.Text(0), "You are the ") {
			t.Errorf("detached message %d text %.40q", i, d.Text(0))
		}
	}
	if &detached[0].Raw[0] != &detached[1].Raw[0] {
		t.Errorf("each request's save made its own copy of bytes the cache keeps")
	}
}
