package backends

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"strconv"
	"strings"
	"sync/atomic"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// ChatRequest is an OpenAI chat completion request kept as raw JSON. The proxy decodes
// only the members it reads (model, messages, stream, stream_options and its own role and
// conversation_id); every other member is forwarded byte for byte, in the client's order.
type ChatRequest struct {
	// Model is the model the client asked for ("auto", "auto:<role>" or a model id).
	Model string
	// Stream reports whether the client asked for server-sent events.
	Stream bool
	// IncludeUsage reports whether the client itself asked for stream_options.include_usage.
	IncludeUsage bool
	// Role is the proxy's own "role" member (empty when absent). It never goes upstream.
	Role string
	// ConversationID is the proxy's own "conversation_id" member. It never goes upstream.
	ConversationID string
	// Messages are the conversation, in order. Stages may edit the slice; untouched
	// messages keep their raw bytes.
	Messages []Message
	// Pin, when set, is called for every upstream body a backend writes from slices of the
	// client's body (UpstreamParts), and the function it returns once that body is closed:
	// the caller may then reuse the body's buffer. Nil: the body is never reused.
	Pin func() (unpin func())

	fields []Field
}

// Message is one chat message. Raw holds the client's exact bytes; members other than
// role and content are only ever read from Raw.
type Message struct {
	Role string
	// Content is the raw content: a JSON string, an array of parts, or null/absent (nil).
	// Text added by AppendText or PrependText is kept apart, so that a long content is not
	// copied for it: on a message that may have been edited, read the content with
	// ContentJSON or Text rather than this field. Assigning Content drops text added
	// before.
	Content json.RawMessage
	// ToolCallID is set on role "tool" messages.
	ToolCallID string
	// Raw is the message as the client sent it; nil for messages the proxy made or changed.
	Raw json.RawMessage

	fields []Field
	// edit is the text added around Content by AppendText and PrependText, not yet
	// joined to it (see contentEdit).
	edit *contentEdit
	// tmpl is how Raw parses (nil: not parsed from bytes); it makes Detach's copy without
	// walking the bytes again.
	tmpl *msgTemplate
}

// RequestError is a client error found while decoding a request; it becomes a 400
// invalid_request_error naming Param.
type RequestError struct {
	Param   string
	Message string
}

func (e *RequestError) Error() string { return e.Message }

// ParseChatRequest decodes and validates a chat completion body.
func ParseChatRequest(body []byte) (*ChatRequest, error) {
	// The elements of "messages" as validation found them: their offsets, and their entries
	// in the validation cache, which may hold how they parse.
	type elemAt struct {
		from, to int
		kept     *validEntry
	}
	var msgElems []elemAt
	addMsg := func(from, to int, kept *validEntry) { msgElems = append(msgElems, elemAt{from, to, kept}) }
	fields, err := splitObject(body, requestValues, func(key string) func(from, to int, kept *validEntry) {
		if key == "messages" {
			return addMsg
		}
		return nil
	})
	if err != nil {
		return nil, &RequestError{Message: "We could not parse the JSON body of your request: " + err.Error() +
			". (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"}
	}
	r := &ChatRequest{fields: fields}
	var sawMessages bool
	for _, f := range fields {
		switch f.Key {
		case "model":
			if err := decodeString(f.Value, &r.Model); err != nil {
				return nil, typeError("model", "a string", f.Value)
			}
		case "stream":
			if isNull(f.Value) {
				continue
			}
			if err := json.Unmarshal(f.Value, &r.Stream); err != nil {
				return nil, typeError("stream", "a boolean", f.Value)
			}
		case "stream_options":
			if isNull(f.Value) {
				continue
			}
			if f.Value[0] != '{' {
				return nil, typeError("stream_options", "an object", f.Value)
			}
			// Exact member names, last one wins: what a JSON upstream will read.
			r.IncludeUsage = false
			for _, sf := range splitObjectTrusted(f.Value) {
				if sf.Key != "include_usage" {
					continue
				}
				switch string(sf.Value) {
				case "true", "false", "null":
					r.IncludeUsage = string(sf.Value) == "true"
				default:
					return nil, typeError("stream_options.include_usage", "a boolean", sf.Value)
				}
			}
		case "role":
			if err := decodeString(f.Value, &r.Role); err != nil {
				return nil, typeError("role", "a string", f.Value)
			}
		case "conversation_id":
			if err := decodeString(f.Value, &r.ConversationID); err != nil {
				return nil, typeError("conversation_id", "a string", f.Value)
			}
		case "messages":
			sawMessages = true
			if f.Value[0] != '[' {
				return nil, typeError("messages", "an array", f.Value)
			}
			var elems []json.RawMessage
			var kept []*validEntry
			if messagesMembers(fields) == 1 { // then msgElems are this member's elements
				for _, e := range msgElems {
					elems, kept = append(elems, body[e.from:e.to:e.to]), append(kept, e.kept)
				}
			} else {
				elems = splitArrayTrusted(f.Value) // already validated by SplitObject
				kept = make([]*validEntry, len(elems))
			}
			r.Messages = make([]Message, 0, len(elems))
			for i, e := range elems {
				m, err := parseKeptMessage(e, kept[i])
				if err != nil {
					if err.Param == "" {
						err.Param = fmt.Sprintf("messages.[%d]", i)
					} else {
						err.Param = fmt.Sprintf("messages.[%d].%s", i, err.Param)
					}
					err.Message = fmt.Sprintf("Invalid value for 'messages[%d]': %s", i, err.Message)
					return nil, err
				}
				r.Messages = append(r.Messages, m)
			}
		}
	}
	if r.Model == "" {
		return nil, &RequestError{Param: "model", Message: "you must provide a model parameter"}
	}
	if !sawMessages {
		return nil, &RequestError{Param: "messages", Message: "Missing required parameter: 'messages'."}
	}
	if len(r.Messages) == 0 {
		return nil, &RequestError{Param: "messages", Message: "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."}
	}
	return r, nil
}

