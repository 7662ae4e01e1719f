package backends

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// Field is one member of a JSON object, kept as the exact bytes the sender wrote.
// Key is the decoded member name.
type Field struct {
	Key   string
	Value json.RawMessage
}

// errSyntax is wrapped by every error the raw scanner returns.
var errSyntax = errors.New("invalid JSON")

// SplitObject splits a JSON object into its members in document order, validating
// the whole text on the way (strings, numbers, literals, nesting). The values alias b.
// It costs one pass over b and one allocation for the slice.
func SplitObject(b []byte) ([]Field, error) { return splitObject(b, nil, nil) }

// splitObject is SplitObject; with vc, member values that are arrays are looked up in vc.
// elems (when not nil) is asked for each such member whether its elements are wanted: it
// returns the function to give them to (nil: not wanted), with their offsets in b and
// their entries in vc (nil: not kept). An array whose elements are wanted is looked up
// element by element; any other is looked up whole first (an agent sends the same tool
// definitions every turn: one comparison instead of one lookup per tool), then element by
// element when it is not kept, and offered to vc whole.
func splitObject(b []byte, vc *validCache, elems func(key string) func(from, to int, kept *validEntry)) ([]Field, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, fmt.Errorf("%w: expected an object", errSyntax)
	}
	fields := make([]Field, 0, 12)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		if j := skipWS(b, i+1); j != len(b) {
			return nil, fmt.Errorf("%w: trailing data at offset %d", errSyntax, j)
		}
		return fields, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, fmt.Errorf("%w: expected a member name at offset %d", errSyntax, i)
		}
		end, err := skipString(b, i)
		if err != nil {
			return nil, err
		}
		key, err := decodeKey(b[i:end])
		if err != nil {
			return nil, err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, fmt.Errorf("%w: expected ':' at offset %d", errSyntax, i)
		}
		i = skipWS(b, i+1)
		var vend int
		if vc != nil && i < len(b) && b[i] == '[' {
			var each func(from, to int, kept *validEntry)
			if elems != nil {
				each = elems(key)
			}
			if each != nil {
				vend, err = skipArray(b, i, 0, vc, each)
			} else {
				vend, err = skipArrayWhole(b, i, vc)
			}
		} else {
			vend, err = skipValue(b, i, 0)
		}
		if err != nil {
			return nil, err
		}
		fields = append(fields, Field{Key: key, Value: b[i:vend:vend]})
		i = skipWS(b, vend)
		if i >= len(b) {
			return nil, fmt.Errorf("%w: unexpected end of object", errSyntax)
		}
		if b[i] == '}' {
			if j := skipWS(b, i+1); j != len(b) {
				return nil, fmt.Errorf("%w: trailing data at offset %d", errSyntax, j)
			}
			return fields, nil
		}
		if b[i] != ',' {
			return nil, fmt.Errorf("%w: expected ',' or '}' at offset %d", errSyntax, i)
		}
		i = skipWS(b, i+1)
	}
}

// SplitArray splits a JSON array into its elements, validating them.
func SplitArray(b []byte) ([]json.RawMessage, error) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, fmt.Errorf("%w: expected an array", errSyntax)
	}
	var elems []json.RawMessage
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return elems, nil
	}
	for {
		end, err := skipValue(b, i, 0)
		if err != nil {
			return nil, err
		}
		elems = append(elems, b[i:end:end])
		i = skipWS(b, end)
		if i >= len(b) {
			return nil, fmt.Errorf("%w: unexpected end of array", errSyntax)
		}
		if b[i] == ']' {
			return elems, nil
		}
		if b[i] != ',' {
			return nil, fmt.Errorf("%w: expected ',' or ']' at offset %d", errSyntax, i)
		}
		i = skipWS(b, i+1)
	}
}

// ValidJSON reports whether b is one valid JSON value (surrounding white space allowed).
func ValidJSON(b []byte) bool {
	i := skipWS(b, 0)
	end, err := skipValue(b, i, 0)
	return err == nil && skipWS(b, end) == len(b)
}

// JoinObject writes fields back as a JSON object.
func JoinObject(fields []Field) []byte {
	n := 2
	for _, f := range fields {
		n += len(f.Key) + len(f.Value) + 4
	}
	out := make([]byte, 0, n)
	return appendObject(out, fields)
}

func appendObject(out []byte, fields []Field) []byte {
	out = append(out, '{')
	for i, f := range fields {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendKey(out, f.Key)
		out = append(out, f.Value...)
	}
	return append(out, '}')
}

