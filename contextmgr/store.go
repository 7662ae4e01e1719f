package contextmgr

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"
	"time"
	"unicode"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// Turn is one stored message of a conversation.
type Turn struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// ToolCalls are an assistant's tool calls in the OpenAI shape; nil when none.
	ToolCalls json.RawMessage `json:"tool_calls,omitempty"`
	// ToolCallID is set on tool results.
	ToolCallID string    `json:"tool_call_id,omitempty"`
	At         time.Time `json:"-"`
}

// Interaction is a past exchange from another conversation that resembles the request.
type Interaction struct {
	ConversationID string
	At             time.Time
	// Score orders interactions (higher is closer); Match is the 0-1 value compared with the
	// threshold.
	Score float64
	Match float64
	Turns []Turn
}

// Meta describes the exchange a Save belongs to.
type Meta struct {
	RequestID string
	Role      string
	// Profile is the profile the exchange was served under ("": none given).
	Profile string
	// seq is the exchange's place in the writer's queue (0: not queued): the fast path's
	// history cache notes up to which exchange it is current.
	seq uint64
	// named says the client named the conversation (not Input.DerivedConversation): only
	// such a conversation's history is ever read, so only it is tracked for reading
	// (queued exchanges, the fast path's history cache).
	named bool
}

// Store keeps conversations. The embedded SQLite store and the MCP store implement it.
type Store interface {
	// History returns the last limit turns of a conversation, oldest first (limit <= 0: all).
	History(ctx context.Context, conversationID string, limit int) ([]Turn, error)
	// Append adds turns to the end of a conversation.
	Append(ctx context.Context, conversationID string, turns []Turn, meta Meta) error
	// Similar returns up to limit past interactions from conversations other than exclude
	// that resemble query, best first, already filtered by the store's threshold. Only
	// conversations saved under profile are searched: a request never gets another
	// profile's past (which that profile's backends may not be allowed to see).
	Similar(ctx context.Context, query, exclude, profile string, limit int) ([]Interaction, error)
}

// AppendItem is one conversation's turns in a batched save.
type AppendItem struct {
	Conv  string
	Turns []Turn
	Meta  Meta
	// hashes are Turns' hashes when the writer computed them already (else nil).
	hashes []string
}

// batchAppender is a Store that can save several conversations in one transaction (the
// embedded store); the background writer batches what is queued when it can.
type batchAppender interface {
	AppendBatch(ctx context.Context, items []AppendItem) error
}

// storedCounter is a Store that can count which turn hashes a conversation already holds
// without loading its turns (the embedded store); the background save uses it when it can.
type storedCounter interface {
	CountStored(ctx context.Context, conversationID string, hashes []string) (map[string]int, error)
}

// hash identifies a turn by what a client would send back: role, text, tool call ids and
// names, and the tool call id it answers. Formatting differences do not change it.
func (t Turn) hash() string {
	h := sha256.New()
	h.Write([]byte(t.Role))
	h.Write([]byte{0})
	h.Write([]byte(strings.TrimSpace(t.Content)))
	h.Write([]byte{0})
	for _, c := range toolCallKeys(t.ToolCalls) {
		h.Write([]byte(c))
		h.Write([]byte{0})
	}
	h.Write([]byte(t.ToolCallID))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func toolCallKeys(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var calls []struct {
		ID       string `json:"id"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if json.Unmarshal(raw, &calls) != nil {
		return nil
	}
	out := make([]string, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.ID+"|"+c.Function.Name)
	}
	return out
}

// turnOf converts a request message (not system/developer) to a turn.
func turnOf(m *backends.Message) Turn {
	t := Turn{Role: m.Role, Content: m.Text(0), ToolCallID: m.ToolCallID}
	if tc := m.Get("tool_calls"); len(tc) > 0 && tc[0] == '[' {
		t.ToolCalls = append(json.RawMessage(nil), tc...)
	}
	return t
}

func isSystem(role string) bool { return role == "system" || role == "developer" }

var envDetails = regexp.MustCompile(`(?s)<environment_details>.*?(</environment_details>|$)`)

// cleanText strips what agents wrap around the user's words (Roo Code's environment
// details, its <user_message> tags) so that search sees the request itself.
func cleanText(s string) string {
	if strings.Contains(s, "<environment_details>") {
		s = envDetails.ReplaceAllString(s, "")
	}
	s = strings.ReplaceAll(s, "<user_message>", "")
	s = strings.ReplaceAll(s, "</user_message>", "")
	return strings.TrimSpace(s)
}

var stopwords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`the and for are but not you all any can had her was one our out day get has him his how
		its may new now old see two way who boy did let put say she too use that with have this will your from they know want
		been good much some time very when come here just like long make many more only over such take than them well were
		what into also then there these their would could should which about while where after before other please thanks
		need does doing done using used make sure let's it's i'm don't can't`) {
		stopwords[w] = true
	}
}

// queryTerms are the distinct informative words of text (lowercase, at least 3 letters,
// no stopwords), at most max of them.
func queryTerms(text string, max int) []string {
	seen := map[string]bool{}
	var out []string
	for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '_'
	}) {
		if len(w) < 3 || len(w) > 40 || stopwords[w] || seen[w] {
			continue
		}
		seen[w] = true
		out = append(out, w)
		if len(out) == max {
			break
		}
	}
	return out
}
