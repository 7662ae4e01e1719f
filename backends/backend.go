// Package backends owns the upstream side of the proxy: the Backend interface, the
// OpenAI wire types kept as raw JSON (ChatRequest, SSE events, APIError), and the
// NanoGPT (OpenAI-compatible) and Vertex AI (Gemini) implementations.
package backends

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Backend sends chat completions to one upstream service.
type Backend interface {
	// Name is the backend's short name as used in rankings, usage rows and headers
	// ("nanogpt", "vertex").
	Name() string
	// ChatCompletion sends req for model. On success the caller must Close the response.
	// An error before any response byte is an *APIError when the upstream answered
	// with an HTTP error, or a transport error (see Classify).
	ChatCompletion(ctx context.Context, call *Call) (*Response, error)
}

// Call is one upstream attempt.
type Call struct {
	// Model is the upstream model id (without any "nanogpt/" or "vertex/" prefix).
	Model string
	// Request is the client's request after the pipeline's stages.
	Request *ChatRequest
	// Header holds client headers the backend may forward (already allowlisted).
	Header http.Header
}

// Response is an upstream answer. Exactly one of Body (non-streaming) and Stream is set.
type Response struct {
	// Header carries upstream response headers worth passing on (may be nil).
	Header http.Header
	// Body is the complete JSON body of a non-streaming answer, OpenAI-shaped.
	Body []byte
	// Stream yields the events of a streaming answer.
	Stream EventStream
	// Usage is the token usage of a non-streaming answer (nil when the upstream sent none).
	Usage *Usage
	// Model is the model that answered, as the upstream named it (may be empty).
	Model string

	// content and toolCalls are choices[index 0].message's members when the backend read
	// them while validating Body (choiceRead); Answer reads Body otherwise.
	content, toolCalls json.RawMessage
	choiceRead         bool
}

// Answer returns the content and tool_calls members of a non-streaming answer's
// choices[index 0].message, as raw JSON (nil when absent); ok is false when Body is not a
// JSON object. The NanoGPT backend reads them in its one validating pass over the body.
func (r *Response) Answer() (content, toolCalls json.RawMessage, ok bool) {
	if r.choiceRead {
		return r.content, r.toolCalls, true
	}
	return AnswerChoice(r.Body)
}

// Close releases the upstream connection.
func (r *Response) Close() error {
	if r.Stream != nil {
		return r.Stream.Close()
	}
	return nil
}

// EventStream yields server-sent events in the OpenAI chat.completion.chunk format.
type EventStream interface {
	// Next returns the next event. It returns io.EOF after the terminating
	// "data: [DONE]" event has been returned; any other error means the stream broke.
	Next() (Event, error)
	// Close releases the stream; it is safe to call more than once.
	Close() error
}

// Event is one server-sent event. Raw and Data may alias the stream's buffer: they are
// valid until the next call to Next.
type Event struct {
	// Raw is the exact bytes to write to the client, including the blank line that ends it.
	Raw []byte
	// Data is the JSON payload of its data line(s); nil for comments and for [DONE].
	Data []byte
	// Done marks the terminating "data: [DONE]" event.
	Done bool
	// Usage is set on the event that carries token usage.
	Usage *Usage
	// UsageOnly marks a chunk with no choices that only carries usage: it is withheld from
	// clients that did not ask for usage.
	UsageOnly bool
	// Content reports that the chunk carries model output (text, reasoning or a tool call),
	// as opposed to role-only, comment or usage events.
	Content bool
	// Err is set on an in-band upstream error: a data event whose top-level "error"
	// member is an object or a string, sent inside a 200 stream. Its Status comes from
	// the error's numeric code or status (502 without one); its Message is the upstream's.
	Err *APIError
}

// Usage is OpenAI token usage.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// APIError is an error in the OpenAI envelope, from an upstream or from the proxy itself.
type APIError struct {
	// Status is the HTTP status to answer with.
	Status int
	// Type, Code, Param and Message are the envelope fields; Code and Param may be empty.
	Type    string
	Code    string
	Param   string
	Message string
	// RetryAfter is the upstream's Retry-After value, passed on verbatim (empty: none).
	RetryAfter string
	// NoRetry asks SDK clients not to retry (header x-should-retry: false).
	NoRetry bool
	// Backend names the upstream that produced the error (empty for the proxy's own).
	Backend string
	// Untranslatable marks an error the proxy found itself while translating the request
	// for Backend (e.g. a part type or a tool message Gemini cannot take): the request may
	// still be valid for another backend, so the error is retryable elsewhere, and it says
	// nothing about the upstream's health.
	Untranslatable bool
	// Err is an underlying cause, never shown to the client.
	Err error
}

func (e *APIError) Error() string {
	if e.Backend != "" {
		return fmt.Sprintf("%s: %d %s", e.Backend, e.Status, e.Message)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Message)
}

func (e *APIError) Unwrap() error { return e.Err }

// MarshalJSON writes the OpenAI error envelope.
func (e *APIError) MarshalJSON() ([]byte, error) {
	type inner struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	}
	in := inner{Message: e.Message, Type: e.Type}
	if e.Code != "" {
		in.Code = &e.Code
	}
	if e.Param != "" {
		in.Param = &e.Param
	}
	return json.Marshal(struct {
		Error inner `json:"error"`
	}{in})
}

// Errors the proxy reports for transport failures.
var (
	// ErrFirstByteTimeout means the upstream sent nothing within the first-byte timeout.
	ErrFirstByteTimeout = errors.New("upstream sent no response within the timeout")
	// ErrIdleTimeout means an upstream stream stalled past the idle timeout.
	ErrIdleTimeout = errors.New("upstream stream stalled past the idle timeout")
	// ErrStreamCut means the upstream stream ended without [DONE].
	ErrStreamCut = errors.New("upstream stream ended before [DONE]")
)

// AsAPIError turns any backend error into the APIError the client sees: upstream HTTP
// errors keep their status and message; a timeout is 504; anything else is 502.
func AsAPIError(backend string, err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	if errors.Is(err, ErrFirstByteTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrIdleTimeout) {
		why := ErrFirstByteTimeout
		if errors.Is(err, ErrIdleTimeout) {
			why = ErrIdleTimeout
		}
		return &APIError{Status: http.StatusGatewayTimeout, Type: "timeout_error", Code: "upstream_timeout",
			Message: fmt.Sprintf("%s: %v", backend, why), Backend: backend, Err: err}
	}
	return &APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "upstream_unreachable",
		Message: fmt.Sprintf("%s is unreachable", backend), Backend: backend, Err: err}
}

// Retryable reports whether another candidate may serve a request that failed with err
// before any byte reached the client: transport errors, timeouts, an upstream's own
// 401/403 (its key or project), 402, 404 (model not found), 408, 409, 429 and 5xx, and a
// request the proxy could not translate for that backend (Untranslatable). A 400 caused by
// the request itself is never retried.
func Retryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ae *APIError
	if !errors.As(err, &ae) {
		return true
	}
	if ae.Untranslatable {
		return true
	}
	if ae.Backend == "" { // the proxy's own errors
		return false
	}
	switch s := ae.Status; {
	case s == 401, s == 403:
		// The client's credentials never go upstream: an upstream 401/403 means that
		// backend's key or project is wrong, and another backend may still serve.
		return true
	case s == 402, s == 404, s == 408, s == 409, s == 429, s >= 500:
		return true
	}
	return false
}

// RetryAfter parses a Retry-After header value (seconds or HTTP date) relative to now.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d, true
		}
		return 0, true
	}
	return 0, false
}
