package backends

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// SSEReader reads OpenAI-style server-sent events from an upstream body and returns each
// event byte for byte, as soon as its terminating blank line arrives. Lines of any length
// are supported. The only rewrite is Transform, applied to data payloads.
type SSEReader struct {
	br   *bufio.Reader
	body io.Closer
	buf  []byte
	line []byte
	done bool

	// Transform, when non-nil, may return a replacement for a JSON data payload,
	// or nil to keep it as it is.
	Transform func(data []byte) []byte
	// OnRead is called after every successful read from the body (used to reset an
	// idle timer).
	OnRead func()
	// Err maps a read error to the error Next returns (used to surface a context cause).
	Err func(error) error
	// Backend names the upstream in the Err of in-band error events.
	Backend string
}

// readers recycles the 32 KiB read buffers of finished streams. A buffer never escapes
// its reader: events are copied out of it into SSEReader.buf.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 32<<10) }}

// NewSSEReader reads events from body; Close closes body.
func NewSSEReader(body io.ReadCloser) *SSEReader {
	br := readers.Get().(*bufio.Reader)
	br.Reset(body)
	return &SSEReader{br: br, body: body}
}

// Close closes the upstream body; Next then reports an error. Close is safe to call more
// than once, but not concurrently with Next.
func (s *SSEReader) Close() error {
	if s.br != nil {
		s.br.Reset(nil)
		readers.Put(s.br)
		s.br = nil
	}
	return s.body.Close()
}

// drain discards what is left of the body after [DONE] (normally only the end of the
// chunked encoding), at most max bytes, so that the HTTP connection can be reused.
func (s *SSEReader) drain(max int64) {
	if s.done && s.br != nil {
		_, _ = io.CopyN(io.Discard, s.br, max)
	}
}

// errReaderClosed is returned by Next after Close.
var errReaderClosed = errors.New("reading stream: reader closed")

// readLine returns the next line including its terminator; the slice is valid until the
// next call.
func (s *SSEReader) readLine() ([]byte, error) {
	line, err := s.br.ReadSlice('\n')
	if err == nil {
		return line, nil
	}
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	s.line = append(s.line[:0], line...)
	for {
		line, err = s.br.ReadSlice('\n')
		s.line = append(s.line, line...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return s.line, err
		}
	}
}

// Next returns the next event. See EventStream.
func (s *SSEReader) Next() (Event, error) {
	if s.done {
		return Event{}, io.EOF
	}
	if s.br == nil {
		return Event{}, errReaderClosed
	}
	s.buf = s.buf[:0]
	type span struct{ from, to int }
	var spans []span
	var one [1]span
	spans = one[:0]
	comment := true
	for {
		line, err := s.readLine()
		if len(line) > 0 && s.OnRead != nil {
			s.OnRead()
		}
		if err != nil {
			if s.Err != nil {
				err = s.Err(err)
			}
			if !errors.Is(err, io.EOF) {
				return Event{}, fmt.Errorf("reading stream: %w", err)
			}
			if len(bytes.TrimSpace(line)) == 0 && len(bytes.TrimSpace(s.buf)) == 0 {
				return Event{}, fmt.Errorf("reading stream: %w", ErrStreamCut)
			}
			// A last event without its blank line: take it as complete; the next call
			// reports the missing [DONE].
			line = append(line, '\n')
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			if len(s.buf) == 0 {
				if err != nil {
					return Event{}, fmt.Errorf("reading stream: %w", ErrStreamCut)
				}
				continue // stray blank line between events
			}
			s.buf = append(s.buf, line...)
			break
		}
		at := len(s.buf)
		s.buf = append(s.buf, line...)
		switch {
		case trimmed[0] == ':':
		case bytes.HasPrefix(trimmed, []byte("data:")):
			comment = false
			from := at + 5
			if len(trimmed) > 5 && trimmed[5] == ' ' {
				from++
			}
			spans = append(spans, span{from, at + len(trimmed)})
		default:
			comment = false // event:, id:, retry: lines are forwarded as they are
		}
		if err != nil {
			s.buf = append(s.buf, '\n')
			break
		}
	}
	ev := Event{Raw: s.buf}
	if comment || len(spans) == 0 {
		return ev, nil
	}
	var data []byte
	if len(spans) == 1 {
		data = s.buf[spans[0].from:spans[0].to:spans[0].to]
	} else {
		for i, sp := range spans {
			if i > 0 {
				data = append(data, '\n')
			}
			data = append(data, s.buf[sp.from:sp.to]...)
		}
	}
	if string(data) == "[DONE]" {
		s.done = true
		ev.Done = true
		return ev, nil
	}
	if !ValidJSON(data) {
		// The payload itself is left out: it is model output and ends up in logs.
		return Event{}, fmt.Errorf("reading stream: malformed chunk: %d bytes that are not JSON", len(data))
	}
	if s.Transform != nil {
		if nd := s.Transform(data); nd != nil {
			if len(spans) == 1 {
				// Splice the new payload in place so every other byte of the event (its
				// line endings, id:/event: lines) stays as the upstream sent it.
				sp := spans[0]
				raw := make([]byte, 0, len(s.buf)+len(nd)-(sp.to-sp.from))
				raw = append(raw, s.buf[:sp.from]...)
				raw = append(raw, nd...)
				ev.Raw = append(raw, s.buf[sp.to:]...)
			} else {
				ev.Raw = append(append([]byte("data: "), nd...), "\n\n"...)
			}
			data = nd
		}
	}
	ev.Data = data
	InspectChunk(&ev)
	if ev.Err != nil {
		ev.Err.Backend = s.Backend
	}
	return ev, nil
}

