package backends

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// DeltaToolCall is one tool-call fragment of a stream chunk: the call it continues
// (Index) and what it adds. ID, Type and Name usually come once, Arguments in pieces.
type DeltaToolCall struct {
	Index     int
	ID        string
	Type      string
	Name      string
	Arguments string
}

// AppendChunkDelta reads what the deltas of choice 0 of a stream chunk add to the answer:
// it appends their content text to dst (ok reports whether any delta had a string
// content) and returns their tool-call fragments, in order. data must be valid JSON
// (SSEReader.Next validates every chunk); it is read with the trusted scanners, each
// object walked once (a member that comes twice counts the first time), and a delta's
// text is decoded straight into dst.
func AppendChunkDelta(dst, data []byte) (out []byte, ok bool, calls []DeltaToolCall) {
	choices := lookupTrusted(data, "choices")
	if len(choices) == 0 || choices[0] != '[' {
		return dst, false, nil
	}
	eachElementAt(choices, 0, func(from, to int) bool {
		ch := choices[from:to:to]
		if ch[0] != '{' {
			return false
		}
		index, delta := members2(ch, "index", "delta")
		if !indexIsZero(index) || len(delta) == 0 || delta[0] != '{' {
			return false
		}
		c, tcs := members2(delta, "content", "tool_calls")
		if len(c) > 0 && c[0] == '"' {
			dst = appendStringValue(dst, c)
			ok = true
		}
		if len(tcs) > 0 && tcs[0] == '[' {
			eachElementAt(tcs, 0, func(from, to int) bool {
				if tc := tcs[from:to:to]; tc[0] == '{' {
					calls = append(calls, deltaToolCall(tc))
				}
				return false
			})
		}
		return false
	})
	return dst, ok, calls
}

// deltaToolCall reads one tool-call fragment (a valid object).
func deltaToolCall(tc []byte) DeltaToolCall {
	var d DeltaToolCall
	var index, id, typ, fn json.RawMessage
	eachMemberAt(tc, 0, func(k []byte, from, to int) bool {
		v := tc[from:to:to]
		switch string(k) {
		case "index":
			index = firstOf(index, v)
		case "id":
			id = firstOf(id, v)
		case "type":
			typ = firstOf(typ, v)
		case "function":
			fn = firstOf(fn, v)
		}
		return false
	})
	if n, err := strconv.Atoi(string(index)); err == nil {
		d.Index = n
	}
	d.ID = stringPrefix(id, 0)
	d.Type = stringPrefix(typ, 0)
	if len(fn) > 0 && fn[0] == '{' {
		name, args := members2(fn, "name", "arguments")
		d.Name = stringPrefix(name, 0)
		d.Arguments = stringPrefix(args, 0)
	}
	return d
}

// members2 returns the values of the members named a and b of the valid object obj (nil
// when absent; the first one when a name comes twice), in one walk.
func members2(obj []byte, a, b string) (va, vb json.RawMessage) {
	eachMemberAt(obj, 0, func(k []byte, from, to int) bool {
		switch string(k) {
		case a:
			va = firstOf(va, obj[from:to:to])
		case b:
			vb = firstOf(vb, obj[from:to:to])
		}
		return va != nil && vb != nil
	})
	return va, vb
}

func firstOf(have, v json.RawMessage) json.RawMessage {
	if have != nil {
		return have
	}
	return v
}

// appendStringValue appends the decoded valid JSON string literal v to dst.
func appendStringValue(dst []byte, v json.RawMessage) []byte {
	body := v[1 : len(v)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return append(dst, body...)
	}
	mark := len(dst)
	if out, _, ok := appendUnescaped(dst, body, 0); ok {
		return out
	}
	return append(dst[:mark], stringPrefix(v, 0)...) // an escape only encoding/json reads
}

// indexIsZero reports whether a choice's index member is 0 or absent.
func indexIsZero(v json.RawMessage) bool {
	return v == nil || string(v) == "0" || string(v) == "null"
}

// AnswerChoice returns the content and tool_calls members of choices[index 0].message of a
// JSON answer, as raw JSON (nil when absent). ok is false when b is not a JSON object.
func AnswerChoice(b []byte) (content, toolCalls json.RawMessage, ok bool) {
	if !ValidJSON(b) {
		return nil, nil, false
	}
	content, toolCalls = choiceOf(lookupTrusted(b, "choices"))
	return content, toolCalls, true
}

// choiceOf is AnswerChoice's reading of a validated choices member (nil: absent).
func choiceOf(choices json.RawMessage) (content, toolCalls json.RawMessage) {
	if len(choices) == 0 || choices[0] != '[' {
		return nil, nil
	}
	eachElement(choices, func(ch json.RawMessage) bool {
		if len(ch) == 0 || ch[0] != '{' || !indexIsZero(lookupTrusted(ch, "index")) {
			return false
		}
		msg := lookupTrusted(ch, "message")
		if len(msg) == 0 || msg[0] != '{' {
			return false
		}
		content, toolCalls = lookupTrusted(msg, "content"), lookupTrusted(msg, "tool_calls")
		return true
	})
	return content, toolCalls
}

// TextLiterals returns the raw JSON string literals that make up the text of a message
// content, in order, without decoding them: the string itself, or the "text" member of
// each part whose type is absent or "text" (the parts ContentText reads). content must be
// valid JSON, as every content of a parsed request is; it is walked with the trusted
// scanners.
func TextLiterals(content json.RawMessage) []json.RawMessage {
	if len(content) == 0 {
		return nil
	}
	switch content[0] {
	case '"':
		return []json.RawMessage{content}
	case '[':
		var out []json.RawMessage
		eachElement(content, func(p json.RawMessage) bool {
			if len(p) == 0 || p[0] != '{' {
				return false
			}
			if typ := lookupTrusted(p, "type"); len(typ) > 0 && typ[0] == '"' && string(typ) != `"text"` {
				return false
			}
			if t := lookupTrusted(p, "text"); len(t) >= 2 && t[0] == '"' {
				out = append(out, t)
			}
			return false
		})
		return out
	}
	return nil
}
