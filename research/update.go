package research

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// Pick is one model in a ranking diff.
type Pick struct {
	Model   string `json:"model"`
	Backend string `json:"backend"`
	// Score is this run's score for the role; nil when the model was not scored.
	Score *float64 `json:"score,omitempty"`
}

func (p *Pick) String() string {
	if p == nil {
		return "(none)"
	}
	if p.Score != nil {
		return fmt.Sprintf("%s/%s (%.3f)", p.Backend, p.Model, *p.Score)
	}
	return p.Backend + "/" + p.Model + " (unscored)"
}

// RoleChange is how one role's ranking changed.
type RoleChange struct {
	Role       string   `json:"role"`
	OldPrimary *Pick    `json:"old_primary"`
	NewPrimary *Pick    `json:"new_primary"`
	Added      []string `json:"added,omitempty"`
	Removed    []string `json:"removed,omitempty"`
	OldFree    *Pick    `json:"old_free_tier,omitempty"`
	NewFree    *Pick    `json:"new_free_tier,omitempty"`
	Reason     string   `json:"reason,omitempty"`
	// ServedFirst is, per profile, what the live router tries first for the role after the
	// update ("backend/model"): a profile that prefers subscription models may keep serving
	// one ahead of a better-scored new primary.
	ServedFirst map[string]string `json:"served_first,omitempty"`
}

// String is "role: old → new".
func (c RoleChange) String() string {
	s := fmt.Sprintf("%s: %s → %s", c.Role, c.OldPrimary, c.NewPrimary)
	if len(c.Added) > 0 {
		s += "; added " + strings.Join(c.Added, ", ")
	}
	if len(c.Removed) > 0 {
		s += "; removed " + strings.Join(c.Removed, ", ")
	}
	if c.OldFree.String() != c.NewFree.String() {
		s += fmt.Sprintf("; free tier %s → %s", c.OldFree, c.NewFree)
	}
	return s
}

// Plan is the outcome of applying an evaluation to the rankings.
type Plan struct {
	Next      *routing.Rankings
	NewModels []string
	Changes   []RoleChange
}

// Changed reports whether the plan differs from the rankings it started from.
func (p *Plan) Changed() bool { return len(p.NewModels) > 0 || len(p.Changes) > 0 }

type updateOpts struct {
	force        bool
	now          time.Time
	maxFallbacks int
	minCoverage  float64
}

func entryKey(backend, model string) string { return backend + "\x00" + strings.ToLower(model) }

