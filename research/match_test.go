package research

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMatchAcrossSources: the same model spelled the way OpenRouter, LMArena, Aider,
// LiteLLM and the backends spell it resolves to one key.
func TestMatchAcrossSources(t *testing.T) {
	m, err := NewMatcher("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		want  Key
		names []string
	}{
		{Key{Base: "claude-3-5-sonnet"}, []string{
			"anthropic/claude-3.5-sonnet", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-latest",
			"vertex_ai/claude-3-5-sonnet-v2@20241022", "anthropic.claude-3-5-sonnet-20241022-v2:0",
			"openrouter/anthropic/claude-3.5-sonnet", "anthropic/claude-3-5-sonnet-20241022"}},
		{Key{Base: "claude-sonnet-4"}, []string{"anthropic/claude-sonnet-4", "claude-sonnet-4-20250514",
			"claude-sonnet-4-20250514 (no thinking)", "anthropic/claude-4-sonnet-20250522"}},
		{Key{Base: "claude-sonnet-4", Variant: "thinking"}, []string{"claude-sonnet-4-20250514 (32k thinking)"}},
		{Key{Base: "claude-sonnet-4-5"}, []string{"anthropic/claude-sonnet-4.5", "claude-sonnet-4-5-20250929"}},
		{Key{Base: "o3"}, []string{"openai/o3", "o3-2025-04-16", "o3"}},
		{Key{Base: "gpt-4o-mini"}, []string{"openai/gpt-4o-mini-2024-07-18", "gpt-4o-mini-2024-07-18"}},
		{Key{Base: "gpt-5", Variant: "high"}, []string{"gpt-5 (high)", "gpt-5-high"}},
		{Key{Base: "gpt-5"}, []string{"openai/gpt-5", "openai/gpt-5:batch", "gpt-5"}},
		{Key{Base: "gemini-2-5-pro"}, []string{"google/gemini-2.5-pro", "gemini-2.5-pro", "gemini/gemini-2.5-pro"}},
		{Key{Base: "kimi-k2"}, []string{"moonshotai/kimi-k2", "kimi-k2-0711-preview", "Kimi K2", "moonshotai/Kimi-K2-Instruct-0905"}},
		{Key{Base: "qwen3-coder"}, []string{"qwen/qwen3-coder", "qwen3-coder-480b-a35b-instruct"}},
		{Key{Base: "glm-5-2"}, []string{"z-ai/glm-5.2:free", "z-ai/glm-5.2"}},
		{Key{Base: "grok-4"}, []string{"xai/grok-4", "openrouter/x-ai/grok-4"}},
		{Key{Base: "qwen-max"}, []string{"qwen-max-2025-01-25", "openai/qwen-max-2025-01-25"}},
	}
	for _, tc := range cases {
		for _, n := range tc.names {
			if got := m.Key(n); got != tc.want {
				t.Errorf("Key(%q) = %v, want %v", n, got, tc.want)
			}
		}
	}
}

func TestMatchOnFixtures(t *testing.T) {
	ctx := context.Background()
	g := testGetter()
	or, err := (&OpenRouter{Cfg: testSrc(serve(t, fixture(t, "benchmarks/openrouter_models.excerpt.json")).URL), Get: g}).Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	aider, err := (&Aider{Cfg: testSrc(serve(t, fixture(t, "benchmarks/aider_polyglot_leaderboard.excerpt.yml")).URL), Get: g}).Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	arenaPage := fixture(t, "benchmarks/lmarena_hf_rows.offset0.constructed.json")
	arenaPage = []byte(strings.Replace(string(arenaPage), `"num_rows_total": 132`, `"num_rows_total": 100`, 1))
	arena, err := (&LMArena{Cfg: testSrc(serve(t, arenaPage).URL), Get: g}).Fetch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	offers := []Offer{
		{Backend: "nanogpt", Model: "claude-sonnet-4-5-20250929"},
		{Backend: "nanogpt", Model: "openai/gpt-5"},
		{Backend: "nanogpt", Model: "moonshotai/Kimi-K2-Instruct-0905"},
		{Backend: "nanogpt", Model: "deepseek/deepseek-chat"},
		{Backend: "vertex", Model: "gemini-2.5-pro"},
		{Backend: "nanogpt", Model: "brand-new/unknown-model-9"},
	}
	m, _ := NewMatcher("", nil)
	cands, reports := m.BuildCandidates(offers, map[string][]Observation{
		"openrouter": or.Observations, "aider": aider.Observations, "lmarena": arena.Observations})
	got := map[string][]string{}
	for _, c := range cands {
		got[c.Model] = c.Sources
	}
	want := map[string][]string{
		"claude-sonnet-4-5-20250929":       {"lmarena", "openrouter"},
		"openai/gpt-5":                     {"aider", "openrouter"}, // LMArena has only gpt-5-high and gpt-5-chat
		"moonshotai/Kimi-K2-Instruct-0905": {"aider", "lmarena", "openrouter"},
		"deepseek/deepseek-chat":           {"openrouter"},
		"gemini-2.5-pro":                   {"lmarena", "openrouter"},
		"brand-new/unknown-model-9":        nil,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sources per model (-want +got):\n%s", diff)
	}
	// gpt-5 without an effort is the default (medium) effort run, not the high one.
	for _, c := range cands {
		if c.Model == "openai/gpt-5" && c.Metrics[MetricAiderPolyglot] != 86.7 {
			t.Errorf("gpt-5 polyglot = %v, want 86.7 (medium)", c.Metrics[MetricAiderPolyglot])
		}
	}
	// Aider runs two different DeepSeek models under the same --model id: refused.
	var aiderRep MatchReport
	for _, r := range reports {
		if r.Source == "aider" {
			aiderRep = r
		}
	}
	if len(aiderRep.Ambiguous) != 1 || !strings.Contains(aiderRep.Ambiguous[0], "DeepSeek Chat V3 (prev) | DeepSeek-V3.2-Exp (Chat)") {
		t.Errorf("aider ambiguous = %q, want the deepseek-chat refusal", aiderRep.Ambiguous)
	}
	if aiderRep.Matched != 2 || aiderRep.Candidates != 6 || aiderRep.Rate != 0.333 {
		t.Errorf("aider match report = %+v", aiderRep)
	}
}

func TestAliasFileExtendsMatching(t *testing.T) {
	p := filepath.Join(t.TempDir(), "aliases.yaml")
	if err := os.WriteFile(p, []byte("deepseek-v3.1-terminus:\n  - dsv31t\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := NewMatcher(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if plain, _ := NewMatcher("", nil); plain.Key("dsv31t") == plain.Key("deepseek-ai/DeepSeek-V3.1-Terminus") {
		t.Fatal("names match without the alias; the test proves nothing")
	}
	if a, b := m.Key("deepseek-ai/DeepSeek-V3.1-Terminus"), m.Key("dsv31t"); a != b {
		t.Errorf("alias not applied: %v vs %v", a, b)
	}
	if _, err := NewMatcher(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("a missing alias file was ignored silently")
	}
}
