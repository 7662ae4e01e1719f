package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResearchCLIDryRunFromSavedFiles(t *testing.T) {
	dir := t.TempDir()
	saved := filepath.Join(dir, "sources")
	if err := os.MkdirAll(saved, 0o755); err != nil {
		t.Fatal(err)
	}
	for dst, src := range map[string]string{
		"openrouter_models.json":           "benchmarks/openrouter_models.excerpt.json",
		"lmarena_rows.offset0.json":        "benchmarks/lmarena_hf_rows.offset0.constructed.json",
		"lmarena_rows.offset100.json":      "benchmarks/lmarena_hf_rows.offset100.constructed.json",
		"aider_polyglot_leaderboard.yml":   "benchmarks/aider_polyglot_leaderboard.excerpt.yml",
		"nanogpt_models.json":              "nanogpt/models-detailed.json",
		"nanogpt_subscription_models.json": "nanogpt/subscription-models.json",
	} {
		b, err := os.ReadFile(filepath.Join("testdata", src))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(saved, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rankings := filepath.Join(dir, "data", "model_routing.json")
	env := map[string]string{"MODEL_ROUTING_PATH": rankings, "DB_PATH": filepath.Join(dir, "usage.db"), "HOME": dir}
	var out, errOut bytes.Buffer
	err := runResearchCLI(context.Background(), []string{"--dry-run", "--sources-dir", saved}, func(k string) string { return env[k] }, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	got := out.String()
	for _, want := range []string{": dry_run", "source lmarena", "source nanogpt", "match  aider", "new models: claude-sonnet-4-5-20250929", "ranking diff:", "→"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if _, err := os.Stat(rankings); !os.IsNotExist(err) {
		t.Error("--dry-run wrote the rankings file")
	}

	// A missing saved file is a clear per-source error, not a crash.
	if err := os.Remove(filepath.Join(saved, "aider_polyglot_leaderboard.yml")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := runResearchCLI(context.Background(), []string{"--dry-run", "--sources-dir", saved}, func(k string) string { return env[k] }, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "source aider        failed") || !strings.Contains(out.String(), "research: aider:") {
		t.Errorf("output does not name the failed source:\n%s", out.String())
	}
}
