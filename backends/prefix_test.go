package backends

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// stringPrefix returns exactly the first limit decoded bytes (rune-safe) wherever the raw
// cut falls: inside runs of escaped backslashes, \n escapes, \u escapes or multi-byte runes.
func TestStringPrefixAtEveryCut(t *testing.T) {
	text := strings.Repeat(`a\b\\c"d`+"\n\té€😀\u0001", 40)
	raw, _ := json.Marshal(text)
	for limit := 1; limit < 200; limit++ {
		got := stringPrefix(raw, limit)
		want := text
		if len(want) > limit {
			i := limit
			for i > 0 && !utf8.RuneStart(want[i]) {
				i--
			}
			want = want[:i]
		}
		if got != want {
			t.Fatalf("limit %d: got %q, want %q", limit, got, want)
		}
	}
}

// The hand-written unescaper agrees with encoding/json on \u escapes, surrogate pairs and
// lone surrogates, for every limit.
func TestStringPrefixMatchesEncodingJSON(t *testing.T) {
	for _, raw := range []string{
		`"plain ascii only"`,
		`"\u00e9t\u00e9 \ud83d\ude00 smile \u0041\u005c\u0022 end"`,
		`"lone \ud83d surrogate and \ude00 low one"`,
		`"tab\there\r\nnew\/slash\\back\"quote\b\f"`,
		`"mixed é and \u20ac and 😀"`,
	} {
		var full string
		if err := json.Unmarshal([]byte(raw), &full); err != nil {
			t.Fatal(err)
		}
		for limit := 0; limit <= len(full)+2; limit++ {
			want := full
			if limit > 0 && len(want) > limit {
				i := limit
				for i > 0 && !utf8.RuneStart(want[i]) {
					i--
				}
				want = want[:i]
			}
			if got := stringPrefix([]byte(raw), limit); got != want {
				t.Fatalf("%s limit %d: got %q, want %q", raw, limit, got, want)
			}
		}
	}
}

// A detached message keeps its bytes when the request body it came from is reused.
func TestMessageDetach(t *testing.T) {
	body := []byte(`{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"hi","cache_control":{"type":"ephemeral"}}],"name":"x"}]}`)
	req, err := ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	want := string(req.Messages[0].JSON())
	d := req.Messages[0].Detach()
	edited := req.Messages[0]
	edited.AppendText("guidance")
	e := edited.Detach()
	for i := range body {
		body[i] = 'X'
	}
	if got := string(d.JSON()); got != want || d.Role != "user" || d.Text(0) != "hi" || string(d.Get("name")) != `"x"` {
		t.Errorf("detached message changed with the body: %s (role %q)", got, d.Role)
	}
	if e.Text(0) != "hi\nguidance" || e.Role != "user" {
		t.Errorf("detached edited message = %q", e.Text(0))
	}
}
