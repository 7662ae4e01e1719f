package backends

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

// editBodies are the requests the edit tests run on: every client fixture, a 60 KB Roo
// Code request, and hand-written corner cases (parts with cache_control, white space the
// upstream body drops, escaped and duplicate member names, empty and null contents).
func editBodies(t *testing.T) map[string][]byte {
	t.Helper()
	bodies := map[string][]byte{
		"string":      []byte(`{"model":"m","messages":[{"role":"system","content":"You are Roo. <rules>\n\"quoted\" \\ \u00e9 \ud83d\ude00</rules>"},{"role":"user","content":"hi"}]}`),
		"cache parts": []byte(`{"model":"m","messages":[{"role":"system","content":[{"type":"text","text":"You are Cline.","cache_control":{"type":"ephemeral"}},{"type":"text","text":"Rules"}]},{"role":"user","content":[{"type":"text","text":"<task>x</task>"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},{"type":"text","text":"env","cache_control":{"type":"ephemeral"}}]}]}`),
		"white space": []byte("{ \"model\" : \"m\" , \"messages\" : [ { \"role\" : \"system\" ,\n \"content\" : [ {\"type\":\"text\",\"text\":\"S\"} ] , \"name\" : \"n\" } , {\"role\":\"user\", \"content\" : \"u\" } ] }"),
		"escaped key": []byte(`{"model":"m","messages":[{"r\u006fle":"system","cont\u0065nt":"S","x\"y":1},{"role":"user","content":"u"}]}`),
		"dup content": []byte(`{"model":"m","messages":[{"role":"system","content":"first","content":"second"},{"role":"user","content":"u"}]}`),
		"empty":       []byte(`{"model":"m","messages":[{"role":"system","content":""},{"role":"user","content":[]},{"role":"assistant","content":[ ]},{"role":"user","content":null}]}`),
		"no content":  []byte(`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1","content":"ok"}]}`),
		"escapes":     []byte(`{"model":"m","messages":[{"role":"system","content":"a\nb\u0041\u00e9\"\\\/\t\ud83d\ude00\ud800x"},{"role":"user","content":"u"}]}`),
	}
	files, err := filepath.Glob(filepath.Join("..", "testdata", "clients", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no client fixtures: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bodies[filepath.Base(f)] = b
	}
	bodies["roo 60k"] = rooBody(t)
	return bodies
}

// rooBody is the Roo Code fixture with its system prompt grown to about 60 KB.
func rooBody(t testing.TB) []byte {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "clients", "roo-code-code-first-turn.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req map[string]json.RawMessage
	var msgs []map[string]any
	if json.Unmarshal(b, &req) != nil || json.Unmarshal(req["messages"], &msgs) != nil {
		t.Fatal("bad Roo fixture")
	}
	msgs[0]["content"] = msgs[0]["content"].(string) + strings.Repeat("\n\n- Use the provider-native tool-calling mechanism.", 1200)
	req["messages"], _ = json.Marshal(msgs)
	out, _ := json.Marshal(req)
	return out
}

type textEdit struct {
	text    string
	prepend bool
}

// editTexts need escaping of every kind: quotes, backslashes, control characters, HTML
// characters, multi-byte runes and invalid UTF-8 (encoded as U+FFFD).
var editTexts = []string{
	"<role_guidance>\nWrite \"tests\" first; use C:\\path.\n</role_guidance>",
	"tab\there é 😀 \x01 \xff end",
	"",
}

// editSequences are the edits a message gets: the prompt engineer's guidance (append or
// prepend), then the context manager's past context (append).
var editSequences = [][]textEdit{
	{{editTexts[0], false}},
	{{editTexts[0], true}},
	{{editTexts[0], false}, {editTexts[1], false}},
	{{editTexts[0], true}, {editTexts[1], false}},
	{{editTexts[1], false}, {editTexts[0], true}, {editTexts[2], true}, {editTexts[2], false}},
}

// TestEditsMatchEagerEdits: a message edited with AppendText/PrependText reads and goes
// upstream byte for byte as when each edit rebuilt the whole content (legacySetText): the
// upstream body, JSON, ContentJSON, Get("content"), Text at many limits, and the same
// after Detach and after a further edit of a Clone.
func TestEditsMatchEagerEdits(t *testing.T) {
	limits := []int{0, 1, 2, 3, 5, 8, 40, 41, 42, 43, 44, 45, 46, 47, 48, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 100, 200, 600, 1 << 20}
	for name, body := range editBodies(t) {
		for si, seq := range editSequences {
			for mi := range 4 {
				lazy, err := ParseChatRequest(body)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if mi >= len(lazy.Messages) {
					continue
				}
				eager, _ := ParseChatRequest(body)
				for _, e := range seq {
					if e.prepend {
						lazy.Messages[mi].PrependText(e.text)
					} else {
						lazy.Messages[mi].AppendText(e.text)
					}
					legacySetText(&eager.Messages[mi], e.text, e.prepend)
				}
				where := func(what string) string { return fmt.Sprintf("%s, edits %d, message %d: %s", name, si, mi, what) }
				compareEdited(t, where, lazy, eager, mi, limits)

				d, de := lazy.Messages[mi].Detach(), eager.Messages[mi].Detach()
				lazy.Messages[mi], eager.Messages[mi] = d, de
				compareEdited(t, func(w string) string { return where("detached " + w) }, lazy, eager, mi, limits)

				lc, ec := lazy.Clone(), eager.Clone()
				lc.Messages[mi].PrependText("more")
				legacySetText(&ec.Messages[mi], "more", true)
				compareEdited(t, func(w string) string { return where("clone " + w) }, lc, ec, mi, limits)
				compareEdited(t, func(w string) string { return where("original after clone edit " + w) }, lazy, eager, mi, limits)
			}
		}
	}
}

func compareEdited(t *testing.T, where func(string) string, lazy, eager *ChatRequest, mi int, limits []int) {
	t.Helper()
	lm, em := &lazy.Messages[mi], &eager.Messages[mi]
	if got, want := lazy.UpstreamBody("up/model"), eager.UpstreamBody("up/model"); !bytes.Equal(got, want) {
		t.Fatalf("%s\n got %.600q\nwant %.600q", where("upstream body"), got, want)
	}
	if got, want := lm.JSON(), em.JSON(); !bytes.Equal(got, want) {
		t.Fatalf("%s\n got %.300q\nwant %.300q", where("JSON"), got, want)
	}
	if got, want := lm.ContentJSON(), em.Content; !bytes.Equal(got, want) {
		t.Fatalf("%s\n got %.300q\nwant %.300q", where("ContentJSON"), got, want)
	}
	if got, want := lm.Get("content"), em.Get("content"); !bytes.Equal(got, want) {
		t.Fatalf("%s\n got %.300q\nwant %.300q", where("Get content"), got, want)
	}
	if got, want := lm.Get("role"), em.Get("role"); !bytes.Equal(got, want) {
		t.Fatalf("%s got %q want %q", where("Get role"), got, want)
	}
	for _, l := range limits {
		if got, want := lm.Text(l), ContentText(em.Content, l); got != want {
			t.Fatalf("%s\n got %.300q\nwant %.300q", where(fmt.Sprintf("Text(%d)", l)), got, want)
		}
	}
}

// TestEditDoesNotCopyContent: guidance added to a 60 KB system prompt goes upstream as
// the client's own bytes plus the guidance; the prompt is neither copied when the text is
// added nor when the body is written, and readers of a text prefix do not copy it either.
func TestEditDoesNotCopyContent(t *testing.T) {
	body := rooBody(t)
	guidance := strings.Repeat("<role_guidance>Be careful.</role_guidance>", 10)
	req, err := ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if len(req.Messages[0].Content) < 60<<10 {
		t.Fatalf("system prompt is %d bytes, want 60 KB", len(req.Messages[0].Content))
	}
	inBody := func(p []byte) bool {
		if len(p) == 0 {
			return false
		}
		start := uintptr(unsafe.Pointer(unsafe.SliceData(body)))
		at := uintptr(unsafe.Pointer(unsafe.SliceData(p)))
		return at >= start && at < start+uintptr(len(body))
	}
	edit := func() {
		c := req.Clone()
		c.Messages[0].AppendText(guidance)
		c.Messages[0].AppendText("past context")
		_ = c.Messages[0].Text(600)
		copied := 0
		for _, p := range c.UpstreamParts("m") {
			if !inBody(p) {
				copied += len(p)
			}
		}
		if copied > len(guidance)+1024 {
			t.Fatalf("%d bytes of the upstream body are copies, want at most the guidance (%d) and some framing", copied, len(guidance))
		}
	}
	const runs = 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		edit()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > uint64(len(req.Messages[0].Content))/4 {
		t.Errorf("%d bytes allocated per edit and write of a %d byte system prompt, want far less", per, len(req.Messages[0].Content))
	}
}

// TestPartsTextMatchesSplitObject: the text of a parts array, read without splitting each
// part, is what splitting each part with SplitObject gives, at every limit: parts with
// escaped member names, duplicate or nested "text" members, non-string types, non-object
// elements, empty texts, multi-byte runes at the cut, white space.
func TestPartsTextMatchesSplitObject(t *testing.T) {
	contents := []string{
		`[{"type":"text","text":"hello"},{"type":"text","text":"éa"},{"type":"text","text":"b"}]`,
		`[{"t\u0079pe":"text","t\u0065xt":"escaped names"},{"type":"image_url","text":"not text"},{"text":"no type"}]`,
		`[{"type":"text","text":"first","text":"second"},{"type":"text","meta":{"text":"nested"},"text":"outer"}]`,
		`[{"type":5,"text":"number type"},"a string",7,null,[{"text":"in array"}],{"type":"text"},{"type":"text","text":""},{"type":"text","text":"after empty"}]`,
		`[ { "type" : "text" , "text" : "spaced \n\u00e9\ud83d\ude00" , "cache_control" : { "type" : "ephemeral" } } , { "type":"text","text":"z" } ] `,
		`[{"type":"text","text":"😀😀😀"},{"type":"text","text":"日本語のテキスト"},{"type":"te\u0078t","text":"escaped type"}]`,
		`[]`,
	}
	for _, c := range contents {
		m, err := parseMessage(json.RawMessage(`{"role":"user","content":` + c + `}`))
		if err != nil {
			t.Fatal(err)
		}
		for limit := range 40 {
			want := legacyPartsText(json.RawMessage(c), limit)
			if got := ContentText(json.RawMessage(c), limit); got != want {
				t.Errorf("ContentText(%s, %d) = %q, want %q", c, limit, got, want)
			}
			if got := m.Text(limit); got != want {
				t.Errorf("Message.Text(%d) of %s = %q, want %q", limit, c, got, want)
			}
		}
	}
	// Every message of every client request, at limits around its parts' ends.
	for name, body := range editBodies(t) {
		r, err := ParseChatRequest(body)
		if err != nil {
			t.Fatal(err)
		}
		for i := range r.Messages {
			m := &r.Messages[i]
			if len(m.Content) == 0 || m.Content[0] != '[' {
				continue
			}
			full := legacyPartsText(m.Content, 0)
			for _, limit := range []int{0, 1, 200, 600, len(full) - 1, len(full), len(full) + 1} {
				if got, want := m.Text(limit), legacyPartsText(m.Content, limit); got != want {
					t.Errorf("%s message %d: Text(%d) = %.100q, want %.100q", name, i, limit, got, want)
				}
			}
		}
	}
}

// FuzzEditsMatchEagerEdits: on any request the parser accepts, guidance appended or
// prepended to any message reads and goes upstream exactly as with the eager edit.
func FuzzEditsMatchEagerEdits(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "clients", "*.json"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b, uint8(0), "guidance", true)
		}
	}
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}]}]}`), uint8(0), "x\"y", false)
	f.Fuzz(func(t *testing.T, body []byte, which uint8, text string, prepend bool) {
		lazy, err := ParseChatRequest(body)
		if err != nil {
			return
		}
		eager, _ := ParseChatRequest(body)
		mi := int(which) % len(lazy.Messages)
		for _, p := range []bool{prepend, !prepend, prepend} {
			if p {
				lazy.Messages[mi].PrependText(text)
			} else {
				lazy.Messages[mi].AppendText(text)
			}
			legacySetText(&eager.Messages[mi], text, p)
			compareEdited(t, func(w string) string { return w }, lazy, eager, mi, []int{0, 1, 7, 100})
		}
	})
}