// InspectChunk fills the Usage, UsageOnly, Content and Err fields of ev from ev.Data,
// which must be valid JSON.
// It parses only when the payload mentions usage or error, so plain content deltas cost a
// scan; then only that member is decoded.
func InspectChunk(ev *Event) {
	d := ev.Data
	if bytes.Contains(d, []byte(`"error"`)) {
		ev.Err = InBandError(d)
	}
	if bytes.Contains(d, []byte(`"usage"`)) {
		// Data is validated JSON (Next checks it before calling).
		u, ch := lookupTrusted(d, "usage"), lookupTrusted(d, "choices")
		var usage *Usage
		if len(u) > 0 && u[0] == '{' {
			usage = usageFrom(u)
		}
		if usage != nil {
			switch {
			case ch == nil || isNull(ch):
				ev.Usage, ev.UsageOnly = usage, true
			case len(ch) >= 2 && ch[0] == '[':
				ev.Usage, ev.UsageOnly = usage, len(bytes.TrimSpace(ch[1:len(ch)-1])) == 0
			}
		}
	}
	ev.Content = hasContent(d)
}

// hasContent reports whether a chunk carries output: a tool call, reasoning, a refusal or
// non-empty content text. White space around the colon is allowed (pretty-printed chunks).
func hasContent(d []byte) bool {
	return memberStarts(d, `"content"`, true) || memberStarts(d, `"tool_calls"`, false) ||
		memberStarts(d, `"reasoning"`, true) || memberStarts(d, `"reasoning_content"`, true) ||
		memberStarts(d, `"refusal"`, true)
}

// memberStarts reports whether some member named key (quoted) in d has a non-empty string
// value (str) or an array value (!str); null, "" and [] do not count.
func memberStarts(d []byte, key string, str bool) bool {
	for rest := d; ; {
		i := bytes.Index(rest, []byte(key))
		if i < 0 {
			return false
		}
		rest = rest[i+len(key):]
		j := skipWS(rest, 0)
		if j >= len(rest) || rest[j] != ':' {
			continue
		}
		j = skipWS(rest, j+1)
		if j+1 >= len(rest) {
			return false
		}
		if str && rest[j] == '"' && rest[j+1] != '"' {
			return true
		}
		if !str && rest[j] == '[' && rest[skipWS(rest, j+1)] != ']' {
			return true
		}
	}
}

// InBandError returns the error a 200 answer carries instead of a completion: a JSON
// object whose top-level "error" member is an object or a string (nil otherwise; "error":
// null is no error). The status is the error's numeric "code" or "status" when it is an
// HTTP error status, else 502; message, type, code and param are the upstream's.
// Backend is left for the caller to set.
func InBandError(d []byte) *APIError { return inBandError(d, lookupTrusted(d, "error")) }

// inBandError is InBandError with d's error member already looked up (nil: none).
func inBandError(d []byte, e json.RawMessage) *APIError {
	if len(e) == 0 || (e[0] != '{' && e[0] != '"') {
		return nil
	}
	status := http.StatusBadGateway
	if e[0] == '{' {
		for _, k := range []string{"code", "status"} {
			if n, err := strconv.Atoi(string(lookupTrusted(e, k))); err == nil && n >= 400 && n <= 599 {
				status = n
				break
			}
		}
	}
	ae := ParseErrorBody(status, d)
	if status == http.StatusBadGateway && ae.Type == "server_error" {
		ae.Type = "upstream_error"
	}
	return ae
}
