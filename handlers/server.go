// Package handlers owns the HTTP surface: the chi routes (chat completions, models,
// health, status, admin), the one place where the five pipeline stages are called in
// order, and the one function that turns errors into OpenAI error JSON.
package handlers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// PromptEngineer is stage 1: role resolution and prompt optimisation.
type PromptEngineer interface {
	Prepare(ctx context.Context, req *backends.ChatRequest, in promptengineer.Input) (promptengineer.Result, error)
}

// Router is stage 2: the ordered candidates for a request.
type Router interface {
	Select(req routing.Request) ([]routing.Candidate, error)
	Rankings() *routing.Rankings
}

// ContextManager is stage 3: history and similar interactions.
type ContextManager interface {
	Enrich(ctx context.Context, req *backends.ChatRequest, in contextmgr.Input) contextmgr.Result
	Track(req *backends.ChatRequest, in contextmgr.Input) contextmgr.Tracker
}

// UsageRecorder is stage 5: it queues a usage row without blocking.
type UsageRecorder interface {
	Record(u storage.Usage) bool
}

// AttemptObserver is told the outcome of every upstream attempt (health, quota).
// Optional: a Router that implements it is called after each attempt.
type AttemptObserver interface {
	Observe(c routing.Candidate, err error, latency time.Duration)
}

// Config is what the handlers need of the configuration.
type Config struct {
	MaxBodyBytes   int64
	AdminToken     string
	DefaultProfile string
	Version        string

	// MaxAttempts bounds the upstream attempts of one request (0: one per candidate).
	MaxAttempts int
	// MaxFailoverTime is the longest after a request's arrival that a new fallback
	// attempt may start (0: no bound).
	MaxFailoverTime time.Duration

	// CommitHeadersAfter is how long after a request's arrival a stream with no content
	// yet may send its 200 and SSE headers with the upstream's keep-alive comments
	// (failover stays possible until the first data event); 0: only with the first content.
	CommitHeadersAfter time.Duration
}

// Deps are the stages and services the handlers call.
type Deps struct {
	Log      *slog.Logger
	Prompt   PromptEngineer
	Router   Router
	Context  ContextManager
	Backends map[string]backends.Backend
	Usage    UsageRecorder
	// Status sections shown by GET /status, by name; each is called per request.
	Status map[string]func() any
	// Admin mounts extra routes under /admin (behind the admin token).
	Admin []func(chi.Router)
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server serves the proxy's HTTP API.
type Server struct {
	cfg     Config
	d       Deps
	started time.Time
	mux     chi.Router
	stats   counters
}

type counters struct {
	requests  atomic.Int64
	errors    atomic.Int64
	streaming atomic.Int64
}

// New builds the HTTP handler.
func New(cfg Config, d Deps) *Server {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, d: d, started: d.Now()}
	r := chi.NewRouter()
	r.Use(requestIDMiddleware)
	r.Use(middleware.Recoverer)
	r.NotFound(s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "not_found",
			Message: "Unknown request URL: " + r.Method + " " + r.URL.Path + ". Please check the URL for typos."}
	}))
	r.MethodNotAllowed(s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &backends.APIError{Status: 405, Type: "invalid_request_error", Code: "method_not_allowed",
			Message: "Method " + r.Method + " is not allowed on " + r.URL.Path}
	}))
	r.Post("/v1/chat/completions", s.wrap(s.chat))
	r.Post("/chat/completions", s.wrap(s.chat))
	r.Post("/v1/route/explain", s.wrap(s.routeExplain))
	r.Get("/v1/models", s.wrap(s.listModels))
	r.Get("/v1/models/*", s.wrap(s.getModel))
	r.Get("/health", s.wrap(s.health))
	r.Get("/status", s.wrap(s.status))
	r.Route("/admin", func(ar chi.Router) {
		ar.Use(s.adminAuth)
		for _, mount := range d.Admin {
			mount(ar)
		}
	})
	s.mux = r
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// HandlerFunc is an HTTP handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap turns a HandlerFunc into an http.HandlerFunc; errors go through WriteError.
func (s *Server) wrap(h HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.WriteError(w, r, err)
		}
	}
}

// Wrap is wrap for handlers defined in other files of extensions (admin routes).
func (s *Server) Wrap(h HandlerFunc) http.HandlerFunc { return s.wrap(h) }

type ctxKey int

const requestIDKey ctxKey = 0

// RequestID returns the request id set by the middleware.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey).(string)
	return id
}

func requestIDMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey, id)))
	})
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

func (s *Server) adminAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || !constantTimeEqual(got, s.cfg.AdminToken) {
				s.WriteError(w, r, &backends.APIError{Status: 401, Type: "authentication_error", Code: "invalid_admin_token",
					Message: "This endpoint needs the admin token: send Authorization: Bearer <ADMIN_TOKEN>."})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// WriteError is the one place where an error becomes an OpenAI error response.
func (s *Server) WriteError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	if ae.Status >= 500 {
		s.d.Log.Warn("request failed", "request_id", RequestID(r.Context()), "status", ae.Status, "err", err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if ae.RetryAfter != "" {
		h.Set("Retry-After", ae.RetryAfter)
	}
	if ae.NoRetry {
		h.Set("X-Should-Retry", "false")
	}
	w.WriteHeader(ae.Status)
	b, _ := ae.MarshalJSON()
	_, _ = w.Write(append(b, '\n'))
}

func toAPIError(err error) *backends.APIError {
	var ae *backends.APIError
	if errors.As(err, &ae) {
		return ae
	}
	var re *backends.RequestError
	if errors.As(err, &re) {
		return &backends.APIError{Status: 400, Type: "invalid_request_error", Param: re.Param, Message: re.Message}
	}
	var ire *promptengineer.InvalidRoleError
	if errors.As(err, &ire) {
		return &backends.APIError{Status: 400, Type: "invalid_request_error", Code: "invalid_role", Param: "role", Message: ire.Error()}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &backends.APIError{Status: 413, Type: "invalid_request_error", Code: "request_too_large",
			Message: "Request body too large: the limit is " + humanBytes(mbe.Limit) + " (MAX_BODY_BYTES)."}
	}
	return &backends.APIError{Status: 500, Type: "server_error", Message: "internal error", Err: err}
}
