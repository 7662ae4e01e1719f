package promptengineer

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

// hasMarkerContains is hasMarker as four plain substring searches: the rule it stands for.
func hasMarkerContains(content json.RawMessage) bool {
	head, tail := content, content
	if len(content) > markerWindow {
		head, tail = content[:markerWindow], content[len(content)-markerWindow:]
	}
	return bytes.Contains(head, []byte("<"+Marker)) || bytes.Contains(tail, []byte("</"+Marker+">")) ||
		bytes.Contains(head, []byte(`\u003c`+Marker)) || bytes.Contains(tail, []byte(`\u003c/`+Marker+`\u003e`))
}

// TestHasMarkerMatchesSubstringSearch: an opening or closing tag, plain or escaped, whole
// or cut, found at every offset around the ends of the head and tail windows, and
// look-alikes (other tags, "proxy" words, a wrong escape) are judged exactly as the
// plain substring searches judge them.
func TestHasMarkerMatchesSubstringSearch(t *testing.T) {
	pieces := []string{
		"<" + Marker + ">", "</" + Marker + ">", `\u003c` + Marker + `\u003e`, `\u003c/` + Marker + `\u003e`,
		"<" + Marker, "</" + Marker, `\u003c/` + Marker, Marker + ">", Marker, "<" + Marker[:8],
		`\u003C` + Marker, "< " + Marker, "<proxy", "proxy proxy_x xx", "</role>", `\u003c`, `\u003e`, "x", "<", "/",
	}
	fill := strings.Repeat("a proxy of text\\n", markerWindow/4)
	for _, p := range pieces {
		for _, at := range []int{0, 1, 2, 5, 6, 7, 100, markerWindow - len(p) - 1, markerWindow - len(p), markerWindow - len(p) + 1, markerWindow - 3} {
			for _, size := range []int{len(p) + at, markerWindow, markerWindow + 50, 3 * markerWindow} {
				if at < 0 || at+len(p) > size {
					continue
				}
				for _, fromEnd := range []bool{false, true} {
					c := []byte(fill[:size])
					pos := at
					if fromEnd {
						pos = size - len(p) - at
					}
					copy(c[pos:], p)
					if got, want := hasMarker(c), hasMarkerContains(c); got != want {
						t.Fatalf("hasMarker(%q at %d of %d) = %v, substring search %v", p, pos, size, got, want)
					}
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 20_000 {
		var sb strings.Builder
		for sb.Len() < r.IntN(3*markerWindow) {
			if r.IntN(4) == 0 {
				sb.WriteString(pieces[r.IntN(len(pieces))])
			} else {
				sb.WriteString(fill[:r.IntN(200)])
			}
		}
		c := []byte(sb.String())
		if got, want := hasMarker(c), hasMarkerContains(c); got != want {
			t.Fatalf("hasMarker(%.200q…) = %v, substring search %v", c, got, want)
		}
	}
}
