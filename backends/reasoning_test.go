package backends

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The implementation addReasoningContent replaced (split and re-join), kept as the
// reference it is held to.
func legacyAddReasoningContent(data []byte, member string) []byte {
	if !bytes.Contains(data, []byte(`"reasoning"`)) {
		return nil
	}
	fields, err := SplitObject(data)
	if err != nil {
		return nil
	}
	return legacyAddReasoningContentFields(fields, member)
}

// legacyAddReasoningContentFields is legacyAddReasoningContent on an answer already split (and so
// validated) by SplitObject.
func legacyAddReasoningContentFields(fields []Field, member string) []byte {
	choices := Lookup(fields, "choices")
	if len(choices) == 0 || choices[0] != '[' {
		return nil
	}
	elems := splitArrayTrusted(choices)
	changed := false
	newChoices := make([]byte, 0, len(choices)+64)
	newChoices = append(newChoices, '[')
	for i, c := range elems {
		if i > 0 {
			newChoices = append(newChoices, ',')
		}
		if len(c) == 0 || c[0] != '{' {
			newChoices = append(newChoices, c...)
			continue
		}
		cf := splitObjectTrusted(c)
		inner := Lookup(cf, member)
		if len(inner) == 0 || inner[0] != '{' {
			newChoices = append(newChoices, c...)
			continue
		}
		df := splitObjectTrusted(inner)
		r := Lookup(df, "reasoning")
		if r == nil || string(r) == "null" || Lookup(df, "reasoning_content") != nil {
			newChoices = append(newChoices, c...)
			continue
		}
		// Insert reasoning_content right after reasoning, keeping the other members' order.
		nd := make([]Field, 0, len(df)+1)
		for _, f := range df {
			nd = append(nd, f)
			if f.Key == "reasoning" {
				nd = append(nd, Field{Key: "reasoning_content", Value: r})
			}
		}
		cf = SetField(cf, member, JoinObject(nd))
		newChoices = appendObject(newChoices, cf)
		changed = true
	}
	if !changed {
		return nil
	}
	newChoices = append(newChoices, ']')
	return JoinObject(SetField(fields, "choices", newChoices))
}

// compact removes the white space between tokens, as the reference's re-join does.
func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return buf.Bytes()
}

// addReasoningContent inserts reasoning_content where the reference did and keeps every
// other byte: on compact answers (what NanoGPT sends) the result is byte for byte the
// reference's; on pretty-printed ones it equals the reference once both are compacted, and
// removing the insertions gives the upstream's bytes back.
func TestAddReasoningContentMatchesSplitAndJoin(t *testing.T) {
	inputs := []struct{ data, member string }{
		{`{"id":"1","choices":[{"index":0,"delta":{"role":"assistant","reasoning":"think \"hard\"","content":""}}]}`, "delta"},
		{`{"choices":[{"index":0,"delta":{"reasoning":"a"}},{"index":1,"delta":{"reasoning":"b","reasoning_content":"b"}},{"index":2,"delta":{"content":"x"}}]}`, "delta"},
		{`{"choices":[{"delta":{"reasoning":null}}]}`, "delta"},
		{`{"choices":[{"delta":{"reasoning":"x","reasoning":"y"}}]}`, "delta"},
		{`{"choices":[{"delta":{"re\u0061soning":"escaped key"}}]}`, "delta"},
		{`{"choices":[1,"s",null,{"delta":"not an object"},{"delta":{"reasoning":{"nested":"value"}}}]}`, "delta"},
		{`{"choices":null,"reasoning":"top level only"}`, "delta"},
		{`{"choices":[{"message":{"role":"assistant","content":"hi","reasoning":"because","tool_calls":[]}}],"usage":{"total_tokens":3}}`, "message"},
		{"{ \"choices\" : [ { \"index\" : 0 , \"message\" : { \"reasoning\" : \"spaced\" , \"content\" : \"x\" } } ] }", "message"},
		{"{\n  \"choices\": [\n    {\"delta\": {\"reasoning\": \"pretty\"}}\n  ]\n}", "delta"},
		{`{"choices":[{"delta":{"content":"no reasoning here"}}]}`, "delta"},
	}
	for _, name := range []string{"nanogpt/chat-stream-text.sse", "nanogpt/chat-stream-tool-call.sse"} {
		raw, err := os.ReadFile(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		r := NewSSEReader(io.NopCloser(bytes.NewReader(raw)))
		for {
			ev, err := r.Next()
			if err != nil || ev.Done {
				break
			}
			if len(ev.Data) > 0 {
				inputs = append(inputs, struct{ data, member string }{string(ev.Data), "delta"})
			}
		}
	}
	answer, err := os.ReadFile(filepath.Join("..", "testdata", "nanogpt", "chat-completion.json"))
	if err != nil {
		t.Fatal(err)
	}
	inputs = append(inputs, struct{ data, member string }{string(answer), "message"})
	changed := 0
	for _, in := range inputs {
		data := []byte(in.data)
		got, want := addReasoningContent(data, in.member), legacyAddReasoningContent(data, in.member)
		if (got == nil) != (want == nil) {
			t.Errorf("%s: changed=%v, reference changed=%v", in.data, got != nil, want != nil)
			continue
		}
		if got == nil {
			continue
		}
		changed++
		if !bytes.Equal(compact(t, got), compact(t, want)) {
			t.Errorf("%s:\n got  %s\nwant %s", in.data, got, want)
		}
		if bytes.Equal(compact(t, data), data) && !bytes.Equal(got, want) {
			t.Errorf("compact input %s: got %s, want the reference's bytes %s", in.data, got, want)
		}
		if back := bytes.ReplaceAll(got, []byte(`,"reasoning_content":`+lookupInserted(got)), nil); !bytes.Equal(back, data) && !bytes.Contains(data, []byte(`"reasoning":"x","reasoning":"y"`)) {
			t.Errorf("%s: other bytes changed: %s", in.data, got)
		}
	}
	if changed < 5 {
		t.Errorf("only %d inputs gained reasoning_content: the cases do not exercise the insertion", changed)
	}
}

// lookupInserted returns the raw value of the first reasoning_content member in b.
func lookupInserted(b []byte) string {
	i := bytes.Index(b, []byte(`"reasoning_content":`))
	if i < 0 {
		return ""
	}
	from := i + len(`"reasoning_content":`)
	return string(b[from:skipTrusted(b, from)])
}

func BenchmarkAddReasoningContent(b *testing.B) {
	answer, err := os.ReadFile(filepath.Join("..", "testdata", "nanogpt", "chat-completion.json"))
	if err != nil {
		b.Fatal(err)
	}
	chunk := []byte(`{"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","reasoning":"Let me look at the file first.","content":""},"finish_reason":null}]}`)
	for _, c := range []struct {
		name string
		fn   func([]byte, string) []byte
	}{{"insert", addReasoningContent}, {"split-join", legacyAddReasoningContent}} {
		b.Run(c.name+"/answer", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.fn(answer, "message")
			}
		})
		b.Run(c.name+"/chunk", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.fn(chunk, "delta")
			}
		})
	}
}
