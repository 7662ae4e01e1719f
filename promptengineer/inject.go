package promptengineer

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

const (
	injAlready   = "already present"
	injNewSystem = "new system message"
)

// markerWindow bounds the search for an existing guidance block: the proxy only ever puts
// it at the start of a system message (its opening tag is near the start) or at the end
// (its closing tag is near the end, whatever the guidance's length).
const markerWindow = 8 << 10

var (
	markerName         = []byte(Marker)
	markerOpenEscaped  = []byte(`\u003c`) // "<" as Go's encoding/json writes it
	markerCloseEscaped = []byte(`\u003e`)
	// markerPivot is the byte of Marker searched for first: a rare one ('x' of "proxy"),
	// so that the search skips through a long prompt rather than stopping every few bytes.
	markerPivot = max(strings.IndexByte(Marker, 'x'), 0)
)

// hasMarker reports whether a raw content value already carries a guidance block: the
// opening tag "<proxy_role_guidance" in the first markerWindow bytes or the closing tag
// "</proxy_role_guidance>" in the last ones, written plainly or with encoding/json's
// \u003c and \u003e escapes.
func hasMarker(content json.RawMessage) bool {
	head, tail := content, content
	if len(content) > markerWindow {
		head, tail = content[:markerWindow], content[len(content)-markerWindow:]
	}
	return anyMarker(head, opensTag) || anyMarker(tail, closesTag)
}

// hasMarkerMemo is hasMarker of a message's content, a memo of its bytes: an agent sends
// the same system prompt every turn.
func hasMarkerMemo(m *backends.Message) bool {
	if v, ok := m.Memo(markerSlot).(bool); ok {
		return v
	}
	v := hasMarker(m.ContentJSON())
	m.SetMemo(markerSlot, v)
	return v
}

var markerSlot = backends.NewMemoSlot()

// anyMarker reports whether some occurrence of Marker in w, at offset at, has tag(w, at).
func anyMarker(w []byte, tag func(w []byte, at int) bool) bool {
	for from := 0; from < len(w); {
		k := bytes.IndexByte(w[from:], Marker[markerPivot])
		if k < 0 {
			return false
		}
		at := from + k - markerPivot
		from += k + 1
		if at >= 0 && bytes.HasPrefix(w[at:], markerName) && tag(w, at) {
			return true
		}
	}
	return false
}

// opensTag reports whether the Marker at w[at] follows "<" or its escape.
func opensTag(w []byte, at int) bool {
	return at >= 1 && w[at-1] == '<' || at >= 6 && bytes.Equal(w[at-6:at], markerOpenEscaped)
}

// closesTag reports whether the Marker at w[at] is inside "</...>" or its escaped form.
func closesTag(w []byte, at int) bool {
	end := at + len(Marker)
	if at >= 2 && w[at-1] == '/' && w[at-2] == '<' && end < len(w) && w[end] == '>' {
		return true
	}
	return at >= 7 && w[at-1] == '/' && bytes.Equal(w[at-7:at-1], markerOpenEscaped) && bytes.HasPrefix(w[end:], markerCloseEscaped)
}

// inject adds block to the system area of req: to the first system (or developer) message
// as its own text, or as a new system message first when there is none. Every other byte
// of the request stays as the client sent it. It returns where the block went.
func inject(req *backends.ChatRequest, block string, mode Injection) string {
	idx := -1
	for i := range req.Messages {
		m := &req.Messages[i]
		if m.Role != "system" && m.Role != "developer" {
			continue
		}
		if hasMarkerMemo(m) {
			return injAlready
		}
		if idx < 0 {
			idx = i
		}
	}
	if idx < 0 {
		req.Messages = slices.Insert(req.Messages, 0, backends.NewMessage("system", block))
		return injNewSystem
	}
	m := &req.Messages[idx]
	if mode == InjectPrepend {
		m.PrependText(block)
	} else {
		m.AppendText(block)
	}
	return string(mode)
}
