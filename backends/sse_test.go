package backends_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

type readResult struct {
	Raw       string
	Done      bool
	UsageOnly bool
	Content   bool
	Usage     *backends.Usage
}

// readAll reads every event of body; it returns the events and the final error.
func readAll(body io.Reader, transform func([]byte) []byte) ([]readResult, error) {
	sr := backends.NewSSEReader(io.NopCloser(body))
	sr.Transform = transform
	var out []readResult
	for {
		ev, err := sr.Next()
		if err != nil {
			return out, err
		}
		out = append(out, readResult{Raw: string(ev.Raw), Done: ev.Done, UsageOnly: ev.UsageOnly, Content: ev.Content, Usage: ev.Usage})
	}
}

// TestSSEReaderReturnsEventsByteForByte: each event comes back exactly as sent, with
// what the proxy needs to know of it, for framings seen in the wild.
func TestSSEReaderReturnsEventsByteForByte(t *testing.T) {
	role := `data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`
	text := `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}`
	tool := `data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]}}]}`
	usage := `data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	finishUsage := `data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":5,"total_tokens":9}}`
	huge := `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 3<<20) + `"}}]}`
	tests := []struct {
		name string
		in   string
		want []readResult
	}{
		{"lf", role + "\n\n" + text + "\n\n" + "data: [DONE]\n\n", []readResult{
			{Raw: role + "\n\n"}, {Raw: text + "\n\n", Content: true}, {Raw: "data: [DONE]\n\n", Done: true}}},
		{"crlf and comments", ": ping\r\n\r\n" + text + "\r\n\r\n" + "data: [DONE]\r\n\r\n", []readResult{
			{Raw: ": ping\r\n\r\n"}, {Raw: text + "\r\n\r\n", Content: true}, {Raw: "data: [DONE]\r\n\r\n", Done: true}}},
		{"event and id lines", "event: message\nid: 1\n" + tool + "\n\ndata: [DONE]\n\n", []readResult{
			{Raw: "event: message\nid: 1\n" + tool + "\n\n", Content: true}, {Raw: "data: [DONE]\n\n", Done: true}}},
		{"stray blank lines", "\n\n" + text + "\n\n\n\ndata: [DONE]\n\n", []readResult{
			{Raw: text + "\n\n", Content: true}, {Raw: "data: [DONE]\n\n", Done: true}}},
		{"usage chunks", usage + "\n\n" + finishUsage + "\n\ndata:[DONE]\n\n", []readResult{
			{Raw: usage + "\n\n", UsageOnly: true, Usage: &backends.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}},
			{Raw: finishUsage + "\n\n", Usage: &backends.Usage{PromptTokens: 4, CompletionTokens: 5, TotalTokens: 9}},
			{Raw: "data:[DONE]\n\n", Done: true}}},
		{"3 MiB line", huge + "\n\ndata: [DONE]\n\n", []readResult{
			{Raw: huge + "\n\n", Content: true}, {Raw: "data: [DONE]\n\n", Done: true}}},
		{"done without blank line", text + "\n\ndata: [DONE]", []readResult{
			{Raw: text + "\n\n", Content: true}, {Raw: "data: [DONE]\n\n", Done: true}}},
	}
	for _, tc := range tests {
		for _, oneByte := range []bool{false, true} {
			name := tc.name
			if oneByte {
				name += "/one-byte-reads"
			}
			t.Run(name, func(t *testing.T) {
				var r io.Reader = strings.NewReader(tc.in)
				if oneByte {
					if len(tc.in) > 1<<20 {
						t.Skip("too slow byte by byte")
					}
					r = iotest.OneByteReader(r)
				}
				got, err := readAll(r, nil)
				if !errors.Is(err, io.EOF) {
					t.Fatalf("final error %v, want io.EOF", err)
				}
				if d := cmp.Diff(tc.want, got); d != "" {
					t.Errorf("events (-want +got):\n%.2000s", d)
				}
			})
		}
	}
}

// TestSSEReaderReportsBrokenStreams: a stream that ends without [DONE], breaks off, or
// carries a chunk that is not JSON is an error, never a clean end.
func TestSSEReaderReportsBrokenStreams(t *testing.T) {
	text := `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}` + "\n\n"
	tests := []struct {
		name   string
		body   io.Reader
		events int
		want   string
	}{
		{"eof without done", strings.NewReader(text), 1, "before [DONE]"},
		{"eof mid event", strings.NewReader(text + `data: {"choices":[`), 1, "malformed"},
		{"connection reset", io.MultiReader(strings.NewReader(text), iotest.ErrReader(errors.New("connection reset by peer"))), 1, "connection reset"},
		{"malformed chunk", strings.NewReader(text + "data: {not json}\n\ndata: [DONE]\n\n"), 1, "malformed"},
		{"empty body", strings.NewReader(""), 0, "before [DONE]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.body, nil)
			if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			if len(got) != tc.events {
				t.Errorf("%d events before the error, want %d", len(got), tc.events)
			}
		})
	}
}