func parseMessage(raw json.RawMessage) (Message, *RequestError) {
	t, err := messageTemplate(raw)
	if err != nil {
		return Message{}, err
	}
	return t.build(raw), nil
}

// parseKeptMessage is parseMessage for an element of the request's messages that the
// validation cache keeps (kept, nil: not kept): the first request to parse its bytes
// leaves their template in the cache, and the next ones build the message from it
// without walking the bytes again.
func parseKeptMessage(raw json.RawMessage, kept *validEntry) (Message, *RequestError) {
	if kept != nil {
		if t := kept.msg.Load(); t != nil {
			return t.build(raw), nil
		}
	}
	t, err := messageTemplate(raw)
	if err != nil {
		return Message{}, err
	}
	if kept != nil {
		t.kept, t.val = true, kept.val
		kept.msg.Store(t)
	}
	return t.build(raw), nil
}

// msgTemplate is how the bytes of a message parse: its members by name and offsets, its
// role and tool_call_id. It holds no bytes of the message, so it serves any copy of them.
type msgTemplate struct {
	role, toolCallID string
	content          [2]int // offsets of the content value; {0, 0}: none (absent or null)
	fields           []fieldAt
	// kept is set on a template the validation cache keeps for its bytes: memos are
	// kept on it, for every request that carries the same bytes. val is the cache's own
	// copy of them (never written): what Detach builds a copy of the message on.
	kept  bool
	val   []byte
	memos [maxMemoSlots]atomic.Pointer[memoBox]
}

type memoBox struct{ v any }

// A MemoSlot names one kind of value a stage derives from a message's bytes (see
// Message.Memo). Slots are made once, at package initialisation.
type MemoSlot struct{ i int }

// maxMemoSlots bounds the slots: each kept template has room for all of them.
const maxMemoSlots = 8

var memoSlots atomic.Int32

// NewMemoSlot returns a new slot; it panics when all maxMemoSlots are taken.
func NewMemoSlot() MemoSlot {
	n := int(memoSlots.Add(1)) - 1
	if n >= maxMemoSlots {
		panic("backends: too many memo slots")
	}
	return MemoSlot{n}
}

// Memo returns the value last stored in slot for m's bytes (SetMemo), nil when there is
// none. A memo is kept with the message's parse while the validation cache keeps its bytes
// (an agent's system prompt and first message come again on every turn of a task), and
// read by every request that carries the same bytes: a value stored must therefore be a
// function of the bytes alone, or record what else it depends on and be checked by its
// reader. A message the proxy made or changed has no memo.
func (m *Message) Memo(slot MemoSlot) any {
	if t := m.parsed(); t != nil && t.kept {
		if b := t.memos[slot.i].Load(); b != nil {
			return b.v
		}
	}
	return nil
}

// SetMemo stores v in slot for m's bytes (see Memo) and reports whether it did: nothing is
// stored for a message whose bytes the validation cache does not keep, or that was made
// or changed since its parse.
func (m *Message) SetMemo(slot MemoSlot, v any) bool {
	if t := m.parsed(); t != nil && t.kept {
		t.memos[slot.i].Store(&memoBox{v})
		return true
	}
	return false
}

