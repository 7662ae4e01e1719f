package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestResearchConfig(t *testing.T) {
	dir := t.TempDir()
	yml := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(yml, []byte(`
research:
  schedule: "0 3 1 * *"
  timezone: Europe/Berlin
  min_coverage: 0.6
  weights:
    general: {speed: 1, cost: 1, overall: 1}
  sources:
    lmarena: {enabled: true, url: "https://datasets-server.huggingface.co/rows", timeout: 30s, max_bytes: 8388608, retries: 2, backoff: 2s}
    html_tables:
      - name: polyglot
        enabled: true
        url: https://example.org/leaderboard.html
        selector: "table#polyglot"
        model_column: Model
        columns: {"Percent correct": aider_polyglot, "Cost": aider_cost}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"CONFIG_PATH": yml, "HOME": dir}
	cfg, err := Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Research
	if r.Schedule != "0 3 1 * *" || r.Timezone != "Europe/Berlin" || r.MinCoverage != 0.6 {
		t.Errorf("research = %+v", r)
	}
	if r.Weights["general"]["overall"] != 1 || r.Weights["architect"]["reasoning"] != 3 {
		t.Errorf("weights: a set role must replace its defaults, others keep theirs: %v", r.Weights)
	}
	if tb := r.Sources.HTMLTables; len(tb) != 1 || tb[0].URL != "https://example.org/leaderboard.html" || tb[0].Columns["Cost"] != "aider_cost" {
		t.Errorf("html tables = %+v", tb)
	}
	if r.Sources.LMArena.Backoff != 2*time.Second || !r.Sources.OpenRouter.Enabled {
		t.Errorf("sources = %+v", r.Sources)
	}

	env["RESEARCH_SCHEDULE"] = "0 4 2 * *"
	if cfg, err := Load(func(k string) string { return env[k] }); err != nil || cfg.Research.Schedule != "0 4 2 * *" {
		t.Errorf("RESEARCH_SCHEDULE not applied: %v", err)
	}
	for k, v := range map[string]string{"RESEARCH_SCHEDULE": "every month", "RESEARCH_TIMEZONE": "Mars/Olympus"} {
		bad := map[string]string{"HOME": dir, k: v}
		_, err := Load(func(k string) string { return bad[k] })
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%q: err = %v, want one naming %s", k, v, err, k)
		}
	}
}
