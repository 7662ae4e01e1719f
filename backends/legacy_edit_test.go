package backends

import (
	"bytes"
	"encoding/json"
	"strings"
)

// legacySetText is AppendText/PrependText as they were before edits became lazy: the
// content is rebuilt in one piece at once. The zero-copy edit tests compare against it,
// so the upstream bytes and every reader's view stay exactly what they were. (A message
// it edited has no pending edit, so its JSON is the unchanged eager path.)
func legacySetText(m *Message, text string, prepend bool) {
	if m.fields == nil {
		m.fields = []Field{{Key: "role", Value: quote(m.Role)}}
	}
	var content json.RawMessage
	switch {
	case len(m.Content) > 0 && m.Content[0] == '[':
		part := JoinObject([]Field{{Key: "type", Value: json.RawMessage(`"text"`)}, {Key: "text", Value: quote(text)}})
		inner := bytes.TrimSpace(m.Content[1 : len(m.Content)-1])
		buf := make([]byte, 0, len(m.Content)+len(part)+2)
		buf = append(buf, '[')
		if prepend {
			buf = append(buf, part...)
			if len(inner) > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, inner...)
		} else {
			buf = append(buf, inner...)
			if len(inner) > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, part...)
		}
		content = append(buf, ']')
	case len(m.Content) > 2 && m.Content[0] == '"':
		if prepend {
			add := quote(text + "\n\n")
			content = append(add[:len(add)-1:len(add)-1], m.Content[1:]...)
		} else {
			add := quote("\n\n" + text)
			content = append(m.Content[:len(m.Content)-1:len(m.Content)-1], add[1:]...)
		}
	default:
		content = quote(text)
	}
	m.Content = content
	m.fields = SetField(append(make([]Field, 0, len(m.fields)+1), m.fields...), "content", content)
	m.Raw = nil
}

// legacyPartsText is ContentText of a parts array as it was before parts were read
// without splitting them: each part split into its members by SplitObject.
func legacyPartsText(content json.RawMessage, limit int) string {
	parts, err := SplitArray(content)
	if err != nil {
		return ""
	}
	var sb strings.Builder
	for _, p := range parts {
		pf, err := SplitObject(p)
		if err != nil {
			continue
		}
		var typ string
		_ = decodeString(Lookup(pf, "type"), &typ)
		if typ != "text" && typ != "" {
			continue
		}
		t := Lookup(pf, "text")
		if t == nil {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('\n')
		}
		rest := 0
		if limit > 0 {
			rest = limit - sb.Len()
			if rest <= 0 {
				break
			}
		}
		sb.WriteString(stringPrefix(t, rest))
		if limit > 0 && sb.Len() >= limit {
			break
		}
	}
	return sb.String()
}