// appendKey writes "key": with JSON escaping.
func appendKey(out []byte, key string) []byte {
	plain := true
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain {
		out = append(out, '"')
		out = append(out, key...)
		out = append(out, '"', ':')
		return out
	}
	out = append(out, quote(key)...)
	return append(out, ':')
}

// Lookup returns the value of the first member named key, or nil.
func Lookup(fields []Field, key string) json.RawMessage {
	for _, f := range fields {
		if f.Key == key {
			return f.Value
		}
	}
	return nil
}

// SetField replaces the value of key, or appends the member when it is absent.
func SetField(fields []Field, key string, value json.RawMessage) []Field {
	for i := range fields {
		if fields[i].Key == key {
			fields[i].Value = value
			return fields
		}
	}
	return append(fields, Field{Key: key, Value: value})
}

// commonKey returns the member names of chat requests and answers that the proxy splits on
// every request as constants: decoding one of them allocates nothing. (A switch on
// string(b) neither allocates nor hashes.)
func commonKey(b []byte) (string, bool) {
	switch string(b) {
	case "role":
		return "role", true
	case "content":
		return "content", true
	case "type":
		return "type", true
	case "text":
		return "text", true
	case "model":
		return "model", true
	case "messages":
		return "messages", true
	case "stream":
		return "stream", true
	case "stream_options":
		return "stream_options", true
	case "tools":
		return "tools", true
	case "tool_choice":
		return "tool_choice", true
	case "tool_calls":
		return "tool_calls", true
	case "tool_call_id":
		return "tool_call_id", true
	case "name":
		return "name", true
	case "id":
		return "id", true
	case "cache_control":
		return "cache_control", true
	case "temperature":
		return "temperature", true
	case "choices":
		return "choices", true
	case "message":
		return "message", true
	case "delta":
		return "delta", true
	case "usage":
		return "usage", true
	case "object":
		return "object", true
	case "created":
		return "created", true
	case "system_fingerprint":
		return "system_fingerprint", true
	case "x_nanogpt_pricing":
		return "x_nanogpt_pricing", true
	case "parallel_tool_calls":
		return "parallel_tool_calls", true
	case "max_tokens":
		return "max_tokens", true
	case "max_completion_tokens":
		return "max_completion_tokens", true
	case "reasoning_effort":
		return "reasoning_effort", true
	}
	return "", false
}

func decodeKey(quoted []byte) (string, error) {
	if bytes.IndexByte(quoted, '\\') < 0 {
		if k, ok := commonKey(quoted[1 : len(quoted)-1]); ok {
			return k, nil
		}
		return string(quoted[1 : len(quoted)-1]), nil
	}
	var s string
	if err := json.Unmarshal(quoted, &s); err != nil {
		return "", fmt.Errorf("%w: member name: %v", errSyntax, err)
	}
	return s, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

const maxDepth = 10000

// skipValue returns the offset just past the JSON value that starts at b[i]. With valid
// set, b is known to be valid JSON and strings are only scanned for their closing quote.
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("%w: nested too deeply", errSyntax)
	}
	if i >= len(b) {
		return 0, fmt.Errorf("%w: unexpected end of input", errSyntax)
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{':
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, nil
		}
		for {
			if i >= len(b) || b[i] != '"' {
				return 0, fmt.Errorf("%w: expected a member name at offset %d", errSyntax, i)
			}
			end, err := skipString(b, i)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, end)
			if i >= len(b) || b[i] != ':' {
				return 0, fmt.Errorf("%w: expected ':' at offset %d", errSyntax, i)
			}
			i = skipWS(b, i+1)
			if i, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return 0, fmt.Errorf("%w: unexpected end of object", errSyntax)
			}
			if b[i] == '}' {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, fmt.Errorf("%w: expected ',' or '}' at offset %d", errSyntax, i)
			}
			i = skipWS(b, i+1)
		}
	case c == '[':
		return skipArray(b, i, depth, nil, nil)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	case c == '-' || (c >= '0' && c <= '9'):
		return skipNumber(b, i)
	default:
		return 0, fmt.Errorf("%w: unexpected character %q at offset %d", errSyntax, c, i)
	}
}

