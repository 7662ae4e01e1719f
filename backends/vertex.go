package backends

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"google.golang.org/genai"
)

// VertexConfig configures the Vertex AI backend. The zero value of a duration disables
// that timeout.
type VertexConfig struct {
	// ProjectID and Location name the Google Cloud project and region.
	ProjectID string
	Location  string
	// BaseURL, when set, replaces the Vertex endpoint (tests, private endpoints); no
	// Google credentials are looked up then. Empty: Application Default Credentials and
	// the regional endpoint.
	BaseURL string
	// FirstByteTimeout bounds the wait for the first Gemini record.
	FirstByteTimeout time.Duration
	// IdleTimeout bounds the silence between two stream records.
	IdleTimeout time.Duration
	// Now is the clock for the created field (nil: time.Now).
	Now func() time.Time
	// NewID returns a fresh random token for response and tool call ids (nil: 12 random
	// hex digits).
	NewID func() string
}

// Vertex is the Vertex AI backend: Gemini models reached through the genai SDK, with
// requests and answers translated to and from the OpenAI chat completion format.
type Vertex struct {
	cfg    VertexConfig
	client *genai.Client
	log    *slog.Logger
	decls  declCache
}

var _ Backend = (*Vertex)(nil)

// NewVertex returns a Vertex backend. httpClient is used only with a BaseURL override
// (nil: a tuned default); without one the SDK builds an authorized client from
// Application Default Credentials, and an error is returned when none are found.
func NewVertex(ctx context.Context, cfg VertexConfig, httpClient *http.Client, log *slog.Logger) (*Vertex, error) {
	if cfg.ProjectID == "" {
		return nil, errors.New("vertex: VERTEX_PROJECT_ID is not set")
	}
	if cfg.Location == "" {
		cfg.Location = "us-central1"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = randomID
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cc := &genai.ClientConfig{
		Backend:     genai.BackendVertexAI,
		Project:     cfg.ProjectID,
		Location:    cfg.Location,
		HTTPOptions: genai.HTTPOptions{APIVersion: "v1"},
	}
	if cfg.BaseURL != "" {
		if httpClient == nil {
			httpClient = &http.Client{Transport: NewTransport()}
		}
		// An HTTP client without Credentials makes the SDK skip the ADC lookup.
		cc.HTTPOptions.BaseURL = strings.TrimRight(cfg.BaseURL, "/") + "/"
		cc.HTTPClient = httpClient
	}
	client, err := genai.NewClient(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("vertex: creating client: %w", err)
	}
	return &Vertex{cfg: cfg, client: client, log: log}, nil
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Name returns "vertex".
func (v *Vertex) Name() string { return "vertex" }

// ChatCompletion translates the call to a Gemini GenerateContent (or
// streamGenerateContent) request and the answer back to OpenAI JSON or chunks.
func (v *Vertex) ChatCompletion(ctx context.Context, call *Call) (*Response, error) {
	model := vertexModel(call.Model)
	contents, gcfg, err := translateRequest(ctx, v.log, &v.decls, call.Request, model)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var timer *time.Timer
	if v.cfg.FirstByteTimeout > 0 {
		timer = time.AfterFunc(v.cfg.FirstByteTimeout, func() { cancel(ErrFirstByteTimeout) })
	}
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
		}
	}
	tr := &translator{id: v.cfg.NewID(), created: v.cfg.Now().Unix(), model: model}
	if !call.Request.Stream {
		defer cancel(nil)
		resp, err := v.client.Models.GenerateContent(ctx, model, contents, gcfg)
		stopTimer()
		if err != nil {
			return nil, v.mapError(ctx, err)
		}
		body, usage, err := tr.completion(resp)
		if err != nil {
			return nil, err
		}
		return &Response{Body: body, Usage: usage, Model: tr.model}, nil
	}
	next, stop := iter.Pull2(v.client.Models.GenerateContentStream(ctx, model, contents, gcfg))
	first, err, ok := next()
	stopTimer()
	if err == nil && !ok {
		err = fmt.Errorf("vertex: reading stream: %w", ErrStreamCut)
	}
	if err != nil {
		stop()
		cancel(nil)
		return nil, v.mapError(ctx, err)
	}
	st := &vertexStream{v: v, ctx: ctx, tr: tr, next: next}
	st.stop = func() { stop(); cancel(nil) }
	if v.cfg.IdleTimeout > 0 {
		idle := time.AfterFunc(v.cfg.IdleTimeout, func() { cancel(ErrIdleTimeout) })
		st.onRead = func() { idle.Reset(v.cfg.IdleTimeout) }
		st.stop = func() { idle.Stop(); stop(); cancel(nil) }
	}
	st.queue = append(st.queue, tr.roleChunk(first))
	st.queue = append(st.queue, tr.record(first)...)
	return &Response{Stream: st, Model: tr.model}, nil
}