// parsed returns the template m was built from, nil when m was not parsed from bytes or
// when its Raw, Content or members were replaced since (they no longer alias Raw where
// the template says).
func (m *Message) parsed() *msgTemplate {
	t := m.tmpl
	if t == nil || len(m.Raw) == 0 || len(m.fields) != len(t.fields) || len(t.fields) == 0 {
		return nil
	}
	if f := t.fields[0]; f.to > len(m.Raw) || len(m.fields[0].Value) != f.to-f.from || &m.fields[0].Value[0] != &m.Raw[f.from] {
		return nil
	}
	if c := t.content; c[1] != 0 && (c[1] > len(m.Raw) || len(m.Content) != c[1]-c[0] || &m.Content[0] != &m.Raw[c[0]]) {
		return nil
	}
	return t
}

type fieldAt struct {
	key      string
	from, to int
}

// messageTemplate parses a validated message object.
func messageTemplate(raw json.RawMessage) (*msgTemplate, *RequestError) {
	if raw[0] != '{' {
		return nil, &RequestError{Message: "expected an object"}
	}
	t := &msgTemplate{fields: make([]fieldAt, 0, 4)}
	eachMemberAt(raw, 0, func(key []byte, from, to int) bool { // already validated by SplitObject
		t.fields = append(t.fields, fieldAt{string(key), from, to})
		return false
	})
	for _, f := range t.fields {
		v := raw[f.from:f.to:f.to]
		switch f.key {
		case "role":
			if decodeString(v, &t.role) != nil {
				return nil, &RequestError{Param: "role", Message: "'role' must be a string"}
			}
		case "content":
			switch v[0] {
			case '"', '[':
				t.content = [2]int{f.from, f.to}
			case 'n':
			default:
				return nil, &RequestError{Param: "content", Message: "'content' must be a string or an array of content parts"}
			}
		case "tool_call_id":
			_ = decodeString(v, &t.toolCallID)
		}
	}
	switch t.role {
	case "system", "developer", "user", "assistant", "tool", "function":
	case "":
		return nil, &RequestError{Param: "role", Message: "missing required member 'role'"}
	default:
		return nil, &RequestError{Param: "role", Message: fmt.Sprintf("unknown role %q; expected one of system, developer, user, assistant, tool", t.role)}
	}
	return t, nil
}

// build makes the message of raw, bytes that parse as t.
func (t *msgTemplate) build(raw json.RawMessage) Message {
	m := Message{Raw: raw, Role: t.role, ToolCallID: t.toolCallID, fields: make([]Field, len(t.fields)), tmpl: t}
	for i, f := range t.fields {
		m.fields[i] = Field{Key: f.key, Value: raw[f.from:f.to:f.to]}
	}
	if t.content[1] != 0 {
		m.Content = raw[t.content[0]:t.content[1]:t.content[1]]
	}
	return m
}

// messagesMembers counts the members named "messages" (a client may repeat one; the last wins).
func messagesMembers(fields []Field) int {
	n := 0
	for _, f := range fields {
		if f.Key == "messages" {
			n++
		}
	}
	return n
}

func typeError(param, want string, got json.RawMessage) *RequestError {
	return &RequestError{Param: param, Message: fmt.Sprintf("Invalid type for '%s': expected %s, but got %s instead.", param, want, jsonKind(got))}
}

