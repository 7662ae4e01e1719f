package routing

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Candidate is one backend+model to try, in order.
type Candidate struct {
	Backend string
	Model   string
	// Reason says why this candidate is on the list (for logs and explain mode).
	Reason string
}

// Request is what selection needs to know of a request.
type Request struct {
	Role roles.Role
	// Model is the client's model: "auto", "auto:<role>" or a model id.
	Model   string
	Profile string
}

// Config configures a Router.
type Config struct {
	// RankingsPath is the rankings file; when it does not exist the embedded default is used.
	RankingsPath string
	// Default is the embedded rankings.
	Default []byte
	// Enabled reports whether a backend is configured; disabled backends are skipped.
	Enabled func(backend string) bool
}

// Router selects candidates. It is safe for concurrent use; the rankings are swapped
// atomically, so a request sees the old or the new rankings, never a mix.
type Router struct {
	cfg      Config
	log      *slog.Logger
	rankings atomic.Pointer[Rankings]
	source   atomic.Value // string: where the rankings came from
}

// New loads the rankings (file if present, else the embedded default) and returns a Router.
func New(cfg Config, log *slog.Logger) (*Router, error) {
	if cfg.Enabled == nil {
		cfg.Enabled = func(string) bool { return true }
	}
	r := &Router{cfg: cfg, log: log}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload re-reads the rankings file. An invalid file is rejected and the rankings in
// force stay; the error names the problem.
func (r *Router) Reload() error {
	b, src, err := r.read()
	if err != nil {
		return err
	}
	rk, err := ParseRankings(b)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	r.rankings.Store(rk)
	r.source.Store(src)
	return nil
}

func (r *Router) read() ([]byte, string, error) {
	if r.cfg.RankingsPath != "" {
		b, err := os.ReadFile(r.cfg.RankingsPath)
		if err == nil {
			return b, r.cfg.RankingsPath, nil
		}
		if !os.IsNotExist(err) {
			return nil, r.cfg.RankingsPath, fmt.Errorf("routing: reading rankings: %w", err)
		}
	}
	if len(r.cfg.Default) == 0 {
		return nil, "", fmt.Errorf("routing: no rankings file at %q and no embedded default", r.cfg.RankingsPath)
	}
	return r.cfg.Default, "embedded", nil
}

// Rankings returns the rankings in force.
func (r *Router) Rankings() *Rankings { return r.rankings.Load() }

// Source says where the rankings in force came from (a path or "embedded").
func (r *Router) Source() string { s, _ := r.source.Load().(string); return s }

// ParseAlias reports whether model is "auto" or "auto:<role>"; role is empty for plain
// "auto". An unknown role after "auto:" is an error.
func ParseAlias(model string) (role roles.Role, isAlias bool, err error) {
	if model == "auto" {
		return "", true, nil
	}
	if rest, ok := strings.CutPrefix(model, "auto:"); ok {
		role, ok := roles.Parse(rest)
		if !ok {
			return "", true, &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
				Message: fmt.Sprintf("The model %q does not exist: unknown role %q (valid roles: %s)", model, rest, roles.List())}
		}
		return role, true, nil
	}
	return "", false, nil
}

// Select returns the candidates for req in the order they should be tried.
func (r *Router) Select(req Request) ([]Candidate, error) {
	rk := r.rankings.Load()
	if _, isAlias, err := ParseAlias(req.Model); err != nil {
		return nil, err
	} else if isAlias {
		return r.forRole(rk, req.Role)
	}
	backend, model, ok := r.resolveModel(rk, req.Model)
	if !ok {
		return nil, &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model %q does not exist or is not routable. Use \"auto\", \"auto:<role>\", a model from GET /v1/models, or prefix a model id with \"nanogpt/\" or \"vertex/\".", req.Model)}
	}
	if !r.cfg.Enabled(backend) {
		return nil, unavailable(backend)
	}
	return []Candidate{{Backend: backend, Model: model, Reason: "explicit model"}}, nil
}

func (r *Router) forRole(rk *Rankings, role roles.Role) ([]Candidate, error) {
	if role == "" {
		role = roles.General
	}
	rr, ok := rk.Role(role)
	if !ok {
		rr, _ = rk.Role(roles.General)
	}
	var out []Candidate
	var skipped []string
	for i, e := range rr.all() {
		if !r.cfg.Enabled(e.Backend) {
			skipped = append(skipped, e.Backend)
			continue
		}
		dup := false
		for _, c := range out {
			if c.Backend == e.Backend && c.Model == e.Model {
				dup = true
			}
		}
		if dup {
			continue
		}
		reason := e.Reason
		switch {
		case i == 0:
			reason = "primary for " + string(role)
		case rr.FreeTier != nil && i == len(rr.Fallbacks)+1:
			reason = "free tier for " + string(role)
		default:
			reason = fmt.Sprintf("fallback %d for %s", i, role)
		}
		out = append(out, Candidate{Backend: e.Backend, Model: e.Model, Reason: reason})
	}
	if len(out) == 0 {
		b := "nanogpt"
		if len(skipped) > 0 {
			b = skipped[0]
		}
		return nil, unavailable(b)
	}
	return out, nil
}

// resolveModel maps an explicit model id to its backend: a "nanogpt/" or "vertex/" prefix
// forces one; otherwise the rankings say which backend serves it.
func (r *Router) resolveModel(rk *Rankings, model string) (backend, id string, ok bool) {
	for _, b := range KnownBackends {
		if rest, found := strings.CutPrefix(model, b+"/"); found && rest != "" {
			return b, rest, true
		}
	}
	if b, found := rk.BackendOf(model); found {
		return b, model, true
	}
	return "", "", false
}

func unavailable(backend string) *backends.APIError {
	msg := fmt.Sprintf("The %s backend is not configured.", backend)
	switch backend {
	case "nanogpt":
		msg = "The NanoGPT backend is disabled: NANOGPT_API_KEY is not set. Set it and restart the proxy."
	case "vertex":
		msg = "The Vertex AI backend is disabled: VERTEX_PROJECT_ID is not set."
	}
	return &backends.APIError{Status: 503, Type: "server_error", Code: "backend_not_configured", Message: msg}
}
