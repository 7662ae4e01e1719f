package contextmgr

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// ConversationID returns the conversation key of req: the explicit id (body, then header),
// else a stable hash of the text of the system prompt and of the first user message, so
// that every turn of one agent task maps to the same key. Only the text counts: Roo Code
// and Cline move cache_control markers from part to part as the task goes on, and a
// string content and one text part with the same words are the same message.
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
				writeText(h, m.Content)
				h.Write([]byte{0})
				break
			}
		}
	}
	return "h-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// hashEdge is how much of each end of a long message the conversation key reads.
const hashEdge = 8 << 10

// writeText hashes the text of a content value as the client encoded it: the JSON string
// literals of the string content or of the text parts, joined by newlines (what
// Message.Text decodes), and nothing around them, so a cache_control marker moving from
// part to part does not change it. The literals are hashed as they are, not decoded: the
// same client encodes the same words the same way every turn, and a decode would cost a
// pass of the JSON decoder over each long message on every request. A long text is hashed
// by its size and both ends: an agent's 60 KB system prompt costs a few microseconds, and
// two prompts that differ only in the middle while sharing size and both ends are not a
// realistic collision.
func writeText(h io.Writer, content json.RawMessage) {
	lits := backends.TextLiterals(content)
	size := 0
	for i, l := range lits {
		lits[i] = l[1 : len(l)-1]
		size += len(lits[i])
		if i > 0 {
			size++
		}
	}
	if size <= 2*hashEdge {
		writeRange(h, lits, 0, size)
		return
	}
	writeRange(h, lits, 0, hashEdge)
	h.Write([]byte{0})
	writeRange(h, lits, size-hashEdge, size)
	fmt.Fprintf(h, "/%d", size)
}

// writeRange writes bytes [from, to) of the texts joined by newlines.
func writeRange(h io.Writer, texts []json.RawMessage, from, to int) {
	at := 0 // offset of texts[i] in the joined text
	for i, t := range texts {
		if i > 0 {
			if at >= from && at < to {
				h.Write([]byte{'\n'})
			}
			at++
		}
		lo, hi := max(from-at, 0), min(to-at, len(t))
		if lo < hi {
			h.Write(t[lo:hi])
		}
		at += len(t)
		if at >= to {
			return
		}
	}
}