func jsonKind(v json.RawMessage) string {
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

func isNull(v json.RawMessage) bool { return len(v) == 4 && string(v) == "null" }

func decodeString(v json.RawMessage, dst *string) error {
	if len(v) == 0 || v[0] != '"' {
		return fmt.Errorf("not a string")
	}
	if bytes.IndexByte(v, '\\') < 0 {
		*dst = string(v[1 : len(v)-1])
		return nil
	}
	return json.Unmarshal(v, dst)
}

// Text returns the message's text: the string content, or the text parts joined by
// newlines. Non-text parts are skipped. At most limit bytes are returned (limit <= 0: all).
func (m *Message) Text(limit int) string {
	// The content was validated when the request was parsed (or made by the proxy), so
	// the parts are walked without validating them again, and only as far as limit.
	e := m.pending()
	if e == nil {
		if len(m.Content) == 0 || m.Content[0] != '[' {
			return ContentText(m.Content, limit)
		}
		pt := partsTexter{limit: limit}
		eachElement(m.Content, pt.add)
		return pt.String()
	}
	if e.base[0] == '"' {
		return literalsText(e.pieces(), limit)
	}
	pt := partsTexter{limit: limit}
	for _, p := range e.before {
		pt.add(p)
	}
	eachElement(e.base, pt.add)
	for _, p := range e.after {
		pt.add(p)
	}
	return pt.String()
}

// ContentText returns the text of a raw content value (string or parts array), cut at limit
// bytes when limit > 0. Only the prefix needed is decoded.
func ContentText(content json.RawMessage, limit int) string {
	if len(content) == 0 {
		return ""
	}
	switch content[0] {
	case '"':
		return stringPrefix(content, limit)
	case '[':
		parts, err := SplitArray(content)
		if err != nil {
			return ""
		}
		return partsText(parts, limit)
	}
	return ""
}

// partsText is ContentText of an array with the elements parts (valid JSON values).
func partsText(parts []json.RawMessage, limit int) string {
	pt := partsTexter{limit: limit}
	for _, p := range parts {
		if pt.add(p) {
			break
		}
	}
	return pt.String()
}

// partsTexter joins the text of content parts given one by one, as ContentText does: the
// text parts' texts joined by newlines, at most about limit bytes (limit <= 0: all).
type partsTexter struct {
	limit int
	first string // the text so far while it is one part's: most contents have one
	sb    strings.Builder
	n     int // bytes of text so far
	done  bool
}

// add adds the part p (a valid JSON value) and reports whether the text is complete.
func (pt *partsTexter) add(p json.RawMessage) bool {
	if pt.done {
		return true
	}
	var typ string
	_ = decodeString(lookupTrusted(p, "type"), &typ)
	if typ != "text" && typ != "" {
		return false
	}
	t := lookupTrusted(p, "text")
	if t == nil {
		return false
	}
	if pt.n > 0 {
		if pt.sb.Len() == 0 {
			pt.sb.WriteString(pt.first)
		}
		pt.sb.WriteByte('\n')
		pt.n++
	}
	rest := 0
	if pt.limit > 0 {
		if rest = pt.limit - pt.n; rest <= 0 {
			pt.done = true
			return true
		}
	}
	s := stringPrefix(t, rest)
	if pt.n == 0 {
		pt.first = s
	} else {
		pt.sb.WriteString(s)
	}
	pt.n += len(s)
	pt.done = pt.limit > 0 && pt.n >= pt.limit
	return pt.done
}

func (pt *partsTexter) String() string {
	if pt.sb.Len() > 0 {
		return pt.sb.String()
	}
	return pt.first
}

// literalsText is ContentText of the string whose JSON literal is the concatenation of
// the bodies of the literals lits (each a whole JSON string, quotes included).
func literalsText(lits []json.RawMessage, limit int) string {
	var sb strings.Builder
	for _, l := range lits {
		rest := 0
		if limit > 0 {
			if rest = limit - sb.Len(); rest <= 0 {
				break
			}
		}
		s, all := stringPrefixAll(l, rest)
		sb.WriteString(s)
		if !all {
			break
		}
	}
	return sb.String()
}

// stringPrefix decodes a JSON string value, decoding only about limit bytes of it (the
// whole string when limit <= 0), and never returns a split rune.
func stringPrefix(v json.RawMessage, limit int) string {
	s, _ := stringPrefixAll(v, limit)
	return s
}

// stringPrefixAll is stringPrefix that also reports whether the whole string was decoded.
func stringPrefixAll(v json.RawMessage, limit int) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", true
	}
	body := v[1 : len(v)-1]
	// Only the bytes a prefix can come from are searched for escapes: a 600-byte look at
	// a 60 KB system prompt does not scan all of it.
	head := body
	if limit > 0 && len(head) > limit {
		head = head[:limit]
	}
	if bytes.IndexByte(head, '\\') < 0 {
		all := limit <= 0 || len(body) <= limit
		if !all {
			body = body[:limit]
		}
		s := cutRune(string(body), limit)
		return s, all && len(s) == len(body)
	}
	if s, all, ok := unescapePrefix(body, limit); ok {
		return s, all
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", true
	}
	c := cutRune(s, limit)
	return c, len(c) == len(s)
}