// plan applies the evaluation to cur. A normal run inserts only models the rankings do
// not know yet, each where its score beats an existing entry, and keeps every existing
// entry; force re-ranks every role from the evaluation. Pinned roles and pinned
// entries are never displaced.
func plan(cur *routing.Rankings, evals map[string][]RoleScore, cands []*Candidate, o updateOpts) (*Plan, error) {
	next, err := cloneRankings(cur)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, id := range cur.ModelIDs() {
		known[strings.ToLower(id)] = true
	}
	isNew := map[string]bool{}
	p := &Plan{Next: next}
	if next.Models == nil {
		next.Models = map[string]routing.ModelInfo{}
	}
	stamp := o.now.UTC().Format(time.RFC3339)
	for _, c := range cands {
		fresh := !known[strings.ToLower(c.Model)]
		if fresh {
			isNew[entryKey(c.Backend, c.Model)] = true
			p.NewModels = append(p.NewModels, c.Model)
		}
		if !fresh && !o.force {
			continue
		}
		info := next.Models[c.Model]
		if info.FirstSeen == "" {
			info.FirstSeen = stamp
		}
		info.Backend, info.ContextWindow, info.Subscription = c.Backend, c.ContextWindow, c.Subscription
		info.Sources = c.Sources
		info.Scores = map[string]float64{}
		for role, list := range evals {
			for _, rs := range list {
				if rs.Backend == c.Backend && rs.Model == c.Model {
					info.Scores[role] = rs.Score
				}
			}
		}
		next.Models[c.Model] = info
	}
	sort.Strings(p.NewModels)

	for _, role := range roles.All {
		name := string(role)
		old := cur.Roles[name]
		rr := next.Roles[name]
		if rr.Pinned {
			continue
		}
		list := evals[name]
		score := map[string]RoleScore{}
		for _, rs := range list {
			score[entryKey(rs.Backend, rs.Model)] = rs
		}
		entries := append([]routing.Entry{rr.Primary}, rr.Fallbacks...)
		if o.force {
			entries = rerank(entries, list, name, o)
		} else {
			for _, rs := range list {
				if isNew[entryKey(rs.Backend, rs.Model)] {
					entries = insertNew(entries, rs, score, name, o)
				}
			}
		}
		if len(entries) == 0 {
			continue
		}
		rr.Primary, rr.Fallbacks = entries[0], nil
		if len(entries) > 1 {
			rr.Fallbacks = entries[1:]
		}
		if rr.FreeTier == nil || !rr.FreeTier.Pinned {
			if ft, ok := freePick(list, o.minCoverage); ok {
				cur := rr.FreeTier
				better := cur == nil || o.force
				if !better && isNew[entryKey(ft.Backend, ft.Model)] {
					cs, ok := score[entryKey(cur.Backend, cur.Model)]
					better = ok && ft.Score > cs.Score
				}
				if better {
					e := routing.Entry{Model: ft.Model, Backend: ft.Backend, Score: ft.Score, Reason: ft.Explain(name) + "; free tier"}
					rr.FreeTier = &e
				}
			}
		}
		next.Roles[name] = rr
		if ch, ok := diffRole(name, old, rr, score); ok {
			p.Changes = append(p.Changes, ch)
		}
	}
	if p.Changed() {
		next.UpdatedAt = stamp
	}
	return p, nil
}

func toEntry(rs RoleScore, role string) routing.Entry {
	return routing.Entry{Model: rs.Model, Backend: rs.Backend, Score: rs.Score, Reason: rs.Explain(role)}
}

// insertNew puts a new model before the first unpinned entry it outscores, within the
// top 1+maxFallbacks places; it becomes primary only with enough coverage.
func insertNew(entries []routing.Entry, rs RoleScore, score map[string]RoleScore, role string, o updateOpts) []routing.Entry {
	limit := min(len(entries), o.maxFallbacks+1)
	for i := 0; i <= limit; i++ {
		if i == 0 && rs.Coverage < o.minCoverage {
			continue
		}
		if i == len(entries) {
			if i <= o.maxFallbacks {
				return append(entries, toEntry(rs, role))
			}
			break
		}
		e := entries[i]
		if e.Pinned {
			continue
		}
		es, ok := score[entryKey(e.Backend, e.Model)]
		known := ok || e.Score > 0
		if !ok {
			es.Score = e.Score
		}
		if known && rs.Score > es.Score {
			out := append([]routing.Entry{}, entries[:i]...)
			out = append(out, toEntry(rs, role))
			return append(out, entries[i:]...)
		}
	}
	return entries
}

// rerank rebuilds a role from the evaluation, keeping pinned entries in their places.
// Without a candidate covered enough to lead, the old primary stays.
func rerank(old []routing.Entry, list []RoleScore, role string, o updateOpts) []routing.Entry {
	if len(list) == 0 {
		return old
	}
	pinned := map[int]routing.Entry{}
	taken := map[string]bool{}
	size := 1 + o.maxFallbacks
	for i, e := range old {
		if e.Pinned {
			pinned[i] = e
			taken[entryKey(e.Backend, e.Model)] = true
			size = max(size, i+1)
		}
	}
	if _, ok := pinned[0]; !ok && list[0].Coverage < o.minCoverage {
		pinned[0] = old[0]
		taken[entryKey(old[0].Backend, old[0].Model)] = true
	}
	var out []routing.Entry
	next := 0
	for slot := 0; slot < size; slot++ {
		if e, ok := pinned[slot]; ok {
			out = append(out, e)
			continue
		}
		for next < len(list) && taken[entryKey(list[next].Backend, list[next].Model)] {
			next++
		}
		if next == len(list) {
			continue
		}
		out = append(out, toEntry(list[next], role))
		taken[entryKey(list[next].Backend, list[next].Model)] = true
		next++
	}
	return out
}

