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
