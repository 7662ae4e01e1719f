package promptengineer

import (
	"bytes"
	"encoding/json"
	"slices"

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
	markerOpen         = []byte("<" + Marker)
	markerClose        = []byte("</" + Marker + ">")
	markerOpenEscaped  = []byte(`\u003c` + Marker) // as Go's encoding/json writes "<"
	markerCloseEscaped = []byte(`\u003c/` + Marker + `\u003e`)
)

// hasMarker reports whether a raw content value already carries a guidance block.
func hasMarker(content json.RawMessage) bool {
	head, tail := content, content
	if len(content) > markerWindow {
		head, tail = content[:markerWindow], content[len(content)-markerWindow:]
	}
	return bytes.Contains(head, markerOpen) || bytes.Contains(tail, markerClose) ||
		bytes.Contains(head, markerOpenEscaped) || bytes.Contains(tail, markerCloseEscaped)
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
		if hasMarker(m.ContentJSON()) {
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
