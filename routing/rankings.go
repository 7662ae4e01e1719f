// Package routing owns model selection: the per-role rankings of data/model_routing.json
// (loaded, validated and swapped atomically), and the ordered candidate list built for
// each request from the rankings, the profile, the quota and backend health.
package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Rankings is the content of data/model_routing.json.
type Rankings struct {
	Version   int                    `json:"version"`
	UpdatedAt string                 `json:"updated_at"`
	Roles     map[string]RoleRanking `json:"roles"`
	Models    map[string]ModelInfo   `json:"models,omitempty"`
	byModel   map[string]modelRef    // model id (lower case) -> backend and id as ranked
}

type modelRef struct{ backend, id string }

// RoleRanking is the ranked models of one role.
type RoleRanking struct {
	Primary   Entry   `json:"primary"`
	Fallbacks []Entry `json:"fallbacks,omitempty"`
	FreeTier  *Entry  `json:"free_tier,omitempty"`
	// Pinned marks a ranking a person fixed; research never displaces it.
	Pinned bool `json:"pinned,omitempty"`
}

// Entry names one model on one backend.
type Entry struct {
	Model   string  `json:"model"`
	Backend string  `json:"backend"`
	Reason  string  `json:"reason,omitempty"`
	Score   float64 `json:"score,omitempty"`
	Pinned  bool    `json:"pinned,omitempty"`
}

// ModelInfo is what the proxy knows of a model.
type ModelInfo struct {
	Backend       string             `json:"backend"`
	FirstSeen     string             `json:"first_seen,omitempty"`
	ContextWindow int                `json:"context_window,omitempty"`
	Subscription  bool               `json:"subscription,omitempty"`
	Scores        map[string]float64 `json:"scores,omitempty"`
	Sources       []string           `json:"sources,omitempty"`
}

// KnownBackends are the backend names a ranking may use.
var KnownBackends = []string{"nanogpt", "vertex"}

// ParseRankings decodes and validates a rankings file. Every role must have a primary
// with a model and a known backend.
func ParseRankings(b []byte) (*Rankings, error) {
	var r Rankings
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("rankings: %w", err)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	r.index()
	return &r, nil
}

func (r *Rankings) validate() error {
	var errs []error
	if r.Version < 1 {
		errs = append(errs, errors.New("rankings: version must be 1 or more"))
	}
	if r.UpdatedAt != "" {
		if _, err := time.Parse(time.RFC3339, r.UpdatedAt); err != nil {
			errs = append(errs, fmt.Errorf("rankings: updated_at %q is not RFC 3339", r.UpdatedAt))
		}
	}
	for name, rr := range r.Roles {
		if role, ok := roles.Parse(name); !ok || name != string(role) {
			errs = append(errs, fmt.Errorf("rankings: unknown role %q (valid: %s)", name, roles.List()))
			continue
		}
		check := func(where string, e Entry) {
			if e.Model == "" {
				errs = append(errs, fmt.Errorf("rankings: roles.%s.%s: model is empty", name, where))
			}
			if !slices.Contains(KnownBackends, e.Backend) {
				errs = append(errs, fmt.Errorf("rankings: roles.%s.%s: unknown backend %q (valid: %s)", name, where, e.Backend, strings.Join(KnownBackends, ", ")))
			}
		}
		check("primary", rr.Primary)
		for i, f := range rr.Fallbacks {
			check(fmt.Sprintf("fallbacks[%d]", i), f)
		}
		if rr.FreeTier != nil {
			check("free_tier", *rr.FreeTier)
		}
	}
	for _, role := range roles.All {
		if _, ok := r.Roles[string(role)]; !ok {
			errs = append(errs, fmt.Errorf("rankings: role %q is missing", role))
		}
	}
	for m, info := range r.Models {
		if !slices.Contains(KnownBackends, info.Backend) {
			errs = append(errs, fmt.Errorf("rankings: models[%q]: unknown backend %q", m, info.Backend))
		}
	}
	return errors.Join(errs...)
}

func (r *Rankings) index() {
	r.byModel = make(map[string]modelRef)
	for m, info := range r.Models {
		r.byModel[strings.ToLower(m)] = modelRef{info.Backend, m}
	}
	for _, rr := range r.Roles {
		for _, e := range rr.all() {
			if _, ok := r.byModel[strings.ToLower(e.Model)]; !ok {
				r.byModel[strings.ToLower(e.Model)] = modelRef{e.Backend, e.Model}
			}
		}
	}
}

// all returns primary, fallbacks and free tier in order.
func (rr RoleRanking) all() []Entry {
	out := make([]Entry, 0, 2+len(rr.Fallbacks))
	out = append(out, rr.Primary)
	out = append(out, rr.Fallbacks...)
	if rr.FreeTier != nil {
		out = append(out, *rr.FreeTier)
	}
	return out
}

// BackendOf returns the backend that serves model according to the rankings.
func (r *Rankings) BackendOf(model string) (string, bool) {
	ref, ok := r.byModel[strings.ToLower(model)]
	return ref.backend, ok
}

// lookup returns the backend and the id as ranked of model (matched case-insensitively).
func (r *Rankings) lookup(model string) (modelRef, bool) {
	ref, ok := r.byModel[strings.ToLower(model)]
	return ref, ok
}

// subscription reports whether the rankings mark model as covered by the subscription.
func (r *Rankings) subscription(model string) bool {
	for m, info := range r.Models {
		if info.Subscription && strings.EqualFold(m, model) {
			return true
		}
	}
	return false
}

// ModelIDs returns every model the rankings name, sorted.
func (r *Rankings) ModelIDs() []string {
	seen := map[string]bool{}
	var out []string
	add := func(m string) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	for m := range r.Models {
		add(m)
	}
	for _, rr := range r.Roles {
		for _, e := range rr.all() {
			add(e.Model)
		}
	}
	slices.Sort(out)
	return out
}

// Role returns the ranking of role.
func (r *Rankings) Role(role roles.Role) (RoleRanking, bool) {
	rr, ok := r.Roles[string(role)]
	return rr, ok
}
