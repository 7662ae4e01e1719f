package backends

import (
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

// ChunkDelta reads what the deltas of choice 0 of a stream chunk add to the answer: their
// content text (ok reports whether any delta had a string content) and their tool-call
// fragments, in order. data must be valid JSON (SSEReader.Next validates every chunk); it
// is read with the trusted scanners, so a content delta costs a scan, not a decode into
// structs.
func ChunkDelta(data []byte) (content string, ok bool, calls []DeltaToolCall) {
	choices := lookupTrusted(data, "choices")
	if len(choices) == 0 || choices[0] != '[' {
		return "", false, nil
	}
	for _, ch := range splitArrayTrusted(choices) {
		if len(ch) == 0 || ch[0] != '{' || !indexIsZero(lookupTrusted(ch, "index")) {
			continue
		}
		delta := lookupTrusted(ch, "delta")
		if len(delta) == 0 || delta[0] != '{' {
			continue
		}
		if c := lookupTrusted(delta, "content"); len(c) > 0 && c[0] == '"' {
			content += stringPrefix(c, 0)
			ok = true
		}
		tcs := lookupTrusted(delta, "tool_calls")
		if len(tcs) == 0 || tcs[0] != '[' {
			continue
		}
		for _, tc := range splitArrayTrusted(tcs) {
			if len(tc) == 0 || tc[0] != '{' {
				continue
			}
			var d DeltaToolCall
			if n, err := strconv.Atoi(string(lookupTrusted(tc, "index"))); err == nil {
				d.Index = n
			}
			d.ID = stringPrefix(lookupTrusted(tc, "id"), 0)
			d.Type = stringPrefix(lookupTrusted(tc, "type"), 0)
			if fn := lookupTrusted(tc, "function"); len(fn) > 0 && fn[0] == '{' {
				d.Name = stringPrefix(lookupTrusted(fn, "name"), 0)
				d.Arguments = stringPrefix(lookupTrusted(fn, "arguments"), 0)
			}
			calls = append(calls, d)
		}
	}
	return content, ok, calls
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
	choices := lookupTrusted(b, "choices")
	if len(choices) == 0 || choices[0] != '[' {
		return nil, nil, true
	}
	for _, ch := range splitArrayTrusted(choices) {
		if len(ch) == 0 || ch[0] != '{' || !indexIsZero(lookupTrusted(ch, "index")) {
			continue
		}
		msg := lookupTrusted(ch, "message")
		if len(msg) == 0 || msg[0] != '{' {
			continue
		}
		return lookupTrusted(msg, "content"), lookupTrusted(msg, "tool_calls"), true
	}
	return nil, nil, true
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
