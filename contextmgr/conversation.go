package contextmgr

import (
	"crypto/sha256"
	"encoding"
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
//
// Both messages come again, byte for byte, on every turn of a task, so their parts of the
// key are memos of their bytes (backends.Message.Memo): the hash state after the system
// prompt, and the key of a first user message after a given system prompt. A turn of a
// known task hashes nothing.
func ConversationID(req *backends.ChatRequest, header string) string {
	if req.ConversationID != "" {
		return req.ConversationID
	}
	if header != "" {
		return header
	}
	var sys, user *backends.Message
	for i := range req.Messages {
		m := &req.Messages[i]
		switch {
		case sys == nil && (m.Role == "system" || m.Role == "developer"):
			sys = m
		case user == nil && m.Role == "user":
			user = m
		}
	}
	h := sha256.New()
	after := "" // the hash state after the system prompt's part ("": none)
	if sys != nil {
		if st, ok := sys.Memo(sysKeySlot).(string); ok && h.(encoding.BinaryUnmarshaler).UnmarshalBinary([]byte(st)) == nil {
			after = st
		} else {
			h.Reset()
			writeMessage(h, sys)
			b, _ := h.(encoding.BinaryMarshaler).MarshalBinary()
			after = string(b)
			sys.SetMemo(sysKeySlot, after)
		}
	}
	if user != nil {
		if k, ok := user.Memo(userKeySlot).(userKey); ok && k.after == after {
			return k.key
		}
		writeMessage(h, user)
	}
	key := "h-" + hex.EncodeToString(h.Sum(nil)[:12])
	if user != nil {
		user.SetMemo(userKeySlot, userKey{after: after, key: key})
	}
	return key
}

var (
	// sysKeySlot holds a system message's part of the key: the SHA-256 state after it.
	sysKeySlot = backends.NewMemoSlot()
	// userKeySlot holds a first user message's key (a userKey).
	userKeySlot = backends.NewMemoSlot()
)

// userKey is the key of a first user message after the system part after (the last one
// it was computed with: a system prompt shared by several tasks starts many keys).
type userKey struct{ after, key string }

// writeMessage hashes one message's part of the key.
func writeMessage(h io.Writer, m *backends.Message) {
	io.WriteString(h, m.Role)
	h.Write(nul)
	writeText(h, m.Content)
	h.Write(nul)
}

var nul = []byte{0}

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
