package backends

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NanoGPTConfig configures the NanoGPT backend. The zero value of a duration disables
// that timeout.
type NanoGPTConfig struct {
	// APIKey is sent as the bearer token; it is never logged.
	APIKey string
	// BaseURL is the OpenAI-compatible API base, e.g. https://nano-gpt.com/api/v1.
	BaseURL string
	// FirstByteTimeout bounds the wait for the upstream's response headers.
	FirstByteTimeout time.Duration
	// IdleTimeout bounds the silence between two stream reads.
	IdleTimeout time.Duration
	// MaxErrorBody caps how much of an error body is read (default 1 MiB).
	MaxErrorBody int64
	// MaxResponseBody caps a non-streaming answer (default 64 MiB).
	MaxResponseBody int64
	// UserAgent is sent upstream.
	UserAgent string
}

// NanoGPT is the NanoGPT backend: an OpenAI-compatible upstream reached over HTTP.
// It forwards request bodies byte for byte (model replaced, proxy members removed) and
// answers byte for byte, adding reasoning_content beside NanoGPT's reasoning.
type NanoGPT struct {
	cfg    NanoGPTConfig
	client *http.Client
	url    string
	auth   string // the Authorization header's value
}

var _ Backend = (*NanoGPT)(nil)

// NewTransport returns an HTTP transport tuned for many concurrent upstream calls.
func NewTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return pooledCopyConn{c}, nil
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       64 << 10,
	}
}

// pooledCopyConn is an upstream connection that takes a request body without a buffer of
// its own per request. Over HTTP/1.1 net/http flushes the headers, then copies a body that
// is not a bytes or strings reader (the parts of an agent-sized request, most of them
// slices of the client's body) with io.Copy into the connection, which allocated 32 KB for
// every such request (half of what a 60 KB request allocated, and so half of its garbage
// collection) and copied the body into it. (Over TLS the copy goes into the tls.Conn above
// this one, and HTTP/2 has pooled buffers of its own.)
type pooledCopyConn struct{ net.Conn }

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// ReadFrom copies r into the connection. net/http hands it the body under a LimitedReader
// of the body's Content-Length: the parts of an upstream body (pinnedBody) then go out as
// they are, in one writev, without being copied into a buffer first (60 KB of memmove and
// a system call less for an agent-sized request); anything else is copied through a
// pooled buffer.
func (c pooledCopyConn) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		if pb, ok := lr.R.(*pinnedBody); ok {
			if n, whole, err := pb.writeWithin(c.Conn, lr.N); whole {
				lr.N -= n
				return n, err
			}
		}
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{c.Conn}, r, *bp) // the struct hides c.Conn's own ReadFrom
}

// NewNanoGPT returns a NanoGPT backend. client may be nil for a tuned default.
func NewNanoGPT(cfg NanoGPTConfig, client *http.Client) *NanoGPT {
	if client == nil {
		client = &http.Client{Transport: NewTransport()}
	}
	if cfg.MaxErrorBody <= 0 {
		cfg.MaxErrorBody = 1 << 20
	}
	if cfg.MaxResponseBody <= 0 {
		cfg.MaxResponseBody = 64 << 20
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "nanogpt-proxy"
	}
	return &NanoGPT{cfg: cfg, client: client, url: strings.TrimRight(cfg.BaseURL, "/") + "/chat/completions",
		auth: "Bearer " + cfg.APIKey}
}

// Name returns "nanogpt".
func (n *NanoGPT) Name() string { return "nanogpt" }

// ForwardedHeaders are the client request headers passed upstream (X-Title, HTTP-Referer,
// OpenAI-Organization, Idempotency-Key); everything else, Authorization above all, is
// dropped. They are spelled in their canonical form, which Header.Get finds without
// making a canonical copy of the name for every request.
var ForwardedHeaders = []string{"X-Title", "Http-Referer", "Openai-Organization", "Idempotency-Key"}

// passedResponseHeaders are upstream response headers handed back to the client.
var passedResponseHeaders = []string{"Retry-After", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests",
	"X-Ratelimit-Reset-Requests", "X-Ratelimit-Limit-Tokens", "X-Ratelimit-Remaining-Tokens", "X-Ratelimit-Reset-Tokens"}