// vertexStream turns the SDK's response iterator into OpenAI chunk events.
type vertexStream struct {
	v      *Vertex
	ctx    context.Context
	tr     *translator
	next   func() (*genai.GenerateContentResponse, error, bool)
	stop   func()
	onRead func()
	queue  []Event
	ended  bool
	closed bool
}

// Next returns the next OpenAI chunk. See EventStream.
func (s *vertexStream) Next() (Event, error) {
	for len(s.queue) == 0 {
		if s.ended {
			return Event{}, io.EOF
		}
		rec, err, ok := s.next()
		if s.onRead != nil {
			s.onRead()
		}
		switch {
		case err != nil:
			s.ended = true
			return Event{}, s.v.mapError(s.ctx, err)
		case !ok:
			s.ended = true
			if !s.tr.finished {
				return Event{}, fmt.Errorf("vertex: reading stream: %w", ErrStreamCut)
			}
			s.queue = append(s.queue, s.tr.tail()...)
		default:
			s.queue = append(s.queue, s.tr.record(rec)...)
		}
	}
	ev := s.queue[0]
	s.queue = s.queue[1:]
	return ev, nil
}

// Close stops the upstream stream; it is safe to call more than once.
func (s *vertexStream) Close() error {
	if !s.closed {
		s.closed = true
		s.stop()
	}
	return nil
}

// mapError turns an SDK or transport error into the APIError the client sees: Google's
// status mapped to the OpenAI one, Google's message kept.
func (v *Vertex) mapError(ctx context.Context, err error) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrFirstByteTimeout) || errors.Is(cause, ErrIdleTimeout) || errors.Is(err, context.DeadlineExceeded) {
		if cause == nil || errors.Is(cause, context.Canceled) {
			cause = err
		}
		return &APIError{Status: http.StatusGatewayTimeout, Type: "timeout_error", Code: "upstream_timeout",
			Message: fmt.Sprintf("vertex: %v", cause), Backend: v.Name(), Err: err}
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return err
	}
	var ge genai.APIError
	if gp := (*genai.APIError)(nil); errors.As(err, &gp) && gp != nil {
		ge = *gp
	} else if !errors.As(err, &ge) {
		return fmt.Errorf("vertex: %w", err)
	}
	return apiErrorFromGoogle(ge)
}

// apiErrorFromGoogle maps a Google API error: 400 → 400, 401/403 → 401/403, 404 → 404,
// 429 → 429, 503/UNAVAILABLE → 503, 504/DEADLINE_EXCEEDED → 504, other 5xx → 502.
func apiErrorFromGoogle(ge genai.APIError) *APIError {
	status := ge.Status
	if strings.ContainsRune(status, ' ') { // "503 Service Unavailable" from a non-JSON body
		status = ""
	}
	ae := &APIError{Status: ge.Code, Message: ge.Message, Backend: "vertex", Code: strings.ToLower(status), Err: ge}
	switch {
	case ge.Code == 503 || status == "UNAVAILABLE":
		ae.Status = http.StatusServiceUnavailable
	case ge.Code == 504 || status == "DEADLINE_EXCEEDED":
		ae.Status = http.StatusGatewayTimeout
	case ge.Code >= 500:
		ae.Status = http.StatusBadGateway
	case ge.Code == 0:
		ae.Status = http.StatusBadGateway
	}
	ae.Type = errorTypeFor(ae.Status)
	switch ae.Status {
	case http.StatusBadGateway:
		ae.Type = "upstream_error"
	case http.StatusGatewayTimeout:
		ae.Type = "timeout_error"
	case http.StatusNotFound:
		ae.Code = "model_not_found"
	case http.StatusBadRequest:
		// Roo Code and others truncate and retry when the message says "context length".
		if strings.Contains(ae.Message, "input token count") {
			ae.Code = "context_length_exceeded"
			ae.Message += " (context length exceeded)"
		}
	}
	if ae.Message == "" {
		ae.Message = fmt.Sprintf("vertex returned HTTP %d %s", ge.Code, ge.Status)
	}
	return ae
}