// skipArrayWhole skips the array at b[i] (a member of the top-level object), looking it
// up in vc whole first.
func skipArrayWhole(b []byte, i int, vc *validCache) (int, error) {
	end, fp, kept := vc.lookupEntry(b, i)
	if kept != nil {
		return end, nil
	}
	end, err := skipArray(b, i, 0, vc, nil)
	if err != nil {
		return 0, err
	}
	vc.note(b[i:end], fp)
	return end, nil
}

// skipArray skips the array at b[i] (at depth); with vc, each element is looked up in vc
// before it is scanned, and given to each (when not nil) with its entry in vc.
func skipArray(b []byte, i, depth int, vc *validCache, each func(from, to int, kept *validEntry)) (int, error) {
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for {
		end, fp := 0, uint64(0)
		var kept *validEntry
		if vc != nil {
			end, fp, kept = vc.lookupEntry(b, i)
		}
		if kept == nil {
			var err error
			if end, err = skipValue(b, i, depth+1); err != nil {
				return 0, err
			}
			if vc != nil {
				kept = vc.note(b[i:end], fp)
			}
		}
		if each != nil {
			each(i, end, kept)
		}
		i = skipWS(b, end)
		if i >= len(b) {
			return 0, fmt.Errorf("%w: unexpected end of array", errSyntax)
		}
		if b[i] == ']' {
			return i + 1, nil
		}
		if b[i] != ',' {
			return 0, fmt.Errorf("%w: expected ',' or ']' at offset %d", errSyntax, i)
		}
		i = skipWS(b, i+1)
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return 0, fmt.Errorf("%w: bad literal at offset %d", errSyntax, i)
	}
	return i + len(lit), nil
}

func skipNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if digits() == 0 {
		return 0, fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return 0, fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return 0, fmt.Errorf("%w: bad number at offset %d", errSyntax, start)
		}
	}
	return i, nil
}

// skipString returns the offset past the closing quote of the string at b[i].
// It rejects control characters, bad escapes and invalid UTF-8 as encoding/json does not
// (encoding/json replaces invalid UTF-8; rejecting it keeps what we forward well-formed).
func skipString(b []byte, i int) (int, error) {
	start := i
	i++
	for {
		i = nextSpecial(b, i)
		if i >= len(b) {
			return 0, fmt.Errorf("%w: unterminated string at offset %d", errSyntax, start)
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			// A run of escapes (\n\n, \u00e9\u00e8) is read here, not one word scan each.
			for i < len(b) && b[i] == '\\' {
				var err error
				if i, err = skipEscape(b, i, start); err != nil {
					return 0, err
				}
			}
		case c < 0x20:
			return 0, fmt.Errorf("%w: control character in string at offset %d", errSyntax, i)
		case c < utf8.RuneSelf: // not reached: nextSpecial stops only at the cases above
			i++
		default:
			// A run of multi-byte runes (non-Latin text) is decoded here.
			for i < len(b) && b[i] >= utf8.RuneSelf {
				var err error
				if i, err = skipRune(b, i); err != nil {
					return 0, err
				}
			}
		}
	}
}

// skipEscape returns the offset past the escape at b[i] ('\\') of the string at b[start].
func skipEscape(b []byte, i, start int) (int, error) {
	if i+1 >= len(b) {
		return 0, fmt.Errorf("%w: unterminated string at offset %d", errSyntax, start)
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2, nil
	case 'u':
		if i+6 > len(b) || !isHex4(b[i+2:i+6]) {
			return 0, fmt.Errorf("%w: bad \\u escape at offset %d", errSyntax, i)
		}
		return i + 6, nil
	default:
		return 0, fmt.Errorf("%w: bad escape at offset %d", errSyntax, i)
	}
}

// skipRune returns the offset past the valid UTF-8 rune at b[i].
func skipRune(b []byte, i int) (int, error) {
	r, size := utf8.DecodeRune(b[i:])
	if r == utf8.RuneError && size == 1 {
		return 0, fmt.Errorf("%w: invalid UTF-8 at offset %d", errSyntax, i)
	}
	return i + size, nil
}

// nextSpecial returns the offset of the first byte at or after b[i] that is not a plain
// string byte, or len(b). It tests 8 bytes at a time and jumps straight to the first
// flagged one: the lowest byte the SWAR tests flag is always a true hit (a borrow only
// carries upward, so only higher flags can be false).
func nextSpecial(b []byte, i int) int {
	for i+8 <= len(b) {
		if m := careMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)>>3
		}
		i += 8
	}
	for i < len(b) && plainStringByte[b[i]] {
		i++
	}
	return i
}