// ChatCompletion sends the call to NanoGPT's /chat/completions.
func (n *NanoGPT) ChatCompletion(ctx context.Context, call *Call) (*Response, error) {
	size, newBody := upstreamBody(call.Request.UpstreamParts(call.Model), call.Request.Pin)
	ctx, cancel := context.WithCancelCause(ctx)
	var timer *time.Timer
	if n.cfg.FirstByteTimeout > 0 {
		timer = time.AfterFunc(n.cfg.FirstByteTimeout, func() { cancel(ErrFirstByteTimeout) })
	}
	stop := func() {
		if timer != nil {
			timer.Stop()
		}
	}
	body := newBody()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url, body)
	if err != nil {
		body.Close() // no transport got it: give back what it holds
		stop()
		cancel(nil)
		return nil, fmt.Errorf("nanogpt: building request: %w", err)
	}
	req.ContentLength = int64(size)
	req.GetBody = func() (io.ReadCloser, error) { return newBody(), nil } // lets the transport retry on a stale connection
	accept := "application/json"
	if call.Request.Stream {
		accept = "text/event-stream"
	}
	// The headers' values share one array: a Set each allocated one per header.
	vals := [...]string{"application/json", n.auth, n.cfg.UserAgent, accept}
	h := http.Header{"Content-Type": vals[0:1:1], "Authorization": vals[1:2:2], "User-Agent": vals[2:3:3], "Accept": vals[3:4:4]}
	req.Header = h
	for _, k := range ForwardedHeaders {
		if v := call.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	resp, err := n.client.Do(req)
	stop()
	if err != nil {
		cause := context.Cause(ctx)
		cancel(nil)
		if cause != nil && !errors.Is(cause, context.Canceled) {
			err = cause
		}
		return nil, fmt.Errorf("nanogpt: sending request: %w", err)
	}
	out := &Response{Header: pickHeaders(resp.Header)}
	if resp.StatusCode/100 != 2 {
		defer cancel(nil)
		defer resp.Body.Close()
		return nil, n.readError(resp, cancel)
	}
	ctype := resp.Header.Get("Content-Type")
	if call.Request.Stream && strings.HasPrefix(ctype, "text/event-stream") {
		sr := NewSSEReader(resp.Body)
		sr.Transform = addReasoningContentChunk
		sr.Backend = n.Name()
		if n.cfg.IdleTimeout > 0 {
			idle := time.AfterFunc(n.cfg.IdleTimeout, func() { cancel(ErrIdleTimeout) })
			sr.OnRead = func() { idle.Reset(n.cfg.IdleTimeout) }
			out.Stream = &closingStream{SSEReader: sr, stop: func() { idle.Stop(); cancel(nil) }}
		} else {
			out.Stream = &closingStream{SSEReader: sr, stop: func() { cancel(nil) }}
		}
		sr.Err = func(err error) error {
			if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
				return c
			}
			return err
		}
		return out, nil
	}
	defer cancel(nil)
	defer resp.Body.Close()
	var rd io.Reader = resp.Body
	if n.cfg.IdleTimeout > 0 {
		// A JSON answer that stalls mid-body is bounded like a stream.
		idle := time.AfterFunc(n.cfg.IdleTimeout, func() { cancel(ErrIdleTimeout) })
		defer idle.Stop()
		rd = &idleReader{r: resp.Body, reset: func() { idle.Reset(n.cfg.IdleTimeout) }}
	}
	b, err := readAll(io.LimitReader(rd, n.cfg.MaxResponseBody+1), resp.ContentLength)
	if err != nil {
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			err = c
		}
		return nil, fmt.Errorf("nanogpt: reading response: %w", err)
	}
	if int64(len(b)) > n.cfg.MaxResponseBody {
		return nil, &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "response_too_large",
			Message: "nanogpt: response body exceeds the proxy's limit", Backend: n.Name()}
	}
	// One validating pass over the answer; the members read below come from it.
	fields, err := SplitObject(b)
	if err != nil {
		return nil, &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "bad_upstream_response",
			Message: "nanogpt: upstream answered with a body that is not JSON", Backend: n.Name()}
	}
	// A stream request answered with JSON goes back as it came.
	if !call.Request.Stream && bytes.Contains(b, []byte(`"reasoning"`)) {
		if nb := addReasoningContentMessage(b); nb != nil {
			b = nb
		}
	}
	out.Body = b
	if ae := inBandError(b, Lookup(fields, "error")); ae != nil {
		// A 200 whose body is an error envelope is a failed attempt, not an answer.
		ae.Backend = n.Name()
		return nil, ae
	}
	out.Model, out.Usage = answerMeta(fields)
	// The members read from the split (the reasoning_content insertion above leaves the
	// values as they were).
	out.content, out.toolCalls = choiceOf(Lookup(fields, "choices"))
	out.choiceRead = true
	return out, nil
}