// freePick is the best covered subscription or free model.
func freePick(list []RoleScore, minCoverage float64) (RoleScore, bool) {
	var best RoleScore
	found := false
	for _, rs := range list {
		if rs.cand == nil || !(rs.cand.Subscription || rs.cand.Free) {
			continue
		}
		if !found || (rs.Coverage >= minCoverage && best.Coverage < minCoverage) ||
			((rs.Coverage >= minCoverage) == (best.Coverage >= minCoverage) && rs.Score > best.Score) {
			best, found = rs, true
		}
	}
	return best, found
}

func pickOf(e *routing.Entry, score map[string]RoleScore) *Pick {
	if e == nil {
		return nil
	}
	p := &Pick{Model: e.Model, Backend: e.Backend}
	if rs, ok := score[entryKey(e.Backend, e.Model)]; ok {
		p.Score = &rs.Score
	} else if e.Score > 0 {
		p.Score = &e.Score
	}
	return p
}

func diffRole(role string, old, next routing.RoleRanking, score map[string]RoleScore) (RoleChange, bool) {
	ch := RoleChange{Role: role, OldPrimary: pickOf(&old.Primary, score), NewPrimary: pickOf(&next.Primary, score),
		OldFree: pickOf(old.FreeTier, score), NewFree: pickOf(next.FreeTier, score)}
	set := func(rr routing.RoleRanking) map[string]string {
		m := map[string]string{}
		for _, e := range append([]routing.Entry{rr.Primary}, rr.Fallbacks...) {
			m[entryKey(e.Backend, e.Model)] = e.Backend + "/" + e.Model
		}
		return m
	}
	o, n := set(old), set(next)
	for k, v := range n {
		if _, ok := o[k]; !ok {
			ch.Added = append(ch.Added, v)
		}
	}
	for k, v := range o {
		if _, ok := n[k]; !ok {
			ch.Removed = append(ch.Removed, v)
		}
	}
	sort.Strings(ch.Added)
	sort.Strings(ch.Removed)
	if next.Primary.Model != old.Primary.Model || next.Primary.Backend != old.Primary.Backend {
		ch.Reason = next.Primary.Reason
	}
	changed := ch.OldPrimary.String() != ch.NewPrimary.String() || len(ch.Added) > 0 || len(ch.Removed) > 0 ||
		ch.OldFree.String() != ch.NewFree.String()
	if !changed {
		a, _ := json.Marshal(old)
		b, _ := json.Marshal(next)
		changed = string(a) != string(b)
	}
	return ch, changed
}

func cloneRankings(r *routing.Rankings) (*routing.Rankings, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("research: copying rankings: %w", err)
	}
	var out routing.Rankings
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("research: copying rankings: %w", err)
	}
	return &out, nil
}

// WriteRankings validates r and writes it to path atomically (temp file in the same
// folder, fsync, rename). The previous content (prev, when not empty) is kept in
// <dir of path>/history/ first. It returns the history file written, if any.
func WriteRankings(path string, r *routing.Rankings, prev []byte, now time.Time) (string, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("research: encoding rankings: %w", err)
	}
	b = append(b, '\n')
	if _, err := routing.ParseRankings(b); err != nil {
		return "", fmt.Errorf("research: refusing to write invalid rankings: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("research: writing rankings: %w", err)
	}
	var hist string
	if len(prev) > 0 {
		hdir := filepath.Join(dir, "history")
		if err := os.MkdirAll(hdir, 0o755); err != nil {
			return "", fmt.Errorf("research: keeping history: %w", err)
		}
		base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		hist = filepath.Join(hdir, fmt.Sprintf("%s.%s.json", base, now.UTC().Format("20060102T150405.000000000Z")))
		if err := writeAtomic(hist, prev); err != nil {
			return "", fmt.Errorf("research: keeping history: %w", err)
		}
	}
	if err := writeAtomic(path, b); err != nil {
		return "", fmt.Errorf("research: writing rankings: %w", err)
	}
	return hist, nil
}

// writeAtomic writes b to path through a temp file in the same folder, fsync and rename.
func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
