package backends

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// skipStringByteByByte is the string scanner without the word-at-a-time jump: every byte
// looked at in turn. skipString must agree with it exactly, error offsets included.
func skipStringByteByByte(b []byte, i int) (int, error) {
	start := i
	i++
	for i < len(b) {
		var err error
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			i, err = skipEscape(b, i, start)
		case c < 0x20:
			return 0, fmt.Errorf("%w: control character in string at offset %d", errSyntax, i)
		case c < utf8.RuneSelf:
			i++
		default:
			i, err = skipRune(b, i)
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("%w: unterminated string at offset %d", errSyntax, start)
}

// trickyPieces are what string bodies are made of in the differential tests: escapes of
// every kind (good and bad, runs of them), multi-byte runes, invalid UTF-8 (stray
// continuation bytes, truncated runes, overlong forms, encoded surrogates), control
// characters and quotes.
var trickyPieces = []string{
	"a", "plain text ", "~", "\x7f", " ",
	`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\n\n`, `\\\\`, `\\\"`,
	`\u00e9`, `\u00E9`, `\ud83d\ude00`, `\ud800`, `\u0000`, `\u12`, `\u12g4`, `\x`, `\'`, `\`, `\u`,
	"é", "€", "😀", "日本語", "é😀€",
	"\xf0\x9f\x98", "\xe2\x82", "\xc3", "\x80", "\xbf", "\xff", "\xfe", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80",
	"\x00", "\x01", "\x1f", "\t", "\n",
	`"`,
}

// checkSkipString compares skipString on s with the byte-by-byte scan and with
// encoding/json (which accepts invalid UTF-8 that the proxy rejects).
func checkSkipString(t *testing.T, s string) {
	t.Helper()
	b := []byte(s)
	end, err := skipString(b, 0)
	wantEnd, wantErr := skipStringByteByByte(b, 0)
	if end != wantEnd || fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("skipString(%q) = %d, %v; byte by byte: %d, %v", s, end, err, wantEnd, wantErr)
	}
	whole := err == nil && end == len(b)
	// json.Valid also allows white space after the string: ending in '"' rules it out.
	if want := json.Valid(b) && utf8.Valid(b) && b[len(b)-1] == '"'; whole != want {
		t.Fatalf("skipString(%q) accepts the whole string: %v; encoding/json and utf8.Valid: %v", s, whole, want)
	}
}

// TestSkipStringMatchesEncodingJSON: on strings made of tricky pieces, placed at every
// offset of an 8-byte word and across word boundaries, skipString ends (or fails, with
// the same message) exactly where the byte-by-byte scan does, and accepts exactly the
// strings that encoding/json accepts and that are valid UTF-8.
func TestSkipStringMatchesEncodingJSON(t *testing.T) {
	for pad := range 17 {
		p := strings.Repeat("x", pad)
		for _, a := range trickyPieces {
			for _, b := range trickyPieces {
				checkSkipString(t, `"`+p+a+b+`"`)
				checkSkipString(t, `"`+p+a+"0123456789"+b+`"`)
				checkSkipString(t, `"`+p+a+b) // unterminated
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	for range 100_000 {
		var sb strings.Builder
		sb.WriteByte('"')
		for n := r.IntN(12); n > 0; n-- {
			if r.IntN(3) == 0 {
				sb.WriteString(strings.Repeat("y", r.IntN(20)))
			}
			sb.WriteString(trickyPieces[r.IntN(len(trickyPieces))])
		}
		if r.IntN(8) != 0 {
			sb.WriteByte('"')
		}
		checkSkipString(t, sb.String())
	}
}

// FuzzSkipString: on any bytes, skipString agrees with the byte-by-byte scan and with
// encoding/json plus utf8.Valid.
func FuzzSkipString(f *testing.F) {
	for _, s := range trickyPieces {
		f.Add(`"0123456` + s + `789"`)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkSkipString(t, `"`+s)
	})
}

// BenchmarkValidJSONRoo is the validating scan alone (what SplitObject costs) over the
// 60 KB Roo Code body: mostly skipString.
func BenchmarkValidJSONRoo(b *testing.B) {
	body := rooSizedBody(b)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if !ValidJSON(body) {
			b.Fatal("invalid")
		}
	}
}

// BenchmarkSkipStringPrompt is skipString over the 60 KB Roo system prompt alone: a long
// string with an escape every few dozen bytes.
func BenchmarkSkipStringPrompt(b *testing.B) {
	r, err := ParseChatRequest(rooSizedBody(b))
	if err != nil {
		b.Fatal(err)
	}
	s := r.Messages[0].Content
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		if end, err := skipString(s, 0); err != nil || end != len(s) {
			b.Fatal(end, err)
		}
	}
}