// cutRune shortens s to at most limit bytes (limit > 0) without splitting a rune.
func cutRune(s string, limit int) string {
	if limit <= 0 || len(s) <= limit {
		if limit > 0 && len(s) == limit {
			// s may end in the middle of a rune when it was cut from raw bytes.
			for i := len(s) - 1; i >= 0 && i >= len(s)-utf8.UTFMax; i-- {
				if utf8.RuneStart(s[i]) {
					if !utf8.FullRuneInString(s[i:]) {
						return s[:i]
					}
					break
				}
			}
		}
		return s
	}
	i := limit
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// unescapePrefix decodes the escapes of a JSON string body (without its quotes) until
// limit decoded bytes (limit <= 0: all); all reports that the whole body was decoded. ok
// is false on an escape it does not know, and the caller falls back to encoding/json.
func unescapePrefix(body []byte, limit int) (s string, all, ok bool) {
	n := len(body)
	if limit > 0 && limit < n {
		n = limit
	}
	out, i, ok := appendUnescaped(make([]byte, 0, n+utf8.UTFMax), body, limit)
	if !ok {
		return "", false, false
	}
	// out is not written again: the string shares its bytes (as strings.Builder does).
	d := unsafe.String(unsafe.SliceData(out), len(out))
	s = cutRune(d, limit)
	return s, i >= len(body) && len(s) == len(d), true
}

// appendUnescaped appends the decoded JSON string body (without its quotes) to dst, until
// at least limit bytes were appended (limit <= 0: all of it). i is how much of body it
// decoded; ok is false on an escape it does not know (dst may then hold part of it).
func appendUnescaped(dst, body []byte, limit int) (out []byte, i int, ok bool) {
	start := len(dst)
	for i < len(body) {
		if limit > 0 && len(dst)-start >= limit {
			break
		}
		if body[i] != '\\' {
			j := len(body)
			if k := bytes.IndexByte(body[i:], '\\'); k >= 0 {
				j = i + k
			}
			if limit > 0 {
				j = min(j, i+limit-(len(dst)-start))
			}
			dst = append(dst, body[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(body) {
			return dst, i, false
		}
		switch e := body[i+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, size, ok := decodeU(body[i:])
			if !ok {
				return dst, i, false
			}
			dst = utf8.AppendRune(dst, r)
			i += size
			continue
		default:
			return dst, i, false
		}
		i += 2
	}
	return dst, i, true
}

// decodeU decodes a \uXXXX escape (a surrogate pair when there is one) at the start of b.
func decodeU(b []byte) (rune, int, bool) {
	hex4 := func(h []byte) (rune, bool) {
		if len(h) < 4 || !isHex4(h[:4]) {
			return 0, false
		}
		v, err := strconv.ParseUint(string(h[:4]), 16, 16)
		return rune(v), err == nil
	}
	r, ok := hex4(b[2:])
	if !ok {
		return 0, 0, false
	}
	if utf16.IsSurrogate(r) {
		if len(b) >= 12 && b[6] == '\\' && b[7] == 'u' {
			if r2, ok := hex4(b[8:]); ok {
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					return d, 12, true
				}
			}
		}
		return utf8.RuneError, 6, true
	}
	return r, 6, true
}

// AppendText adds text at the end of the message content: to a string content it is
// appended after a blank line; to a parts array it is added as a new text part, so every
// existing part (with its cache_control marker) stays byte-identical. A string or array
// content is not copied: the text is kept apart and written next to the client's bytes
// when the message goes upstream (see ContentJSON).
func (m *Message) AppendText(text string) {
	m.setText(text, false)
}

// PrependText adds text at the start of the message content, like AppendText.
func (m *Message) PrependText(text string) {
	m.setText(text, true)
}

// contentEdit is text added to a message's content without copying the content: the
// content as it goes upstream is base with before and after around it. For a string base
// the additions are JSON string literals whose bodies are spliced in after the opening
// and before the closing quote; for an array base they are text parts, added as
// elements. A contentEdit is never changed once made (a Clone shares it): an edit makes
// a new one.
type contentEdit struct {
	base          json.RawMessage
	before, after []json.RawMessage
}

// pending returns the message's content edit, or nil when there is none or Content was
// assigned since (which replaced the edited content).
func (m *Message) pending() *contentEdit {
	e := m.edit
	if e == nil || len(m.Content) != len(e.base) || len(m.Content) == 0 || &m.Content[0] != &e.base[0] {
		return nil
	}
	return e
}

func (m *Message) setText(text string, prepend bool) {
	if m.fields == nil {
		m.fields = []Field{{Key: "role", Value: quote(m.Role)}}
	}
	var add json.RawMessage
	switch {
	case len(m.Content) > 0 && m.Content[0] == '[':
		add = addedJSON(text, addedPart, func() json.RawMessage {
			return JoinObject([]Field{{Key: "type", Value: json.RawMessage(`"text"`)}, {Key: "text", Value: quote(text)}})
		})
	case len(m.Content) > 2 && m.Content[0] == '"':
		if prepend {
			add = addedJSON(text, addedBefore, func() json.RawMessage { return quote(text + "\n\n") })
		} else {
			add = addedJSON(text, addedAfter, func() json.RawMessage { return quote("\n\n" + text) })
		}
	default: // nothing to keep: the text is the content
		m.Content = quote(text)
		m.edit = nil
		// Copy before writing: a Clone shares the fields' backing array with its original.
		m.fields = SetField(append(make([]Field, 0, len(m.fields)+1), m.fields...), "content", m.Content)
		m.Raw = nil
		return
	}
	e := &contentEdit{base: m.Content}
	if old := m.pending(); old != nil {
		e.before, e.after = old.before, old.after
	}
	if prepend {
		e.before = append([]json.RawMessage{add}, e.before...)
	} else {
		e.after = append(e.after[:len(e.after):len(e.after)], add)
	}
	m.edit = e
	m.Raw = nil
}

// The JSON forms of text added to a content (AppendText, PrependText): a part, or a string
// literal going after or before a string content.
const (
	addedPart byte = iota
	addedAfter
	addedBefore
)

// addedTexts remembers the JSON form of recently added texts: a role's guidance block is
// the same for every request of the role, and was quoted again (a pass over it and an
// allocation) on every request. Direct-mapped by the text's hash; a text that differs
// every time (context blocks) only takes a slot. The forms are shared, never written.
var addedTexts [64]atomic.Pointer[addedText]

var addedSeed = maphash.MakeSeed()

// maxAddedText is the longest text addedTexts keeps: a guidance block is about 1 KB, and a
// context block (up to the context budget, different for every conversation) would only
// hold memory, up to twice this per slot.
const maxAddedText = 4 << 10

type addedText struct {
	text string
	kind byte
	add  json.RawMessage
}

// addedJSON returns the JSON form kind of text, made by form when it is not remembered.
func addedJSON(text string, kind byte, form func() json.RawMessage) json.RawMessage {
	if len(text) > maxAddedText {
		return form()
	}
	slot := &addedTexts[(maphash.String(addedSeed, text)+uint64(kind))%uint64(len(addedTexts))]
	if e := slot.Load(); e != nil && e.kind == kind && e.text == text {
		return e.add
	}
	add := form()
	slot.Store(&addedText{text: text, kind: kind, add: add[:len(add):len(add)]})
	return add[:len(add):len(add)]
}

// pieces returns the bytes that, written in order, make the edited content. The large
// ones alias the content the edit was made on.
func (e *contentEdit) pieces() []json.RawMessage {
	out := make([]json.RawMessage, 0, len(e.before)+len(e.after)+5)
	if e.base[0] == '"' {
		// For a string, the pieces are whole literals (Text decodes them one by one); the
		// writers drop the quotes between them.
		out = append(out, e.before...)
		out = append(out, e.base)
		return append(out, e.after...)
	}
	inner := bytes.TrimSpace(e.base[1 : len(e.base)-1])
	out = append(out, jsonArrayOpen)
	for _, p := range e.before {
		if len(out) > 1 {
			out = append(out, jsonComma)
		}
		out = append(out, p)
	}
	if len(inner) > 0 {
		if len(out) > 1 {
			out = append(out, jsonComma)
		}
		out = append(out, inner)
	}
	for _, p := range e.after {
		if len(out) > 1 {
			out = append(out, jsonComma)
		}
		out = append(out, p)
	}
	return append(out, jsonArrayClose)
}

// appendContent adds the edited content to pb.
func (e *contentEdit) appendContent(pb *partsBuilder) {
	ps := e.pieces()
	if e.base[0] != '"' {
		for _, p := range ps {
			pb.add(p)
		}
		return
	}
	pb.add(jsonQuote)
	for _, l := range ps {
		pb.add(l[1 : len(l)-1])
	}
	pb.add(jsonQuote)
}

// ContentJSON returns the raw content as it goes upstream, text added by AppendText or
// PrependText included. On an edited message it joins the content anew on every call:
// readers that need only the text should use Text, which does not.
func (m *Message) ContentJSON() json.RawMessage {
	e := m.pending()
	if e == nil {
		return m.Content
	}
	var pb partsBuilder
	e.appendContent(&pb)
	return pb.join()
}

// NewMessage makes a message with a string content.
func NewMessage(role, text string) Message {
	c := quote(text)
	return Message{Role: role, Content: c, fields: []Field{{Key: "role", Value: quote(role)}, {Key: "content", Value: c}}}
}

// JSON returns the message as it goes upstream.
func (m *Message) JSON() json.RawMessage {
	if m.Raw != nil {
		return m.Raw
	}
	if m.pending() != nil {
		var pb partsBuilder
		m.appendParts(&pb)
		return pb.join()
	}
	if m.fields == nil {
		fs := []Field{{Key: "role", Value: quote(m.Role)}}
		if m.Content != nil {
			fs = append(fs, Field{Key: "content", Value: m.Content})
		}
		return JoinObject(fs)
	}
	return JoinObject(m.fields)
}

// appendParts adds the message as it goes upstream to pb (what JSON returns), without
// copying the large values of an edited message: its members as JoinObject writes them,
// with the edited content in place of the first "content" member (or last, when it has
// none).
func (m *Message) appendParts(pb *partsBuilder) {
	e := m.pending()
	if m.Raw != nil || e == nil {
		pb.alias(m.JSON())
		return
	}
	pb.add(jsonOpen)
	done := false
	for i, f := range m.fields {
		if i > 0 {
			pb.add(jsonComma)
		}
		pb.buf = appendKey(pb.buf, f.Key)
		if f.Key == "content" && !done {
			e.appendContent(pb)
			done = true
		} else {
			pb.add(f.Value)
		}
	}
	if !done {
		if len(m.fields) > 0 {
			pb.add(jsonComma)
		}
		pb.buf = appendKey(pb.buf, "content")
		e.appendContent(pb)
	}
	pb.add(jsonClose)
}

// partsBuilder collects the pieces of a body: short bytes are copied into one buffer,
// long ones (the client's content) are kept as they are, so a large value is not copied.
type partsBuilder struct {
	parts [][]byte
	buf   []byte
	from  int // start of the bytes of buf not yet in parts
}

// aliasMin is the size from which partsBuilder keeps a piece rather than copying it.
const aliasMin = 512

// add adds b, copying it when it is short. b must not change afterwards.
func (p *partsBuilder) add(b []byte) {
	if len(b) < aliasMin {
		p.buf = append(p.buf, b...)
		return
	}
	p.alias(b)
}

// alias adds b as a piece of its own. b must not change afterwards.
func (p *partsBuilder) alias(b []byte) {
	p.flush()
	p.parts = append(p.parts, b)
}

func (p *partsBuilder) flush() {
	if len(p.buf) > p.from {
		p.parts = append(p.parts, p.buf[p.from:len(p.buf):len(p.buf)])
		p.from = len(p.buf)
	}
}

// join returns the pieces written one after the other, in one new slice.
func (p *partsBuilder) join() []byte {
	p.flush()
	n := 0
	for _, b := range p.parts {
		n += len(b)
	}
	out := make([]byte, 0, n)
	for _, b := range p.parts {
		out = append(out, b...)
	}
	return out
}

// Detach returns a copy of m that shares no memory with the request body it was parsed
// from, so that keeping it (a background save) does not keep the whole body alive. A
// message whose bytes the validation cache keeps is built on the cache's copy of them, so
// the earlier turns of a long conversation are not copied again on every request.
func (m *Message) Detach() Message {
	if m.Raw != nil {
		if t := m.parsed(); t != nil {
			if t.val != nil { // the validation cache's copy of the same bytes: no new one
				return t.build(t.val)
			}
			return t.build(bytes.Clone(m.Raw))
		}
		d, err := parseMessage(bytes.Clone(m.Raw))
		if err == nil {
			return d
		}
	}
	content := bytes.Clone(m.Content)
	if m.pending() != nil {
		content = m.ContentJSON() // a new slice already: the copy joins the added text in
	}
	c := Message{Role: m.Role, ToolCallID: m.ToolCallID, Content: content}
	if m.fields != nil {
		c.fields = make([]Field, len(m.fields))
		for i, f := range m.fields {
			c.fields[i] = Field{Key: f.Key, Value: bytes.Clone(f.Value)}
			if f.Key == "content" {
				c.fields[i].Value = c.Content
			}
		}
	}
	return c
}

// Get returns the raw value of a message member, or nil.
func (m *Message) Get(key string) json.RawMessage {
	if key == "content" && m.pending() != nil {
		return m.ContentJSON() // the first "content" member is the one edited
	}
	return Lookup(m.fields, key)
}

// Get returns the raw value of a top-level request member, or nil.
func (r *ChatRequest) Get(key string) json.RawMessage { return Lookup(r.fields, key) }

// Set replaces or adds a top-level member. Used for members the proxy does not own
// (a backend translating the request, or a stage that must set a default).
func (r *ChatRequest) Set(key string, value json.RawMessage) {
	r.fields = SetField(r.fields, key, value)
}

// Fields returns the top-level members as the client sent them, in order.
func (r *ChatRequest) Fields() []Field { return r.fields }

// Clone returns a copy whose Messages slice can be edited without touching r.
func (r *ChatRequest) Clone() *ChatRequest {
	c := *r
	c.Messages = append([]Message(nil), r.Messages...)
	c.fields = append([]Field(nil), r.fields...)
	return &c
}

// ownedKeys are request members that belong to the proxy and never go upstream.
func ownedKey(k string) bool { return k == "role" || k == "conversation_id" }

// UpstreamBody encodes the request for an OpenAI-compatible upstream: model replaced by
// model, the proxy's own members removed, messages from r.Messages, and, for streams,
// stream_options.include_usage forced on so accounting never depends on the client.
// Every other member is copied byte for byte in the client's order.
func (r *ChatRequest) UpstreamBody(model string) []byte {
	parts := r.UpstreamParts(model)
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	jsonComma        = []byte(",")
	jsonOpen         = []byte("{")
	jsonClose        = []byte("}")
	jsonModelKey     = []byte(`"model":`)
	jsonMessagesKey  = []byte(`"messages":[`)
	jsonArrayOpen    = []byte("[")
	jsonArrayClose   = []byte("]")
	jsonQuote        = []byte(`"`)
	jsonStreamOptKey = []byte(`"stream_options":`)
	jsonUsageOn      = []byte(`"stream_options":{"include_usage":true}`)
)

// UpstreamParts is UpstreamBody as a list of pieces that, written in order, make the
// body. Most pieces alias the client's body, so a large request is not copied again
// (the parts must not be modified).
func (r *ChatRequest) UpstreamParts(model string) [][]byte {
	parts := make([][]byte, 0, 4*len(r.fields)+2*len(r.Messages)+4)
	parts = append(parts, jsonOpen)
	first := true
	sep := func() {
		if !first {
			parts = append(parts, jsonComma)
		}
		first = false
	}
	sawStreamOptions := false
	// The member names written out, in one allocation for all of them: a part stays valid
	// when a later append moves keys (the earlier array is left as it was).
	n := 0
	for _, f := range r.fields {
		n += len(f.Key) + 3
	}
	keys := make([]byte, 0, n)
	for _, f := range r.fields {
		switch {
		case ownedKey(f.Key):
			continue
		case f.Key == "model":
			sep()
			parts = append(parts, jsonModelKey, quote(model))
		case f.Key == "messages":
			sep()
			parts = append(parts, jsonMessagesKey)
			for i := range r.Messages {
				if i > 0 {
					parts = append(parts, jsonComma)
				}
				m := &r.Messages[i]
				if m.pending() == nil {
					parts = append(parts, m.JSON())
					continue
				}
				pb := partsBuilder{parts: parts}
				m.appendParts(&pb)
				pb.flush()
				parts = pb.parts
			}
			parts = append(parts, jsonArrayClose)
		case f.Key == "stream_options" && r.Stream:
			sawStreamOptions = true
			sep()
			parts = append(parts, jsonStreamOptKey)
			if r.IncludeUsage {
				parts = append(parts, f.Value)
			} else {
				parts = append(parts, withIncludeUsage(f.Value))
			}
		default:
			sep()
			at := len(keys)
			keys = appendKey(keys, f.Key)
			parts = append(parts, keys[at:len(keys):len(keys)], f.Value)
		}
	}
	if r.Stream && !sawStreamOptions {
		sep()
		parts = append(parts, jsonUsageOn)
	}
	return append(parts, jsonClose)
}

func withIncludeUsage(v json.RawMessage) json.RawMessage {
	fs, err := SplitObject(v)
	if err != nil {
		return json.RawMessage(`{"include_usage":true}`)
	}
	found := false
	for i := range fs { // every occurrence: with duplicates, upstreams read the last
		if fs[i].Key == "include_usage" {
			fs[i].Value, found = json.RawMessage("true"), true
		}
	}
	if !found {
		fs = append(fs, Field{Key: "include_usage", Value: json.RawMessage("true")})
	}
	return JoinObject(fs)
}

// quote encodes s as a JSON string without HTML escaping.
func quote(s string) json.RawMessage {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			plain = false
			break
		}
	}
	if plain { // the common case (model ids, roles): no encoder
		out := make([]byte, len(s)+2)
		out[0], out[len(out)-1] = '"', '"'
		copy(out[1:], s)
		return out
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // strings always encode
	return bytes.TrimRight(buf.Bytes(), "\n")
}
