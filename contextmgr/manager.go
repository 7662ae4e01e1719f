// Package contextmgr owns the third pipeline stage: conversation identity, stored history
// for thin clients, similar past interactions added to the system area, and saving each
// completed exchange, from the embedded SQLite store or from an MCP server.
package contextmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Input is what the handler knows of a request beyond its body.
type Input struct {
	RequestID      string
	ConversationID string
	Role           roles.Role
	// NoStore is set by X-Proxy-No-Store: true.
	NoStore bool
}

// Result says what Enrich added.
type Result struct {
	HistoryMessages int
	SimilarItems    int
	// Err is a failure that cost the request its enrichment (the request still goes out).
	Err error
}

// Tracker collects one exchange's answer; Finish hands it to the store asynchronously.
type Tracker interface {
	// Chunk sees each streamed data payload (valid only during the call).
	Chunk(data []byte)
	// Body sees a non-streaming answer.
	Body(b []byte)
	// Finish ends the exchange; ok reports whether the answer completed.
	Finish(ok bool)
}

// Manager enriches requests and saves exchanges. The zero value adds nothing and saves
// nothing.
type Manager struct{}

// New returns a Manager.
func New() *Manager { return &Manager{} }

// Enrich adds context to req within the budget; it never fails the request.
func (m *Manager) Enrich(ctx context.Context, req *backends.ChatRequest, in Input) Result {
	return Result{}
}

// Track returns a Tracker for the exchange, or nil when nothing is to be saved.
func (m *Manager) Track(req *backends.ChatRequest, in Input) Tracker { return nil }

// ConversationID returns the conversation key of req: the explicit id (body, then header),
// else a stable hash of the system prompt and the first user message, so that every turn
// of one agent task maps to the same key.
func ConversationID(req *backends.ChatRequest, header string) string {
	if req.ConversationID != "" {
		return req.ConversationID
	}
	if header != "" {
		return header
	}
	h := sha256.New()
	for _, want := range []string{"system", "user"} {
		for i := range req.Messages {
			m := &req.Messages[i]
			if m.Role == want || (want == "system" && m.Role == "developer") {
				h.Write([]byte(m.Role))
				h.Write([]byte{0})
				h.Write(m.Content)
				h.Write([]byte{0})
				break
			}
		}
	}
	return "h-" + hex.EncodeToString(h.Sum(nil)[:12])
}
