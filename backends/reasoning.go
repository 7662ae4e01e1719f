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
	eachElementAt(data, choices, func(c int) {
		if data[c] != '{' {
			return
		}
		inner, _ := memberSpan(data, c, member)
		if inner < 0 || data[inner] != '{' {
			return
		}
		first, has := -1, false
		var at []int
		eachMemberAt(data, inner, func(key []byte, from, to int) {
			switch string(key) {
			case "reasoning":
				if first < 0 {
					first = from
				}
				at = append(at, to)
			case "reasoning_content":
				has = true
			}
		})
		if first < 0 || has {
			return
		}
		v := data[first:skipTrusted(data, first)]
		if string(v) == "null" {
			return
		}
		for _, a := range at {
			ins = append(ins, insertion{a, v})
		}
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

// memberSpan returns the offsets of the value of the first member named key of the valid
// object at b[obj] (-1 when there is none).
func memberSpan(b []byte, obj int, key string) (from, to int) {
	from, to = -1, -1
	eachMemberAt(b, obj, func(k []byte, f, t int) {
		if from < 0 && string(k) == key {
			from, to = f, t
		}
	})
	return from, to
}

// eachMemberAt calls fn with the name (decoded when it has escapes; without allocating when
// it has none) and the value's offsets of every member of the valid object at b[obj], in
// order.
func eachMemberAt(b []byte, obj int, fn func(key []byte, from, to int)) {
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
		fn(key, i, vend)
		i = skipWS(b, vend)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i = skipWS(b, i+1)
	}
}

// eachElementAt calls fn with the offset of every element of the valid array at b[arr].
func eachElementAt(b []byte, arr int, fn func(at int)) {
	i := skipWS(b, arr)
	if i >= len(b) || b[i] != '[' {
		return
	}
	i = skipWS(b, i+1)
	for i < len(b) && b[i] != ']' {
		end := skipTrusted(b, i)
		if end <= i {
			return
		}
		fn(i)
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ',' {
			return
		}
		i = skipWS(b, i+1)
	}
}
