package backends_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keysOf(fs []backends.Field) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Key
	}
	return out
}

// TestUpstreamBody covers what UpstreamBody must do to a request: replace the model,
// drop the proxy's members, force include_usage for streams only, keep the rest as sent.
func TestUpstreamBody(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"non-stream untouched", `{"model":"auto","messages":[{"role":"user","content":"hi"}],"temperature":0.10}`,
			`{"model":"m1","messages":[{"role":"user","content":"hi"}],"temperature":0.10}`},
		{"owned removed, order kept", `{"role":"debugging","x":1,"model":"auto","conversation_id":"c","messages":[ {"role":"user", "content":"hi"} ],"y":[ 1 ]}`,
			`{"x":1,"model":"m1","messages":[{"role":"user", "content":"hi"}],"y":[ 1 ]}`},
		{"stream without options", `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`,
			`{"model":"m1","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"stream options kept when usage asked", `{"model":"auto","stream_options":{ "include_usage" : true },"messages":[{"role":"user","content":"hi"}],"stream":true}`,
			`{"model":"m1","stream_options":{ "include_usage" : true },"messages":[{"role":"user","content":"hi"}],"stream":true}`},
		{"include_usage false forced on", `{"model":"auto","stream":true,"stream_options":{"include_usage":false,"z":2},"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m1","stream":true,"stream_options":{"include_usage":true,"z":2},"messages":[{"role":"user","content":"hi"}]}`},
		{"stream_options null on a stream", `{"model":"auto","stream":true,"stream_options":null,"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m1","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{"stream false keeps options as sent", `{"model":"auto","stream":false,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m1","stream":false,"stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`},
		{"include_usage in another case is not include_usage", `{"model":"auto","stream":true,"stream_options":{"Include_Usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m1","stream":true,"stream_options":{"Include_Usage":true,"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{"duplicate include_usage all forced", `{"model":"auto","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m1","stream":true,"stream_options":{"include_usage":true,"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`},
		{"escaped member names", `{"mod\u0065l":"auto","messages":[{"role":"user","content":"hi"}],"we\"ird":1,"é":2}`,
			`{"model":"m1","messages":[{"role":"user","content":"hi"}],"we\"ird":1,"é":2}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := backends.ParseChatRequest([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			got := string(r.UpstreamBody("m1"))
			if got != tc.want {
				t.Errorf("UpstreamBody\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestMessageEditsKeepOtherMessagesByteForByte: a stage that appends to the system
// message changes only that message; a parts array keeps every part (and its
// cache_control) byte for byte.
func TestMessageEditsKeepOtherMessagesByteForByte(t *testing.T) {
	in := `{"model":"auto","messages":[{"role":"system","content":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}}],"name":"sys"},{"role":"user","content":"caf\u00e9"},{"role":"system","content":"two"}]}`
	r, err := backends.ParseChatRequest([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	r.Messages[0].AppendText("G1")
	r.Messages[2].PrependText("P \"q\"")
	got := string(r.UpstreamBody("m"))
	want := `{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"S","cache_control":{"type":"ephemeral"}},{"type":"text","text":"G1"}],"name":"sys"},{"role":"user","content":"caf\u00e9"},{"role":"system","content":"P \"q\"\n\ntwo"}]}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if s := r.Messages[0].Text(0); s != "S\nG1" {
		t.Errorf("Text = %q", s)
	}
}

// TestContentText reads string and parts content, cut at a byte limit, never splitting
// an escape.
func TestContentText(t *testing.T) {
	tests := []struct {
		content string
		limit   int
		want    string
	}{
		{`"hello"`, 0, "hello"},
		{`"hello"`, 3, "hel"},
		{`"a\nb\\c"`, 0, "a\nb\\c"},
		{`"ab\\\\cd"`, 3, "ab\\"},
		{`"\u00e9\u00e9\u00e9"`, 2, "é"},
		{`"\u00e9\u00e9\u00e9"`, 3, "é"},
		{`"ééé"`, 3, "é"},
		{`"` + strings.Repeat(`\u00e9`, 50) + `"`, 20, strings.Repeat("é", 10)},
		{`[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"b"}]`, 0, "a\nb"},
		{`[{"type":"text","text":"abc"},{"type":"text","text":"def"}]`, 5, "abc\nd"},
		{`null`, 0, ""},
	}
	for _, tc := range tests {
		if got := backends.ContentText(json.RawMessage(tc.content), tc.limit); got != tc.want {
			t.Errorf("ContentText(%s, %d) = %q, want %q", tc.content, tc.limit, got, tc.want)
		}
	}
}

