package backends_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// FuzzParseChatRequest checks the request decoder on any input. Seeds: the committed
// corpus in testdata/fuzz/FuzzParseChatRequest (agent fixtures and tricky inputs).
// Invariants: it never panics; it accepts only valid JSON, and an object that
// encoding/json accepts (with valid UTF-8) is never refused as unparseable; when it
// accepts, UpstreamBody is valid JSON, drops the proxy's members and keeps every other
// member byte for byte, also after a stage edits the system message.
func FuzzParseChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := backends.ParseChatRequest(body)
		var re *backends.RequestError
		if err != nil && !errors.As(err, &re) {
			t.Fatalf("error is not a *RequestError: %T %v", err, err)
		}
		validObject := json.Valid(body) && utf8.Valid(body) && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("{"))
		parseErr := err != nil && strings.HasPrefix(re.Message, "We could not parse the JSON body")
		if validObject && parseErr {
			t.Fatalf("valid JSON object refused as unparseable: %v", err)
		}
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON")
		}
		if r.Model == "" || len(r.Messages) == 0 {
			t.Fatalf("accepted a request without model or messages")
		}
		// Each message is exactly the client's element, with role and content read right.
		var doc struct {
			Messages []json.RawMessage `json:"messages"`
		}
		if err := json.Unmarshal(body, &doc); err == nil && len(doc.Messages) == len(r.Messages) {
			for i, m := range r.Messages {
				var members map[string]json.RawMessage // exact member names, last one wins
				_ = json.Unmarshal(doc.Messages[i], &members)
				var want struct {
					Role    string
					Content json.RawMessage
				}
				_ = json.Unmarshal(members["role"], &want.Role)
				if c := members["content"]; string(c) != "null" {
					want.Content = c
				}
				if !bytes.Equal(m.Raw, doc.Messages[i]) || m.Role != want.Role || !bytes.Equal(m.Content, want.Content) {
					t.Fatalf("message %d: raw %q role %q content %q; encoding/json: %q %q %q", i, m.Raw, m.Role, m.Content, doc.Messages[i], want.Role, want.Content)
				}
			}
		}
		for _, model := range []string{"m", `we"ird/<model>`} {
			up := r.UpstreamBody(model)
			if !json.Valid(up) {
				t.Fatalf("UpstreamBody is not valid JSON: %.500q", up)
			}
			checkUnownedPreserved(t, body, up)
			// Decode by exact member names (encoding/json's struct matching ignores case).
			var members map[string]json.RawMessage
			if err := json.Unmarshal(up, &members); err != nil {
				t.Fatalf("UpstreamBody: %v", err)
			}
			var got struct {
				Model    string
				Messages []json.RawMessage
				SO       map[string]json.RawMessage
			}
			if json.Unmarshal(members["model"], &got.Model) != nil || json.Unmarshal(members["messages"], &got.Messages) != nil {
				t.Fatalf("UpstreamBody model/messages: %.300s", up)
			}
			_ = json.Unmarshal(members["stream_options"], &got.SO)
			if got.Model != model || len(got.Messages) != len(r.Messages) {
				t.Fatalf("UpstreamBody model %q messages %d, want %q %d", got.Model, len(got.Messages), model, len(r.Messages))
			}
			if r.Stream && string(got.SO["include_usage"]) != "true" {
				t.Fatalf("stream without include_usage upstream: %.300s", up)
			}
		}
		// Bytes seen before are validated by comparison and built from the cache's parse and
		// copy (from the third sighting on): the messages and their detached copies, made
		// for the background save, are the client's elements all the same.
		for range 2 {
			again, err := backends.ParseChatRequest(bytes.Clone(body))
			if err != nil || len(again.Messages) != len(r.Messages) {
				t.Fatalf("the same bytes parsed again: %v, %d messages", err, len(again.Messages))
			}
			for i := range again.Messages {
				m, d := &again.Messages[i], again.Messages[i].Detach()
				if !bytes.Equal(m.Raw, r.Messages[i].Raw) || !bytes.Equal(d.JSON(), r.Messages[i].Raw) ||
					d.Role != r.Messages[i].Role || d.Text(0) != r.Messages[i].Text(0) {
					t.Fatalf("message %d parsed again or detached: %q / %q, want %q", i, m.Raw, d.JSON(), r.Messages[i].Raw)
				}
			}
		}
		// What the stages do to a request must keep it valid.
		_ = r.Messages[0].Text(7)
		c := r.Clone()
		c.Messages[0].AppendText("guidance \"x\"\n")
		c.Messages = append([]backends.Message{backends.NewMessage("system", "ctx")}, c.Messages...)
		up := c.UpstreamBody("m")
		if !json.Valid(up) {
			t.Fatalf("edited UpstreamBody is not valid JSON: %.500q", up)
		}
		checkUnownedPreserved(t, body, up)
		if orig := r.UpstreamBody("m"); !json.Valid(orig) {
			t.Fatalf("editing a clone broke the original")
		}
	})
}

// FuzzSSEReader: on any upstream bytes the reader never panics or loops, every event it
// returns ends with a blank line and, unless it is a comment or [DONE], carries valid
// JSON; the events are the input's bytes in order (apart from stray blank lines and a
// missing final blank line).
func FuzzSSEReader(f *testing.F) {
	f.Add([]byte(string(readFixture(f, "nanogpt/chat-stream-tool-call.sse"))))
	f.Add([]byte("data: {\"a\":1}\r\n\r\n: c\n\nid: 1\ndata: [1,\ndata: 2]\n\ndata: [DONE]"))
	f.Add([]byte("\n\n\ndata:{}\n\nevent: x\n\ndata: nope\n\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		sr := backends.NewSSEReader(io.NopCloser(bytes.NewReader(in)))
		var all []byte
		for n := 0; ; n++ {
			if n > len(in)+1 {
				t.Fatalf("more events than input bytes")
			}
			ev, err := sr.Next()
			if err != nil {
				break
			}
			body, ok := bytes.CutSuffix(ev.Raw, []byte("\n"))
			last := body[bytes.LastIndexByte(body, '\n')+1:]
			if !ok || !bytes.Contains(body, []byte("\n")) || len(bytes.Trim(last, "\r")) != 0 {
				t.Fatalf("event does not end with a blank line: %q", ev.Raw)
			}
			if ev.Data != nil && !json.Valid(ev.Data) {
				t.Fatalf("event data is not JSON: %q", ev.Data)
			}
			all = append(all, ev.Raw...)
		}
		strip := func(b []byte) []byte {
			return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r"), nil), []byte("\n"), nil)
		}
		if got, want := strip(all), strip(in); !bytes.HasPrefix(want, got) {
			t.Fatalf("events are not the input's bytes in order:\n got %q\nfrom %q", all, in)
		}
	})
}