// idleReader calls reset after every read that returned data.
type idleReader struct {
	r     io.Reader
	reset func()
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if n > 0 {
		ir.reset()
	}
	return n, err
}

type closingStream struct {
	*SSEReader
	stop func()
}

// Bounds on reading the rest of a stream's body after [DONE].
const (
	drainTimeout = 200 * time.Millisecond
	maxDrain     = 64 << 10
)

func (c *closingStream) Close() error {
	// Closing a body that was not read to its end drops the connection, and NanoGPT
	// usually ends the body just after data: [DONE]: read that end (bounded) so the
	// next request reuses the connection instead of paying a new TLS handshake.
	if c.SSEReader.done {
		t := time.AfterFunc(drainTimeout, c.stop)
		c.SSEReader.drain(maxDrain)
		t.Stop()
	}
	c.stop()
	return c.SSEReader.Close()
}

func pickHeaders(h http.Header) http.Header {
	var out http.Header
	for _, k := range passedResponseHeaders {
		if v := h.Values(k); len(v) > 0 {
			if out == nil {
				out = make(http.Header, 2)
			}
			out[k] = v
		}
	}
	return out
}

// readError turns an upstream HTTP error into an APIError keeping status and message. An
// error body that stalls is bounded like an answer, by the idle timeout (the first-byte
// timeout when there is none): cancel ends the read, and what arrived is used.
func (n *NanoGPT) readError(resp *http.Response, cancel context.CancelCauseFunc) *APIError {
	var rd io.Reader = resp.Body
	if d := cmp.Or(n.cfg.IdleTimeout, n.cfg.FirstByteTimeout); d > 0 {
		idle := time.AfterFunc(d, func() { cancel(ErrIdleTimeout) })
		defer idle.Stop()
		rd = &idleReader{r: resp.Body, reset: func() { idle.Reset(d) }}
	}
	b, _ := io.ReadAll(io.LimitReader(rd, n.cfg.MaxErrorBody))
	ae := ParseErrorBody(resp.StatusCode, b)
	ae.Backend = n.Name()
	ae.RetryAfter = resp.Header.Get("Retry-After")
	return ae
}

// ParseErrorBody reads an OpenAI-style error body ({"error":{...}} or {"error":"..."} or
// {"message":"..."}); when the body has none of these, the message says the status.
func ParseErrorBody(status int, b []byte) *APIError {
	ae := &APIError{Status: status, Type: errorTypeFor(status)}
	var env struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(b, &env) == nil {
		var inner struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Code    json.RawMessage `json:"code"`
			Param   *string         `json:"param"`
		}
		var s string
		switch {
		case len(env.Error) > 0 && env.Error[0] == '{' && json.Unmarshal(env.Error, &inner) == nil:
			ae.Message = inner.Message
			if inner.Type != "" {
				ae.Type = inner.Type
			}
			if len(inner.Code) > 0 && inner.Code[0] == '"' {
				_ = json.Unmarshal(inner.Code, &ae.Code)
			} else if len(inner.Code) > 0 && string(inner.Code) != "null" {
				ae.Code = string(inner.Code)
			}
			if inner.Param != nil {
				ae.Param = *inner.Param
			}
		case len(env.Error) > 0 && json.Unmarshal(env.Error, &s) == nil:
			ae.Message = s
		case env.Message != "":
			ae.Message = env.Message
		}
	}
	if ae.Message == "" {
		text := strings.TrimSpace(string(b))
		if len(text) > 300 {
			text = text[:300]
		}
		ae.Message = fmt.Sprintf("upstream returned HTTP %d", status)
		if text != "" && !strings.HasPrefix(text, "<") {
			ae.Message += ": " + text
		}
	}
	return ae
}

func errorTypeFor(status int) string {
	switch {
	case status == 401:
		return "authentication_error"
	case status == 403:
		return "permission_error"
	case status == 404:
		return "not_found_error"
	case status == 429:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	default:
		return "invalid_request_error"
	}
}

