package backends

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// TestPlain8MatchesByteCheck checks skipString's eight-byte fast path against the byte
// rule it stands for: every byte value at every position, and random words.
func TestPlain8MatchesByteCheck(t *testing.T) {
	// firstCare is the index of the first byte that is not a plain string byte (8: none).
	firstCare := func(w [8]byte) int {
		for i, c := range w {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				return i
			}
		}
		return 8
	}
	// careMask must flag some byte exactly when one needs care, and its lowest flag must
	// be that first byte (skipString jumps straight to it).
	check := func(w [8]byte) {
		m := careMask(binary.LittleEndian.Uint64(w[:]))
		if got, want := bits.TrailingZeros64(m)>>3, firstCare(w); got != want {
			t.Fatalf("careMask(%q) flags byte %d first, want %d (8: none)", w[:], got, want)
		}
	}
	for pos := range 8 {
		for c := range 256 {
			for _, fill := range []byte{'a', ' ', '!', '#', '[', ']', '~', 0x7f} {
				var w [8]byte
				for i := range w {
					w[i] = fill
				}
				w[pos] = byte(c)
				check(w)
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200_000 {
		var w [8]byte
		for i := range w {
			// Mostly printable ASCII, sometimes anything, so both answers occur often.
			if r.IntN(16) == 0 {
				w[i] = byte(r.IntN(256))
			} else {
				w[i] = byte(0x20 + r.IntN(0x60))
			}
		}
		check(w)
	}
}

// TestSkipStringErrorsKeepTheirOffsets checks that the fast path reports the same errors
// at the same offsets as the byte-by-byte scan: the error message a client sees.
func TestSkipStringErrorsKeepTheirOffsets(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{`"0123456789abcdef"`, ""},
		{`"0123456789abcdefé012345678"`, ""},
		{"\"0123456789\x01abcdef\"", "invalid JSON: control character in string at offset 11"},
		{"\"0123456789abcdef\xff0123456\"", "invalid JSON: invalid UTF-8 at offset 17"},
		{`"0123456789abcdef\q"`, "invalid JSON: bad escape at offset 17"},
		{`"0123456789abcdef0123`, "invalid JSON: unterminated string at offset 0"},
		{`"01234567\"9abcdef012345"`, ""},
	}
	for _, tt := range tests {
		end, err := skipString([]byte(tt.in), 0)
		got := ""
		if err != nil {
			got = err.Error()
		} else if end != len(tt.in) {
			got = "ended early"
		}
		if got != tt.want {
			t.Errorf("skipString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestValidSplitMatchesValidatingSplit checks that the boundary-only scan used for text
// already validated cuts every member exactly where the validating scan does, including
// strings with escaped quotes and runs of backslashes.
func TestValidSplitMatchesValidatingSplit(t *testing.T) {
	objects := []string{
		`{"a":"x\"y","b":"\\\\","c":"\\\"","d":[1,{"e":"\\"}],"f":null}`,
		`{"role":"user","content":[{"type":"text","text":"say \"hi\"\\n","cache_control":{"type":"ephemeral"}}]}`,
		`{ "k\"ey" : "v" , "x" : { "y" : [ "\\\\\"" ] } }`,
		`{}`,
	}
	for _, in := range objects {
		want, err := SplitObject([]byte(in))
		if err != nil {
			t.Fatalf("SplitObject(%s): %v", in, err)
		}
		got := splitObjectTrusted([]byte(in))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("splitObjectTrusted(%s) = %q, want %q", in, got, want)
		}
		arr := "[" + in + "," + in + "]"
		wantA, _ := SplitArray([]byte(arr))
		if gotA := splitArrayTrusted([]byte(arr)); fmt.Sprint(gotA) != fmt.Sprint(wantA) {
			t.Errorf("splitArrayTrusted(%s) = %q, want %q", arr, gotA, wantA)
		}
	}
}
