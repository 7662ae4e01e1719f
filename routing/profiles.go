package routing

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Profile says which backends a request may use and in which order of preference.
type Profile struct {
	// Name is what ACTIVE_PROFILE and X-Profile name.
	Name string
	// Backends lists the backends in order of preference; a backend not listed is never
	// used under this profile. Empty means every known backend in the rankings' order.
	Backends []string
	// Exclude names backends this profile never uses (even if listed in Backends).
	Exclude []string
	// PreferSubscription puts subscription-covered and free-tier models ahead of paid
	// ones on the same backend.
	PreferSubscription bool
}

// DefaultProfiles are personal (NanoGPT subscription and free tiers first, Vertex only as
// fallback) and work (Vertex first, NanoGPT as fallback).
func DefaultProfiles() []Profile {
	return []Profile{
		{Name: "personal", Backends: []string{"nanogpt", "vertex"}, PreferSubscription: true},
		{Name: "work", Backends: []string{"vertex", "nanogpt"}},
	}
}

func (p Profile) allows(backend string) bool {
	if slices.Contains(p.Exclude, backend) {
		return false
	}
	return len(p.Backends) == 0 || slices.Contains(p.Backends, backend)
}

func (p Profile) rank(backend string) int {
	if i := slices.Index(p.Backends, backend); i >= 0 {
		return i
	}
	return len(p.Backends)
}

// validateProfiles reports profiles with no name, a duplicate name or an unknown backend.
func validateProfiles(ps []Profile) error {
	seen := map[string]bool{}
	for _, p := range ps {
		if p.Name == "" {
			return fmt.Errorf("routing: a profile has no name")
		}
		if seen[p.Name] {
			return fmt.Errorf("routing: profile %q is defined twice", p.Name)
		}
		seen[p.Name] = true
		for _, b := range append(slices.Clone(p.Backends), p.Exclude...) {
			if !slices.Contains(KnownBackends, b) {
				return fmt.Errorf("routing: profile %q: unknown backend %q (valid: %s)", p.Name, b, strings.Join(KnownBackends, ", "))
			}
		}
	}
	return nil
}

// route is a precomputed candidate with the circuit that guards it.
type route struct {
	c    Candidate
	circ *circuit
}

// table is one role under one profile: the candidates in normal order, and in the order
// used near the quota limit (non-subscription first).
type table struct {
	normal []route
	near   []route
}

// compiled is everything selection reads, built once per rankings load (or change of the
// subscription list) and swapped atomically.
type compiled struct {
	rk         *Rankings
	profiles   []Profile
	profileIdx map[string]int
	tables     [][]table // [profile][role index]
	covered    map[string]bool
	maxLen     int
}

func roleIndex(r roles.Role) int {
	for i, x := range roles.All {
		if x == r {
			return i
		}
	}
	return len(roles.All) - 1 // general
}

// isSubscription reports whether model on backend is covered by the NanoGPT subscription.
func (cp *compiled) isSubscription(backend, model string) bool {
	if backend != "nanogpt" {
		return false
	}
	if cp.covered != nil {
		return cp.covered[strings.ToLower(model)]
	}
	return cp.rk.subscription(model)
}

func (r *Router) compile(rk *Rankings) *compiled {
	cp := &compiled{rk: rk, profiles: r.cfg.Profiles, profileIdx: map[string]int{}, covered: r.cfg.Quota.coveredSet()}
	for i, p := range cp.profiles {
		cp.profileIdx[p.Name] = i
	}
	cp.tables = make([][]table, len(cp.profiles))
	for pi, p := range cp.profiles {
		cp.tables[pi] = make([]table, len(roles.All))
		for ri, role := range roles.All {
			t := r.compileRole(cp, p, role)
			cp.tables[pi][ri] = t
			cp.maxLen = max(cp.maxLen, len(t.normal))
		}
	}
	return cp
}

func (r *Router) compileRole(cp *compiled, p Profile, role roles.Role) table {
	rr, ok := cp.rk.Role(role)
	if !ok {
		rr, _ = cp.rk.Role(roles.General)
	}
	type item struct {
		route
		backendRank, class int
	}
	var items []item
	add := func(e Entry, reason string, free bool) {
		if !p.allows(e.Backend) || !r.cfg.Enabled(e.Backend) {
			return
		}
		for _, it := range items {
			if it.c.Backend == e.Backend && strings.EqualFold(it.c.Model, e.Model) {
				return
			}
		}
		sub := cp.isSubscription(e.Backend, e.Model)
		class := 1
		if p.PreferSubscription && (sub || free) {
			class = 0
		}
		items = append(items, item{
			route:       route{c: Candidate{Backend: e.Backend, Model: e.Model, Reason: reason, Subscription: sub}, circ: r.circuits.get(e.Backend, e.Model)},
			backendRank: p.rank(e.Backend), class: class,
		})
	}
	add(rr.Primary, "primary for "+string(role), false)
	for i, f := range rr.Fallbacks {
		add(f, fmt.Sprintf("fallback %d for %s", i+1, role), false)
	}
	if rr.FreeTier != nil {
		add(*rr.FreeTier, "free tier for "+string(role), true)
	}
	sort.SliceStable(items, func(i, j int) bool {
		if items[i].backendRank != items[j].backendRank {
			return items[i].backendRank < items[j].backendRank
		}
		return items[i].class < items[j].class
	})
	var t table
	for _, it := range items {
		t.normal = append(t.normal, it.route)
	}
	t.near = slices.Clone(t.normal)
	sort.SliceStable(t.near, func(i, j int) bool { return !t.near[i].c.Subscription && t.near[j].c.Subscription })
	return t
}
