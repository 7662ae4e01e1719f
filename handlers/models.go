package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// Model is an entry of GET /v1/models (OpenAI shape plus the proxy's own fields).
type Model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Backend is where the model is served ("router" for the auto aliases).
	Backend string `json:"backend,omitempty"`
	// Roles lists, for a ranked model, where it ranks ("architect:primary", ...).
	Roles []string `json:"roles,omitempty"`
	// Description says what an alias does.
	Description string `json:"description,omitempty"`
	// Subscription marks a model covered by the NanoGPT subscription (counts against the quota).
	Subscription bool `json:"subscription,omitempty"`
}

// ModelCatalog is optionally implemented by the Router: models routable by explicit id
// beyond the rankings, and which models the subscription covers.
type ModelCatalog interface {
	Catalog() map[string]string
	IsSubscription(backend, model string) bool
}

func (s *Server) models() []Model {
	rk := s.d.Router.Rankings()
	created := s.started.Unix()
	if t, err := time.Parse(time.RFC3339, rk.UpdatedAt); err == nil {
		created = t.Unix()
	}
	out := []Model{{ID: "auto", Object: "model", Created: created, OwnedBy: "nanogpt-proxy", Backend: "router",
		Description: "Picks the role of each request and the best model for it."}}
	for _, r := range roles.All {
		out = append(out, Model{ID: "auto:" + string(r), Object: "model", Created: created, OwnedBy: "nanogpt-proxy",
			Backend: "router", Description: "Routes as role " + string(r) + "."})
	}
	mc, _ := s.d.Router.(ModelCatalog)
	seen := map[string]bool{}
	for _, id := range rk.ModelIDs() {
		b, _ := rk.BackendOf(id)
		if !s.configured(b) {
			continue // a client that picks it would only get a 503
		}
		seen[id] = true
		m := Model{ID: id, Object: "model", Created: created, OwnedBy: ownerOf(id, b), Backend: b, Roles: rankedFor(rk, id)}
		if mc != nil {
			m.Subscription = mc.IsSubscription(b, id)
		}
		out = append(out, m)
	}
	if mc != nil {
		cat := mc.Catalog()
		ids := make([]string, 0, len(cat))
		for id := range cat {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			b := cat[id]
			if seen[id] || !s.configured(b) {
				continue
			}
			out = append(out, Model{ID: id, Object: "model", Created: created, OwnedBy: ownerOf(id, b), Backend: b,
				Subscription: mc.IsSubscription(b, id)})
		}
	}
	return out
}

func ownerOf(id, backend string) string {
	if owner, _, ok := strings.Cut(id, "/"); ok {
		return owner
	}
	if backend == "vertex" || strings.HasPrefix(id, "gemini") {
		return "google"
	}
	return backend
}

// rankedFor lists where model ranks: "role:primary", "role:fallback", "role:free_tier".
func rankedFor(rk *routing.Rankings, model string) []string {
	var out []string
	for _, r := range roles.All {
		rr, ok := rk.Role(r)
		if !ok {
			continue
		}
		if strings.EqualFold(rr.Primary.Model, model) {
			out = append(out, string(r)+":primary")
		}
		for _, f := range rr.Fallbacks {
			if strings.EqualFold(f.Model, model) {
				out = append(out, string(r)+":fallback")
				break
			}
		}
		if rr.FreeTier != nil && strings.EqualFold(rr.FreeTier.Model, model) {
			out = append(out, string(r)+":free_tier")
		}
	}
	return out
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": s.models()})
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) error {
	id := chi.URLParam(r, "*")
	ms := s.models()
	if i := slices.IndexFunc(ms, func(m Model) bool { return m.ID == id }); i >= 0 {
		return writeJSON(w, http.StatusOK, ms[i])
	}
	// A backend-prefixed id names a model on that backend directly.
	for _, b := range routing.KnownBackends {
		if rest, ok := strings.CutPrefix(id, b+"/"); ok && rest != "" && s.configured(b) {
			m := Model{ID: id, Object: "model", Created: s.started.Unix(), OwnedBy: ownerOf(rest, b), Backend: b}
			if i := slices.IndexFunc(ms, func(m Model) bool { return m.ID == rest && m.Backend == b }); i >= 0 {
				m = ms[i]
				m.ID = id
			}
			return writeJSON(w, http.StatusOK, m)
		}
	}
	return &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
		Message: fmt.Sprintf("The model %q does not exist.", id)}
}

// configured reports whether backend b can serve requests (it has its key or project).
func (s *Server) configured(b string) bool {
	_, ok := s.d.Backends[b]
	return ok
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("handlers: encoding response: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return nil
}
