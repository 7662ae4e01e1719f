package handlers

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// exchange is one chat request as it moves through the pipeline.
type exchange struct {
	id       string
	start    time.Time
	req      *backends.ChatRequest
	role     roles.Role
	reason   string
	profile  string
	convID   string
	attempts int
	// bodyLen is the size of the client body, for token estimates.
	bodyLen int
	// headersSent: the 200 and SSE headers (and maybe keep-alive comments) went out before
	// the first data event; failover is still possible, but a failure is now in-band.
	headersSent bool
	// commitLatency is the time from the served attempt's start to its first content.
	commitLatency time.Duration
}

// promptBytes is the size of the body sent upstream for model (after the guidance and
// context stages), for token estimates when the upstream reports no usage.
func (ex *exchange) promptBytes(model string) int {
	if ex.req == nil {
		return ex.bodyLen
	}
	n := 0
	for _, p := range ex.req.UpstreamParts(model) {
		n += len(p)
	}
	return n
}

// chat is POST /v1/chat/completions: the five stages, in order.
func (s *Server) chat(w http.ResponseWriter, r *http.Request) error {
	s.stats.requests.Add(1)
	ctx := r.Context()
	ex := &exchange{id: RequestID(ctx), start: s.d.Now()}

	rb, err := readBody(w, r, s.cfg.MaxBodyBytes)
	defer rb.release()
	body := rb.b
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &backends.APIError{Status: 400, Type: "invalid_request_error", Message: "reading the request body failed: " + err.Error()}
	}
	ex.bodyLen = len(body)
	req, err := backends.ParseChatRequest(body)
	if err != nil {
		return err
	}
	req.Pin = rb.pin // an upstream body made of the body's bytes holds them until it is closed
	ex.req = req
	ex.profile = s.cfg.DefaultProfile
	if p := r.Header.Get("X-Profile"); p != "" {
		ex.profile = p // the router rejects an unknown profile with a 400 naming the valid ones
	}
	aliasRole, _, err := routing.ParseAlias(req.Model)
	if err != nil {
		return err
	}

	// The conversation key hashes the client's own system prompt, before stage 1 adds to it.
	// Header names are looked up in their canonical form: Get canonicalises any other
	// spelling into a new string on every request.
	convHeader := r.Header.Get("X-Conversation-Id")
	ex.convID = contextmgr.ConversationID(req, convHeader)
	// So does the condensing check: stages 1 and 3 add to the system area.
	condensing := contextmgr.IsCondensing(req)

	// 1. Prompt engineer.
	pr, err := s.d.Prompt.Prepare(ctx, req, promptengineer.Input{HeaderRole: r.Header.Get("X-Proxy-Role"), AliasRole: aliasRole,
		ConversationID: ex.convID})
	if err != nil {
		return err
	}
	ex.role, ex.reason = pr.Role, pr.Reason
	w.Header().Set("X-Proxy-Role", string(ex.role))

	// 2. Model router.
	cands, err := s.d.Router.Select(routing.Request{Role: ex.role, Model: req.Model, Profile: ex.profile, ConversationID: ex.convID})
	if err != nil {
		return err
	}

	// 3. Context manager.
	cin := contextmgr.Input{RequestID: ex.id, ConversationID: ex.convID, Role: ex.role,
		NoStore: strings.EqualFold(r.Header.Get("X-Proxy-No-Store"), "true"), ContextWindow: contextWindow(s.d.Router, cands),
		Original: pr.Original, Helper: pr.Helper, Profile: ex.profile, Condensing: condensing,
		DerivedConversation: req.ConversationID == "" && convHeader == ""}
	dry := dryRun(r)
	var tracker contextmgr.Tracker
	if !dry {
		tracker = s.d.Context.Track(req, cin) // the client's own turns, before history joins them
	}
	s.d.Context.Enrich(ctx, req, cin)
	if dry {
		return s.explain(w, ex, pr, cands) // explain mode: no backend call, nothing saved
	}

	// 4. Backend, with fallback until the first data event reaches the client.
	resp, cand, pre, err := s.attempt(ctx, w, ex, cands, r.Header)
	if err != nil {
		if tracker != nil {
			tracker.Finish(false)
		}
		s.record(ex, cand, nil, err, 0)
		if ex.headersSent {
			// The 200 is out: the failure of every candidate is one in-band error event.
			s.writeErrorEvent(w, toAPIError(err))
			return nil
		}
		if ex.attempts > 0 {
			w.Header().Set("X-Proxy-Attempts", strconv.Itoa(ex.attempts))
		}
		return err
	}
	defer resp.Close()
	if resp.Stream == nil {
		answerHeaders(w, ex, cand, resp, "Content-Type", "application/json", "Content-Length", strconv.Itoa(len(resp.Body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(resp.Body)
		// The client gets its answer now, not after the bookkeeping below.
		_ = http.NewResponseController(w).Flush()
		if tracker != nil {
			if content, calls, ok := resp.Answer(); ok {
				tracker.Answer(content, calls)
			}
			tracker.Finish(true)
		}
		// 5. Usage tracker.
		if resp.Usage == nil {
			s.recordWith(ex, cand, estimateJSONUsage(ex.promptBytes(cand.Model), resp.Body), true, nil, 0, http.StatusOK)
			return nil
		}
		s.record(ex, cand, resp.Usage, nil, 0)
		return nil
	}
	s.stream(w, r, ex, cand, resp, pre, tracker)
	return nil
}

// maxPending caps the events held back before the first content chunk.
const maxPending = 64

// errClientGone means writing an early keep-alive to the client failed.
var errClientGone = errors.New("handlers: writing to the client failed")

// attempt tries the candidates in order. A streaming answer is read up to its first content
// chunk before it is committed, so a stream that dies before any output, or that carries
// only an in-band error, also falls over to the next candidate. pre holds the data events
// read so far (to be written first). Once Config.CommitHeadersAfter has passed with no
// content, the 200 and SSE headers and the upstream's keep-alive comments go out as they
// arrive (see earlyHeaders); failover stays possible until the first data event is written.
// Attempts are bounded by Config.MaxAttempts and no new attempt starts after
// Config.MaxFailoverTime; a failure the request itself caused (a 400) is never retried
// elsewhere. A streaming answer is observed (health, stickiness) when it ends, in stream.
func (s *Server) attempt(ctx context.Context, w http.ResponseWriter, ex *exchange, cands []routing.Candidate, hdr http.Header) (*backends.Response, routing.Candidate, []backends.Event, error) {
	var lastErr error
	var last routing.Candidate
	obs, _ := s.d.Router.(AttemptObserver)
	for _, c := range cands {
		be, ok := s.d.Backends[c.Backend]
		if !ok {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if ex.attempts > 0 && s.failoverExhausted(ex) {
			break
		}
		ex.attempts++
		last = c
		t0 := s.d.Now()
		resp, err := be.ChatCompletion(ctx, &backends.Call{Model: c.Model, Request: ex.req, Header: hdr})
		var pre []backends.Event
		switch {
		case err != nil:
		case resp.Stream != nil:
			pre, err = s.readToFirstContent(w, ex, c, resp)
			if err != nil {
				resp.Close()
				if !errors.Is(err, errClientGone) {
					err = backends.AsAPIError(c.Backend, fmt.Errorf("%s: stream failed before its first content: %w", c.Backend, err))
				}
			}
		case ex.headersSent:
			// SSE headers are out and this upstream answered the stream request with JSON.
			err = &backends.APIError{Status: http.StatusBadGateway, Type: "upstream_error", Code: "bad_upstream_response", Backend: c.Backend,
				Message: fmt.Sprintf("%s answered a stream request with JSON after the stream had started", c.Backend)}
		}
		if errors.Is(err, errClientGone) {
			lastErr = err
			break
		}
		if err == nil {
			if ex.attempts > 1 {
				s.d.Log.Info("served by fallback", "request_id", ex.id, "backend", c.Backend, "model", c.Model, "attempt", ex.attempts)
			}
			ex.commitLatency = s.d.Now().Sub(t0)
			if resp.Stream == nil {
				s.settle(ex, c, nil)
			}
			return resp, c, pre, nil
		}
		var ae *backends.APIError
		if obs != nil && ctx.Err() == nil && !(errors.As(err, &ae) && ae.Untranslatable) {
			obs.Observe(c, err, s.d.Now().Sub(t0)) // the proxy's own translation failure says nothing of the upstream
		}
		lastErr = err
		s.d.Log.Warn("upstream attempt failed", "request_id", ex.id, "backend", c.Backend, "model", c.Model,
			"attempt", ex.attempts, "status", backends.AsAPIError(c.Backend, err).Status, "retryable", backends.Retryable(err), "err", err)
		if !backends.Retryable(err) {
			break
		}
	}
	if ctx.Err() != nil || errors.Is(lastErr, errClientGone) {
		return nil, last, nil, &backends.APIError{Status: 499, Type: "client_closed_request", Message: "client closed the request", Err: cmp.Or(ctx.Err(), lastErr)}
	}
	if lastErr == nil {
		lastErr = &backends.APIError{Status: 503, Type: "server_error", Code: "no_backend", Message: "no configured backend can serve this request"}
	}
	return nil, last, nil, backends.AsAPIError(last.Backend, lastErr)
}

// settle tells the router how the served attempt ended: err nil (or a failure of the
// client's) counts as a success and pins the conversation to c; an upstream failure,
// in-band or a broken stream, counts against c and does not pin.
func (s *Server) settle(ex *exchange, c routing.Candidate, err error) {
	if obs, ok := s.d.Router.(AttemptObserver); ok {
		obs.Observe(c, err, ex.commitLatency)
	}
	if p, ok := s.d.Router.(ConversationPinner); ok && err == nil {
		p.Pin(ex.convID, c)
	}
}

// readToFirstContent reads events until one carries output, the stream ends, or maxPending
// events are held. The events are copied: they outlive the stream's buffer. An in-band
// error event fails the attempt. Keep-alive comments go to the client at once when
// earlyHeaders allows it, else they are held with the data events.
func (s *Server) readToFirstContent(w http.ResponseWriter, ex *exchange, c routing.Candidate, resp *backends.Response) ([]backends.Event, error) {
	var pre []backends.Event
	for len(pre) < maxPending {
		ev, err := resp.Stream.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return pre, nil
			}
			return nil, err
		}
		if ev.Err != nil {
			if ev.Err.Backend == "" {
				ev.Err.Backend = c.Backend
			}
			return nil, ev.Err
		}
		if isComment(ev) && s.earlyHeaders(w, ex, c, resp) {
			held := pre[:0]
			for _, p := range pre {
				if isComment(p) {
					if _, err := w.Write(p.Raw); err != nil {
						return nil, errClientGone
					}
					continue
				}
				held = append(held, p)
			}
			pre = held
			if _, err := w.Write(ev.Raw); err != nil {
				return nil, errClientGone
			}
			if http.NewResponseController(w).Flush() != nil {
				return nil, errClientGone
			}
			continue
		}
		pre = append(pre, copyEvent(ev))
		if ev.Content || ev.Done || ev.Usage != nil {
			return pre, nil
		}
	}
	return pre, nil
}

// isComment reports whether ev is only SSE comment lines (keep-alives), which clients ignore.
func isComment(ev backends.Event) bool {
	if ev.Data != nil || ev.Done {
		return false
	}
	for line := range bytes.Lines(ev.Raw) {
		if l := bytes.TrimRight(line, "\r\n"); len(l) > 0 && l[0] != ':' {
			return false
		}
	}
	return true
}

// earlyHeaders reports whether the response headers are out, sending them first when
// Config.CommitHeadersAfter has passed since the request arrived (0: never early). Early
// headers name the candidate being tried then (X-Proxy-Model, X-Proxy-Backend,
// X-Proxy-Attempts); a later fallback cannot change them.
func (s *Server) earlyHeaders(w http.ResponseWriter, ex *exchange, c routing.Candidate, resp *backends.Response) bool {
	if ex.headersSent {
		return true
	}
	if d := s.cfg.CommitHeadersAfter; d <= 0 || s.d.Now().Sub(ex.start) < d {
		return false
	}
	s.d.Log.Info("response headers sent before the first content", "request_id", ex.id, "backend", c.Backend, "model", c.Model, "attempt", ex.attempts)
	s.writeStreamHeaders(w, ex, c, resp)
	return true
}

// writeStreamHeaders sends the 200 and SSE headers of a streaming answer, once.
func (s *Server) writeStreamHeaders(w http.ResponseWriter, ex *exchange, c routing.Candidate, resp *backends.Response) {
	if ex.headersSent {
		return
	}
	ex.headersSent = true
	answerHeaders(w, ex, c, resp, "Content-Type", "text/event-stream", "Cache-Control", "no-cache",
		"Connection", "keep-alive", "X-Accel-Buffering", "no")
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
}

// answerHeaders sets the X-Proxy-* headers naming candidate c, the upstream's own headers
// worth passing on, and last the headers kv names (name, value, ...; names in canonical
// form), which describe the proxy's answer and so win. The values share one array: a Set
// each allocated one per header.
func answerHeaders(w http.ResponseWriter, ex *exchange, c routing.Candidate, resp *backends.Response, kv ...string) {
	h := w.Header()
	vals := make([]string, 3, 3+len(kv)/2)
	vals[0], vals[1], vals[2] = c.Model, c.Backend, strconv.Itoa(ex.attempts)
	h["X-Proxy-Model"], h["X-Proxy-Backend"], h["X-Proxy-Attempts"] = vals[0:1:1], vals[1:2:2], vals[2:3:3]
	for k, v := range resp.Header {
		h[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		vals = append(vals, kv[i+1])
		h[kv[i]] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
}

// writeErrorEvent reports a failure in-band, after the 200 went out: one data event with
// the error envelope.
func (s *Server) writeErrorEvent(w http.ResponseWriter, ae *backends.APIError) {
	b, _ := json.Marshal(ae)
	_, _ = w.Write(append(append([]byte("data: "), b...), "\n\n"...))
	_ = http.NewResponseController(w).Flush()
}

func copyEvent(ev backends.Event) backends.Event {
	raw := append([]byte(nil), ev.Raw...)
	c := ev
	c.Raw = raw
	if ev.Data != nil {
		c.Data = append([]byte(nil), ev.Data...)
	}
	return c
}

// stream writes an upstream stream to the client, flushing after every event.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, ex *exchange, cand routing.Candidate,
	resp *backends.Response, pre []backends.Event, tracker contextmgr.Tracker) {
	s.stats.streaming.Add(1)
	defer s.stats.streaming.Add(-1)
	s.writeStreamHeaders(w, ex, cand, resp)
	rc := http.NewResponseController(w)

	var usage *backends.Usage
	var ttft time.Duration
	var outBytes int
	done := false
	var clientErr error // writing to the client failed: the client is gone, not the upstream
	write := func(ev backends.Event) error {
		if ev.Usage != nil {
			usage = ev.Usage
		}
		if ev.Content {
			if ttft == 0 {
				ttft = s.d.Now().Sub(ex.start)
			}
			outBytes += len(ev.Data)
		}
		if ev.Done {
			done = true
		}
		if !ev.UsageOnly || ex.req.IncludeUsage { // else the client did not ask for usage
			if _, err := w.Write(ev.Raw); err != nil {
				clientErr = err
				return err
			}
			if err := rc.Flush(); err != nil {
				clientErr = err
				return err
			}
		}
		// The answer is followed for saving once the client has the event, not before.
		if tracker != nil && ev.Data != nil {
			tracker.Chunk(ev.Data)
		}
		return nil
	}
	var streamErr error
	var upstreamErr *backends.APIError // an in-band error the upstream sent after the first content
	for _, ev := range pre {
		if streamErr = write(ev); streamErr != nil {
			break
		}
	}
	for streamErr == nil && !done {
		ev, err := resp.Stream.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && upstreamErr == nil {
				streamErr = err
			}
			break
		}
		if ev.Err != nil && upstreamErr == nil {
			upstreamErr = ev.Err
			if upstreamErr.Backend == "" {
				upstreamErr.Backend = cand.Backend
			}
		}
		// An in-band error is forwarded as the upstream sent it, and what follows it.
		if streamErr = write(ev); streamErr != nil {
			break
		}
	}
	status := http.StatusOK
	if upstreamErr != nil && clientErr == nil {
		// The client has the provider's own error event: the proxy adds none.
		status, streamErr = upstreamErr.Status, upstreamErr
		s.d.Log.Warn("upstream sent an error in the stream after the first byte", "request_id", ex.id, "backend", cand.Backend,
			"model", cand.Model, "status", status, "err", upstreamErr)
	} else if streamErr != nil && clientErr == nil && r.Context().Err() == nil {
		// After the first byte a failure can only be reported in-band: one error event,
		// never a clean end that looks like success.
		ae := backends.AsAPIError(cand.Backend, streamErr)
		if ae.Status == http.StatusBadGateway && ae.Code == "upstream_unreachable" {
			ae = &backends.APIError{Status: 502, Type: "upstream_error", Code: "stream_interrupted", Backend: cand.Backend,
				Message: fmt.Sprintf("%s: the upstream stream broke off: %v", cand.Backend, streamErr), Err: streamErr}
		}
		s.writeErrorEvent(w, ae)
		status = ae.Status
		s.d.Log.Warn("stream failed after first byte", "request_id", ex.id, "backend", cand.Backend, "model", cand.Model, "err", streamErr)
	} else if clientErr != nil || (r.Context().Err() != nil && !done) {
		// The client left before it had the whole stream; one that hangs up right after
		// [DONE] got everything and is a success.
		status = 499
		if streamErr = r.Context().Err(); streamErr == nil {
			streamErr = fmt.Errorf("writing to the client: %w", clientErr)
		}
	}
	if tracker != nil {
		tracker.Finish(streamErr == nil)
	}
	var recErr error
	switch {
	case upstreamErr != nil && clientErr == nil:
		recErr = upstreamErr
	case streamErr != nil:
		recErr = &backends.APIError{Status: status, Message: streamErr.Error()}
	}
	switch {
	case upstreamErr != nil:
		s.settle(ex, cand, upstreamErr)
	case streamErr != nil && status != 499:
		s.settle(ex, cand, streamErr)
	default:
		s.settle(ex, cand, nil) // a client that left says nothing of the upstream
	}
	if usage == nil {
		est := &backends.Usage{PromptTokens: ex.promptBytes(cand.Model) / 4, CompletionTokens: estimateFromChunks(outBytes)}
		est.TotalTokens = est.PromptTokens + est.CompletionTokens
		s.recordWith(ex, cand, est, true, recErr, ttft, status)
		return
	}
	s.recordWith(ex, cand, usage, false, recErr, ttft, status)
}

// estimateFromChunks guesses completion tokens from the bytes of content chunks: each
// chunk's envelope is about 150 bytes, and a token is about 4 bytes of text.
func estimateFromChunks(n int) int {
	if n <= 0 {
		return 0
	}
	return max(1, n/20)
}

// record writes the usage row of a finished request (non-streaming or failed).
func (s *Server) record(ex *exchange, cand routing.Candidate, usage *backends.Usage, err error, ttft time.Duration) {
	status := http.StatusOK
	if err != nil {
		status = toAPIError(err).Status
	}
	est := false
	if usage == nil && err == nil {
		usage = &backends.Usage{PromptTokens: ex.promptBytes(cand.Model) / 4}
		usage.TotalTokens = usage.PromptTokens
		est = true
	}
	s.recordWith(ex, cand, usage, est, err, ttft, status)
}

func (s *Server) recordWith(ex *exchange, cand routing.Candidate, usage *backends.Usage, estimated bool, err error, ttft time.Duration, status int) {
	latency := s.d.Now().Sub(ex.start)
	u := storage.Usage{
		CreatedAt: ex.start, RequestID: ex.id, Backend: cand.Backend, Model: cand.Model, Role: string(ex.role),
		ConversationID: ex.convID, Profile: ex.profile, StatusCode: status, LatencyMS: latency.Milliseconds(),
		TTFTMS: ttft.Milliseconds(), Attempts: ex.attempts, TokensEstimated: estimated,
	}
	if ex.req != nil {
		u.Stream = ex.req.Stream
	}
	if usage != nil {
		u.PromptTokens, u.CompletionTokens, u.TotalTokens = usage.PromptTokens, usage.CompletionTokens, usage.TotalTokens
	}
	if err != nil {
		s.stats.errors.Add(1)
		u.Error = toAPIError(err).Message
	}
	if s.d.Usage != nil {
		s.d.Usage.Record(u)
	}
	// The record is made here rather than by Logger.LogAttrs, which finds its caller's pc
	// (a stack walk, ~2 µs of every request) for a source the proxy's handlers never print.
	ctx := context.Background()
	if h := s.d.Log.Handler(); h.Enabled(ctx, slog.LevelInfo) {
		r := slog.NewRecord(time.Now(), slog.LevelInfo, "request", 0)
		r.AddAttrs(slog.String("request_id", ex.id),
			slog.String("role", u.Role), slog.String("model", u.Model), slog.String("backend", u.Backend),
			slog.Int("status", status), slog.Int64("latency_ms", u.LatencyMS), slog.Int64("ttft_ms", u.TTFTMS),
			slog.Int("attempts", u.Attempts), slog.Bool("stream", u.Stream), slog.Int("prompt_tokens", u.PromptTokens),
			slog.Int("completion_tokens", u.CompletionTokens), slog.Bool("tokens_estimated", estimated))
		_ = h.Handle(ctx, r)
	}
}
