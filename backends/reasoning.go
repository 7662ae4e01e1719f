package backends

import "bytes"

// addReasoningContentChunk gives every choices[].delta that carries NanoGPT's "reasoning"
// a "reasoning_content" copy (which Roo Code reads). data must be valid JSON (SSEReader
// checks every chunk before its Transform). It returns nil when nothing changes.
func addReasoningContentChunk(data []byte) []byte {
	return addReasoningContent(data, "delta")
}

// addReasoningContentMessage does the same for choices[].message of a JSON answer, which
// must be valid JSON.
func addReasoningContentMessage(body []byte) []byte {
	return addReasoningContent(body, "message")
}

// addReasoningContent inserts `,"reasoning_content":<value>` right after every
// "reasoning" member of choices[].<member> that has a non-null value and no
// reasoning_content yet. Every other byte stays as the upstream sent it: the answer is
// copied once with the insertions, not split and re-joined.
func addReasoningContent(data []byte, member string) []byte {
	if !bytes.Contains(data, []byte(`"reasoning"`)) {
		return nil
	}
	type insertion struct {
		at    int
		value []byte
	}
	var ins []insertion
	choices, _ := memberSpan(data, 0, "choices")
	if choices < 0 || data[choices] != '[' {
		return nil
	}
	eachElementAt(data, choices, func(c, _ int) bool {
		if data[c] != '{' {
			return false
		}
		inner, _ := memberSpan(data, c, member)
		if inner < 0 || data[inner] != '{' {
			return false
		}
		first, has := -1, false
		var at []int
		eachMemberAt(data, inner, func(key []byte, from, to int) bool {
			switch string(key) {
			case "reasoning":
				if first < 0 {
					first = from
				}
				at = append(at, to)
			case "reasoning_content":
				has = true
			}
			return false
		})
		if first < 0 || has {
			return false
		}
		v := data[first:skipTrusted(data, first)]
		if string(v) == "null" {
			return false
		}
		for _, a := range at {
			ins = append(ins, insertion{a, v})
		}
		return false
	})
	if len(ins) == 0 {
		return nil
	}
	const key = `,"reasoning_content":`
	n := len(data)
	for _, in := range ins {
		n += len(key) + len(in.value)
	}
	out := make([]byte, 0, n)
	prev := 0
	for _, in := range ins {
		out = append(out, data[prev:in.at]...)
		out = append(out, key...)
		out = append(out, in.value...)
		prev = in.at
	}
	return append(out, data[prev:]...)
}
