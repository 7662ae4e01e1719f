package research

import (
	"context"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// BenchmarkMatchAndEvaluate measures matching and scoring on the fixtures (one run's
// CPU work, without the network).
func BenchmarkMatchAndEvaluate(b *testing.B) {
	g := testGetter()
	ctx := context.Background()
	or, err1 := (&OpenRouter{Cfg: testSrc(serve(b, fixture(b, "benchmarks/openrouter_models.excerpt.json")).URL), Get: g}).Fetch(ctx)
	aider, err2 := (&Aider{Cfg: testSrc(serve(b, fixture(b, "benchmarks/aider_polyglot_leaderboard.excerpt.yml")).URL), Get: g}).Fetch(ctx)
	nano, err3 := (&NanoGPT{Models: testSrc(serve(b, fixture(b, "nanogpt/models-detailed.json")).URL), Get: g}).Fetch(ctx)
	if err1 != nil || err2 != nil || err3 != nil {
		b.Fatal(err1, err2, err3)
	}
	m, _ := NewMatcher("", nil)
	bench := map[string][]Observation{"openrouter": or.Observations, "aider": aider.Observations}
	w := config.DefaultResearch().Weights
	b.ResetTimer()
	for b.Loop() {
		cands, _ := m.BuildCandidates(nano.Offers, bench)
		Evaluate(cands, w, 0.5)
	}
}

func BenchmarkNormalize(b *testing.B) {
	for b.Loop() {
		Normalize("vertex_ai/claude-3-5-sonnet-v2@20241022")
	}
}
