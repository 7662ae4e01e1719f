package backends_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// refChunkDelta is AppendChunkDelta written with encoding/json: the reference it must agree with.
func refChunkDelta(data []byte) (content string, ok bool, calls []backends.DeltaToolCall) {
	var c struct {
		Choices []struct {
			Index int `json:"index"`
			Delta struct {
				Content   *string `json:"content"`
				ToolCalls []struct {
					Index    int    `json:"index"`
					ID       string `json:"id"`
					Type     string `json:"type"`
					Function struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if json.Unmarshal(data, &c) != nil {
		return "", false, nil
	}
	for _, ch := range c.Choices {
		if ch.Index != 0 {
			continue
		}
		if ch.Delta.Content != nil {
			content += *ch.Delta.Content
			ok = true
		}
		for _, tc := range ch.Delta.ToolCalls {
			calls = append(calls, backends.DeltaToolCall{Index: tc.Index, ID: tc.ID, Type: tc.Type, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
		}
	}
	return content, ok, calls
}

// Every chunk of the recorded NanoGPT streams, and hand-made ones with escapes, unicode,
// several choices, missing or null members and pretty-printing, read the same as with
// encoding/json.
func TestAppendChunkDeltaMatchesEncodingJSON(t *testing.T) {
	chunks := []string{
		`{"choices":[{"index":0,"delta":{"content":"line one\nline \"two\" \u00e9\u2028 \ud83d\ude00 tab\t/\\ \/"}}]}`,
		`{"choices":[{"delta":{"content":"no index member"}}]}`,
		`{"choices":[{"index":1,"delta":{"content":"second choice"}},{"index":0,"delta":{"content":"first"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"read_file","arguments":""}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\":\"src/a.go\"}"}},{"index":1,"id":"call_2","function":{"name":"list_files","arguments":"{}"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":""}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"content":""}}]}`,
		`{"choices":[{"index":0,"delta":{}}],"usage":null}`,
		`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`,
		`{"choices":null}`,
		`{"id":"x","object":"chat.completion.chunk"}`,
		"{ \"choices\" : [ { \"index\" : 0 , \"delta\" : { \"content\" : \"pretty\" } } ] }",
		`{"choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"think","reasoning_content":"think"}}]}`,
	}
	for _, name := range []string{"nanogpt/chat-stream-text.sse", "nanogpt/chat-stream-tool-call.sse"} {
		r := backends.NewSSEReader(io.NopCloser(bytes.NewReader(readFixture(t, name))))
		for {
			ev, err := r.Next()
			if err != nil || ev.Done {
				break
			}
			if len(ev.Data) > 0 {
				chunks = append(chunks, string(ev.Data))
			}
		}
	}
	if len(chunks) < 20 {
		t.Fatalf("only %d chunks: the fixtures were not read", len(chunks))
	}
	for _, c := range chunks {
		// Appended after text already there, as the answer's follower does.
		gb, gok, gcalls := backends.AppendChunkDelta([]byte("before|"), []byte(c))
		wc, wok, wcalls := refChunkDelta([]byte(c))
		gc, cut := strings.CutPrefix(string(gb), "before|")
		if !cut || gc != wc || gok != wok || !cmp.Equal(gcalls, wcalls) {
			t.Errorf("chunk %s\n got %q %v %+v\nwant %q %v %+v", c, gc, gok, gcalls, wc, wok, wcalls)
		}
	}
}

// A JSON answer's content and tool calls come from choice 0's message, as sent.
func TestAnswerChoice(t *testing.T) {
	tests := []struct {
		body              string
		content, toolCall string
		ok                bool
	}{
		{body: string(readFixture(t, "nanogpt/chat-completion.json")), ok: true},
		{body: `{"choices":[{"index":1,"message":{"content":"b"}},{"index":0,"message":{"content":"a","tool_calls":[{"id":"c"}]}}]}`,
			content: `"a"`, toolCall: `[{"id":"c"}]`, ok: true},
		{body: `{"choices":[{"message":{"content":[{"type":"text","text":"parts"}]}}]}`, content: `[{"type":"text","text":"parts"}]`, ok: true},
		{body: `{"choices":[]}`, ok: true},
		{body: `{"choices":[{"message":`, ok: false},
		{body: `not json`, ok: false},
	}
	for _, tt := range tests {
		c, tc, ok := backends.AnswerChoice([]byte(tt.body))
		if tt.content == "" && tt.ok && len(tt.body) > 200 { // the fixture: compare with encoding/json
			var ref struct {
				Choices []struct {
					Message struct {
						Content   json.RawMessage `json:"content"`
						ToolCalls json.RawMessage `json:"tool_calls"`
					} `json:"message"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(tt.body), &ref); err != nil || len(ref.Choices) == 0 {
				t.Fatalf("fixture: %v", err)
			}
			tt.content, tt.toolCall = string(ref.Choices[0].Message.Content), string(ref.Choices[0].Message.ToolCalls)
		}
		if string(c) != tt.content || string(tc) != tt.toolCall || ok != tt.ok {
			t.Errorf("AnswerChoice(%.60s) = %s, %s, %v; want %s, %s, %v", tt.body, c, tc, ok, tt.content, tt.toolCall, tt.ok)
		}
	}
}

// TextLiterals reads the same literals as a walk with the validating splitters, over every
// message of every client fixture and hand-made part arrays.
func TestTextLiteralsMatchesSplitters(t *testing.T) {
	ref := func(content json.RawMessage) []json.RawMessage {
		if len(content) == 0 {
			return nil
		}
		if content[0] == '"' {
			return []json.RawMessage{content}
		}
		parts, err := backends.SplitArray(content)
		if err != nil {
			return nil
		}
		var out []json.RawMessage
		for _, p := range parts {
			fs, err := backends.SplitObject(p)
			if err != nil {
				continue
			}
			if typ := backends.Lookup(fs, "type"); len(typ) > 0 && typ[0] == '"' && string(typ) != `"text"` {
				continue
			}
			if t := backends.Lookup(fs, "text"); len(t) >= 2 && t[0] == '"' {
				out = append(out, t)
			}
		}
		return out
	}
	contents := []json.RawMessage{
		json.RawMessage(`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"text":"no type"},{"type":"text","text":null},"bare",{"t\u0065xt":"escaped key","type":"text"}]`),
		json.RawMessage(`[ ]`), json.RawMessage(`null`), json.RawMessage(`"plain"`),
	}
	entries, err := os.ReadDir(filepath.Join("..", "testdata", "clients"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		req, err := backends.ParseChatRequest(readFixture(t, "clients/"+e.Name()))
		if err != nil {
			continue // the fixtures of bad requests
		}
		for _, m := range req.Messages {
			contents = append(contents, m.Content)
		}
	}
	if len(contents) < 20 {
		t.Fatalf("only %d contents: the fixtures were not read", len(contents))
	}
	for _, c := range contents {
		if got, want := backends.TextLiterals(c), ref(c); !cmp.Equal(got, want) {
			t.Errorf("TextLiterals(%.80s) = %q, want %q", c, got, want)
		}
	}
}