// TestParseChatRequestFixtures: every agent fixture parses, with the members the proxy
// reads decoded and every member kept in order.
func TestParseChatRequestFixtures(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "clients", "*.json"))
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		r, err := backends.ParseChatRequest(b)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		var want struct {
			Model         string `json:"model"`
			Stream        bool   `json:"stream"`
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
			Messages []struct {
				Role string `json:"role"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(b, &want)
		if r.Model != want.Model || r.Stream != want.Stream || r.IncludeUsage != want.StreamOptions.IncludeUsage || len(r.Messages) != len(want.Messages) {
			t.Errorf("%s: parsed model %q stream %v usage %v messages %d", f, r.Model, r.Stream, r.IncludeUsage, len(r.Messages))
		}
		for i, m := range r.Messages {
			if m.Role != want.Messages[i].Role {
				t.Errorf("%s: message %d role %q", f, i, m.Role)
			}
		}
	}
}

// TestSplitObjectAgreesWithEncodingJSON on tricky inputs: accepted exactly when
// encoding/json accepts an object with valid UTF-8.
func TestSplitObjectAgreesWithEncodingJSON(t *testing.T) {
	inputs := []string{
		`{}`, ` { } `, `{"a":1,}`, `{"a":01}`, `{"a":-0.0e+1}`, `{"a":1.}`, `{"a":.5}`, `{"a":"\u12"}`,
		`{"a":"\ud800"}`, `{"a":"\x"}`, "{\"a\":\"\t\"}", `{"a":tru}`, `{"a":[1,2,]}`, `{"a" 1}`, `{"a":1}}`,
		`{"a":{"b":[{"c":null}]}}`, "\ufeff{}", `{"a":1} x`, `{"a":"` + strings.Repeat("x", 70000) + `"}`,
		strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100),
	}
	for _, in := range inputs {
		_, err := backends.SplitObject([]byte(in))
		want := json.Valid([]byte(in)) && utf8.ValidString(in)
		if (err == nil) != want {
			t.Errorf("SplitObject(%.60q): err=%v, encoding/json valid=%v", in, err, want)
		}
	}
}

// TestRequestErrorsAreRequestErrors: decoding failures are *RequestError (a 400), never
// another error type.
func TestRequestErrorsAreRequestErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `{"model":"a"}`, `{"model":"a","messages":null}`, `{"model":"a","messages":[null]}`, `{"model":"a","messages":[{"role":null}]}`} {
		_, err := backends.ParseChatRequest([]byte(in))
		var re *backends.RequestError
		if !errors.As(err, &re) {
			t.Errorf("ParseChatRequest(%q) = %v, want a *RequestError", in, err)
		}
	}
}

// checkUnownedPreserved asserts up carries every member of client other than the
// proxy's own, model, messages and stream_options, byte for byte and in order.
func checkUnownedPreserved(t testing.TB, client, up []byte) {
	t.Helper()
	cf, err := backends.SplitObject(client)
	if err != nil {
		t.Fatal(err)
	}
	uf, err := backends.SplitObject(up)
	if err != nil {
		t.Fatalf("UpstreamBody is not a JSON object: %v\n%.300s", err, up)
	}
	var want, got []backends.Field
	skip := func(k string) bool {
		return k == "role" || k == "conversation_id" || k == "model" || k == "messages" || k == "stream_options"
	}
	for _, f := range cf {
		if !skip(f.Key) {
			want = append(want, f)
		}
	}
	for _, f := range uf {
		if !skip(f.Key) {
			got = append(got, f)
		}
		if f.Key == "role" || f.Key == "conversation_id" {
			t.Fatalf("proxy member %q went upstream", f.Key)
		}
	}
	if !cmp.Equal(keysOf(want), keysOf(got)) {
		t.Fatalf("member order: client %v upstream %v", keysOf(want), keysOf(got))
	}
	for i := range want {
		if !bytes.Equal(want[i].Value, got[i].Value) {
			t.Fatalf("member %q changed: %q -> %q", want[i].Key, want[i].Value, got[i].Value)
		}
	}
}

// TestCloneIsIndependent: a stage editing a clone (e.g. one per fallback attempt) never
// changes the original, also when the original was edited before.
func TestCloneIsIndependent(t *testing.T) {
	r, err := backends.ParseChatRequest([]byte(`{"model":"auto","messages":[{"role":"system","content":"S"},{"role":"user","content":"U"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Messages[0].AppendText("A")
	before := string(r.UpstreamBody("m"))
	c := r.Clone()
	c.Messages[0].AppendText("B")
	c.Set("temperature", json.RawMessage("1"))
	if after := string(r.UpstreamBody("m")); after != before {
		t.Errorf("editing the clone changed the original:\nbefore %s\nafter  %s", before, after)
	}
	if got := string(c.UpstreamBody("m")); !strings.Contains(got, `"S\n\nA\n\nB"`) || !strings.Contains(got, `"temperature":1`) {
		t.Errorf("clone lost its edits: %s", got)
	}
}