// TestSSEReaderTransformKeepsFraming: a transformed payload is spliced into the event, so
// its other lines and line endings stay as sent.
func TestSSEReaderTransformKeepsFraming(t *testing.T) {
	in := "id: 9\r\ndata: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n"
	got, err := readAll(strings.NewReader(in), func(d []byte) []byte {
		return bytes.Replace(d, []byte("1"), []byte("22"), 1)
	})
	if !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	want := []readResult{{Raw: "id: 9\r\ndata: {\"a\":22}\r\n\r\n"}, {Raw: "data: [DONE]\r\n\r\n", Done: true}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

// TestSSEReaderFindsOutput: Content marks chunks with output, also pretty-printed ones,
// and not chunks whose output members are empty or null.
func TestSSEReaderFindsOutput(t *testing.T) {
	tests := []struct {
		data string
		want bool
	}{
		{`{"choices":[{"delta":{"content":"x"}}]}`, true},
		{`{"choices":[{"delta":{"content" : "x"}}]}`, true},
		{`{ "choices" : [ { "delta" : { "content" :	"x" } } ] }`, true},
		{`{"choices":[{"delta":{"role":"assistant","content":""}}]}`, false},
		{`{"choices":[{"delta":{"content":null,"tool_calls":null,"reasoning":null}}]}`, false},
		{`{"choices":[{"delta":{"tool_calls":[]}}]}`, false},
		{`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]}}]}`, true},
		{`{"choices":[{"delta":{"reasoning":"hm"}}]}`, true},
		{`{"choices":[{"delta":{"reasoning_content":"hm"}}]}`, true},
		{`{"choices":[{"delta":{"refusal":"no"}}]}`, true},
		{`{"choices":[{"delta":{"content":"say \"content\":\"\""}}]}`, true},
		{`{"choices":[],"usage":{"prompt_tokens":1}}`, false},
	}
	for _, tc := range tests {
		got, err := readAll(strings.NewReader("data: "+tc.data+"\n\ndata: [DONE]\n\n"), nil)
		if err != io.EOF || len(got) != 2 {
			t.Fatalf("%s: %v", tc.data, err)
		}
		if got[0].Content != tc.want {
			t.Errorf("Content(%s) = %v, want %v", tc.data, got[0].Content, tc.want)
		}
	}
}

// TestSSEReaderAfterClose: Next after Close is an error (never a read from a recycled
// buffer), Close twice is fine, and a new reader starts clean.
func TestSSEReaderAfterClose(t *testing.T) {
	in := "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n"
	sr := backends.NewSSEReader(io.NopCloser(strings.NewReader(in)))
	if ev, err := sr.Next(); err != nil || string(ev.Raw) != "data: {\"a\":1}\n\n" {
		t.Fatalf("first event %q %v", ev.Raw, err)
	}
	_ = sr.Close()
	_ = sr.Close()
	if _, err := sr.Next(); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Next after Close = %v, want an error", err)
	}
	sr2 := backends.NewSSEReader(io.NopCloser(strings.NewReader("data: {\"c\":3}\n\n")))
	defer sr2.Close()
	if ev, err := sr2.Next(); err != nil || string(ev.Raw) != "data: {\"c\":3}\n\n" {
		t.Errorf("new reader's first event %q %v", ev.Raw, err)
	}
}

// TestInspectChunkUsage: usage is read from any chunk; a chunk without choices (absent,
// null or []) is usage-only and is withheld from clients that did not ask.
func TestInspectChunkUsage(t *testing.T) {
	u := &backends.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3}
	tests := []struct {
		data      string
		usage     *backends.Usage
		usageOnly bool
	}{
		{`{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, u, true},
		{`{"choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"prompt_tokens_details":{"cached_tokens":1}}}`, u, true},
		{`{"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, u, true},
		{`{"choices":null,"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, u, true},
		{`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, u, false},
		{`{"choices":[{"index":0,"delta":{"content":"the \"usage\": field"}}]}`, nil, false},
		{`{"choices":[],"usage":null}`, nil, false},
		{`{"choices":[],"usage":{"prompt_tokens":"many"}}`, nil, false},
		{`{"choices":{},"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, nil, false},
	}
	for _, tc := range tests {
		ev := backends.Event{Data: []byte(tc.data)}
		backends.InspectChunk(&ev)
		if !cmp.Equal(ev.Usage, tc.usage) || ev.UsageOnly != tc.usageOnly {
			t.Errorf("InspectChunk(%s): usage %+v only %v, want %+v %v", tc.data, ev.Usage, ev.UsageOnly, tc.usage, tc.usageOnly)
		}
	}
}