// plainStringByte marks the bytes that stand for themselves inside a JSON string:
// printable ASCII other than '"' and '\\'.
var plainStringByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// careMask flags (with its high bit) each byte of w that is not a plain string byte. The
// lowest flagged byte is exact; a flag above a true one may be false. Per byte x:
// x-0x20 sets the high bit when x < 0x20 (a control character) and x itself when x >= 0x80;
// (x^'"')-1 and (x^'\\')-1 set it when x is '"' or '\\' (they wrap to 0xff), and
// otherwise only when x >= 0x80 (already flagged). A plain byte sets no bit and never
// borrows from the byte above it, so up to the first true hit nothing is flagged.
func careMask(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	return ((w - ones*0x20) | w | ((w ^ (ones * '"')) - ones) | ((w ^ (ones * '\\')) - ones)) & highs
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// The trusted scanners below walk JSON that SplitObject or SplitArray has already
// validated, so a request's messages are not validated three times over. They skip
// strings with bytes.IndexByte and never report errors; on invalid input they return
// nonsense but never panic.

// splitObjectTrusted is SplitObject for validated input.
func splitObjectTrusted(b []byte) []Field {
	fields := make([]Field, 0, 4)
	eachMemberAt(b, 0, func(key []byte, from, to int) bool {
		fields = append(fields, Field{Key: string(key), Value: b[from:to:to]})
		return false
	})
	return fields
}

// splitArrayTrusted is SplitArray for validated input.
func splitArrayTrusted(b []byte) []json.RawMessage {
	elems := make([]json.RawMessage, 0, 8)
	eachElement(b, func(e json.RawMessage) bool {
		elems = append(elems, e)
		return false
	})
	return elems
}

// eachElement calls fn with each element of the validated array b, in order, until fn
// returns true.
func eachElement(b []byte, fn func(json.RawMessage) bool) {
	eachElementAt(b, 0, func(from, to int) bool { return fn(b[from:to:to]) })
}

// eachElementAt calls fn with the offsets of every element of the valid array at b[arr],
// in order, until fn returns true.
func eachElementAt(b []byte, arr int, fn func(from, to int) bool) {
	i := skipWS(b, arr)
	if i >= len(b) || b[i] != '[' {
		return
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != ']' {
		end := skipTrusted(b, i)
		if end <= i || fn(i, end) {
			return
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i = skipWS(b, i+1)
	}
}

// eachMemberAt calls fn with the name (decoded when it has escapes; without allocating
// when it has none) and the value's offsets of every member of the valid object at b[obj],
// in order, until fn returns true.
func eachMemberAt(b []byte, obj int, fn func(key []byte, from, to int) bool) {
	i := skipWS(b, obj)
	if i >= len(b) || b[i] != '{' {
		return
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] == '"' {
		end := StringEnd(b, i)
		key := b[i+1 : max(i+1, end-1)]
		if bytes.IndexByte(key, '\\') >= 0 {
			k, err := decodeKey(b[i:end])
			if err != nil {
				return
			}
			key = []byte(k)
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return
		}
		i = skipWS(b, i+1)
		vend := skipTrusted(b, i)
		if fn(key, i, vend) {
			return
		}
		i = skipWS(b, vend)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i = skipWS(b, i+1)
	}
}

// skipTrusted returns the offset just past the valid JSON value at b[i].
func skipTrusted(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return StringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = StringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number or literal
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// skipStringTrusted returns the offset past the closing quote of the valid string at b[i].
func StringEnd(b []byte, i int) int {
	j := i + 1
	for j < len(b) {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b)
		}
		j += k
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
	return len(b)
}

// lookupTrusted returns the raw value of the first top-level member named key of the
// validated object b, or nil (also when b is not an object), as Lookup(SplitObject(b), key)
// would: member names written with escapes are decoded, allocating only for them.
func lookupTrusted(b []byte, key string) json.RawMessage {
	if from, to := memberSpan(b, 0, key); from >= 0 {
		return b[from:to:to]
	}
	return nil
}

// memberSpan returns the offsets of the value of the first member named key of the valid
// object at b[obj], or -1, -1.
func memberSpan(b []byte, obj int, key string) (from, to int) {
	from, to = -1, -1
	eachMemberAt(b, obj, func(k []byte, f, t int) bool {
		if string(k) == key {
			from, to = f, t
			return true
		}
		return false
	})
	return from, to
}