// answerMeta reads the model and usage members of an answer split by SplitObject; a
// usage of the wrong shape counts as absent (the tokens are then estimated).
func answerMeta(fields []Field) (model string, usage *Usage) {
	if v := Lookup(fields, "model"); len(v) > 0 && v[0] == '"' {
		_ = decodeString(v, &model)
	}
	if v := Lookup(fields, "usage"); len(v) > 0 && v[0] == '{' {
		usage = usageFrom(v)
	}
	return model, usage
}

// usageFrom reads the token counts of a usage object (validated input); a count that is
// not a non-negative integer makes the whole usage absent, as encoding/json would fail.
func usageFrom(obj json.RawMessage) *Usage {
	var u Usage
	bad := false
	eachMemberAt(obj, 0, func(key []byte, from, to int) bool {
		var dst *int
		switch string(key) {
		case "prompt_tokens":
			dst = &u.PromptTokens
		case "completion_tokens":
			dst = &u.CompletionTokens
		case "total_tokens":
			dst = &u.TotalTokens
		default:
			return false
		}
		v := obj[from:to]
		if string(v) == "null" {
			return false
		}
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 0 {
			bad = true
			return true
		}
		*dst = n
		return false
	})
	if bad {
		return nil
	}
	return &u
}

// readAll is io.ReadAll starting with room for size bytes (a response's Content-Length;
// -1 when unknown) and one more, so that a body of the announced size is read into one
// allocation instead of io.ReadAll's from 512 bytes up.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 || size > 1<<20 {
		size = 511
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grow, as io.ReadAll does
		}
	}
}

// joinBelow is the body size up to which the upstream body is joined into one string.
// net/http writes a body it knows to be in memory (a strings.Reader) in the same write as
// the headers. Any other body has the headers flushed first and is copied through a
// buffer of min(32 KB, size) allocated for the call. Up to 32 KB, joining allocates the
// same and saves a system call; above it the parts go out as they are, most of them
// slices of the client's body, without a second copy of a 60 KB agent request.
const joinBelow = 32 << 10

// upstreamBody returns the body's size and a function giving a fresh reader of it (the
// transport asks again to retry on a stale connection). A reader of the parts themselves
// holds pin (ChatRequest.Pin) until it is closed.
func upstreamBody(parts [][]byte, pin func() func()) (int, func() io.ReadCloser) {
	size := 0
	for _, p := range parts {
		size += len(p)
	}
	if size <= joinBelow {
		var b strings.Builder
		b.Grow(size)
		for _, p := range parts {
			b.Write(p)
		}
		s := b.String()
		return size, func() io.ReadCloser { return io.NopCloser(strings.NewReader(s)) }
	}
	return size, func() io.ReadCloser {
		b := append(net.Buffers(nil), parts...) // Read consumes its own copy of the list
		if pin == nil {
			return io.NopCloser(&b)
		}
		return &pinnedBody{bufs: b, unpin: pin()}
	}
}

// pinnedBody reads slices of the client's body, which it holds until it is closed. The
// transport closes a request body when it is done with it, possibly after the answer came
// (HTTP/1 goes on writing a body the upstream answered early) and, with HTTP/2, while a
// Read is running: Close waits for it.
type pinnedBody struct {
	mu    sync.Mutex
	bufs  net.Buffers
	unpin func() // nil once closed
}

func (p *pinnedBody) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unpin == nil {
		return 0, errBodyClosed
	}
	return p.bufs.Read(b)
}

// writeWithin writes what is left of the body to w, without copying it (net.Buffers: a
// writev on a TCP connection), when it is at most limit bytes; whole is false when it is
// not, and nothing was written.
func (p *pinnedBody) writeWithin(w io.Writer, limit int64) (n int64, whole bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unpin == nil {
		return 0, true, errBodyClosed
	}
	size := int64(0)
	for _, b := range p.bufs {
		size += int64(len(b))
	}
	if size > limit {
		return 0, false, nil
	}
	n, err = p.bufs.WriteTo(w)
	return n, true, err
}

func (p *pinnedBody) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unpin != nil {
		p.unpin()
		p.unpin, p.bufs = nil, nil
	}
	return nil
}

var errBodyClosed = errors.New("nanogpt: request body read after close")
