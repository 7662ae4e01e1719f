package research

import (
	"math"
	"testing"
)

func cand(model string, sub bool, metrics map[string]float64) *Candidate {
	return &Candidate{Offer: Offer{Backend: "nanogpt", Model: model, Subscription: sub}, Metrics: metrics, Sources: []string{"test"}}
}

func find(list []RoleScore, model string) (RoleScore, int) {
	for i, rs := range list {
		if rs.Model == model {
			return rs, i
		}
	}
	return RoleScore{}, -1
}

func TestEvaluateNormalisesWithinPool(t *testing.T) {
	cands := []*Candidate{
		cand("strong", false, map[string]float64{MetricArenaOverall: 1600, MetricPrice: 100}),
		cand("weak", false, map[string]float64{MetricArenaOverall: 1400, MetricPrice: 1}),
		cand("mid", false, map[string]float64{MetricPrice: 10}),
	}
	ev := Evaluate(cands, map[string]map[string]float64{"overall": {"overall": 1}, "cost": {"cost": 1}}, 0.5)
	// Elo as the win probability against the pool mean (1500).
	s, _ := find(ev["overall"], "strong")
	if want := 1 / (1 + math.Pow(10, -100.0/400)); math.Abs(s.Score-want) > 0.001 {
		t.Errorf("Elo 1600 in a pool averaging 1500 → %v, want %.3f", s.Score, want)
	}
	// Price on a log scale: 1, 10, 100 $/M → 1, 0.5, 0.
	for model, want := range map[string]float64{"weak": 1, "mid": 0.5, "strong": 0} {
		if s, _ := find(ev["cost"], model); s.Score != want {
			t.Errorf("cost score of %s = %v, want %v", model, s.Score, want)
		}
	}
	// A subscription model (price 0) is the cheapest; a single paid model is not "cheapest" too.
	ev2 := Evaluate([]*Candidate{cand("sub", true, map[string]float64{MetricPrice: 0}), cand("paid", false, map[string]float64{MetricPrice: 2})},
		map[string]map[string]float64{"cost": {"cost": 1}}, 0.5)
	if sub, _ := find(ev2["cost"], "sub"); sub.Score != 1 {
		t.Errorf("subscription cost score = %v, want 1", sub.Score)
	}
	if paid, _ := find(ev2["cost"], "paid"); paid.Score >= 1 {
		t.Errorf("the only paid model scores %v on cost, as good as a free one", paid.Score)
	}
	if _, i := find(ev["overall"], "mid"); i != -1 {
		t.Error("a model without overall data was scored for it (missing must not count as zero, nor as data)")
	}
}

func TestEvaluateCoverage(t *testing.T) {
	cands := []*Candidate{
		// Only coding data, and the best coder: coverage 50% for debugging.
		cand("coder-only", false, map[string]float64{MetricAiderPolyglot: 90}),
		// Both dimensions, worse at each.
		cand("all-round", false, map[string]float64{MetricAiderPolyglot: 60, MetricAAIntelligence: 40}),
		cand("thinker", false, map[string]float64{MetricAiderPolyglot: 30, MetricAAIntelligence: 60}),
	}
	w := map[string]map[string]float64{"debugging": {"coding": 2, "reasoning": 2}}
	ev := Evaluate(cands, w, 0.75)
	co, ci := find(ev["debugging"], "coder-only")
	if co.Coverage != 0.5 || co.Score != 1 {
		t.Errorf("coder-only = %+v, want coverage 0.5, score 1 (missing reasoning not counted as 0)", co)
	}
	if ci == 0 {
		t.Error("a model under min coverage ranks first and would become primary")
	}
	if ev["debugging"][0].Coverage < 0.75 {
		t.Errorf("first = %+v, want a fully covered model", ev["debugging"][0])
	}
	// With a lower bar the best coder leads.
	if ev := Evaluate(cands, w, 0.5); ev["debugging"][0].Model != "coder-only" {
		t.Errorf("with min coverage 0.5 first = %s, want coder-only", ev["debugging"][0].Model)
	}
}

func TestFreeTierPick(t *testing.T) {
	cands := []*Candidate{
		cand("paid-best", false, map[string]float64{MetricAiderPolyglot: 99, MetricAAAgentic: 90}),
		cand("sub-thin", true, map[string]float64{MetricAiderPolyglot: 95}),                         // coverage 0.75
		cand("sub-covered", true, map[string]float64{MetricAiderPolyglot: 70, MetricAAAgentic: 50}), // coverage 1
	}
	w := map[string]map[string]float64{"implementation": {"coding": 3, "agentic": 1}}
	cases := []struct {
		minCoverage float64
		want        string
	}{
		{0.5, "sub-thin"},    // both covered enough: the better score
		{0.9, "sub-covered"}, // only one covered enough: it wins despite a lower score
	}
	for _, tc := range cases {
		ft, ok := freePick(Evaluate(cands, w, tc.minCoverage)["implementation"], tc.minCoverage)
		if !ok || ft.Model != tc.want {
			t.Errorf("min coverage %v: free tier = %s, want %s", tc.minCoverage, ft.Model, tc.want)
		}
	}
}

func TestParseNumber(t *testing.T) {
	for in, want := range map[string]float64{"51.6%": 51.6, "$14.41": 14.41, " 1,234 ": 1234, "0": 0} {
		if got, ok := parseNumber(in); !ok || got != want {
			t.Errorf("parseNumber(%q) = %v, %v", in, got, ok)
		}
	}
	for _, in := range []string{"?", "-", "", "n/a"} {
		if _, ok := parseNumber(in); ok {
			t.Errorf("parseNumber(%q) ok, want missing", in)
		}
	}
}
