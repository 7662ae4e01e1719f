package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestPromptSettings: the prompt keys load from the YAML file, the optimizer key comes
// from the variable it names, and the defaults hold otherwise.
func TestPromptSettings(t *testing.T) {
	cfg, err := loadYAML(t, `
prompt:
  modes:
    security-reviewer: code_review
    docs-writer: documentation
  injection:
    debugging: prepend
    research: "off"
  optimizer:
    base_url: http://127.0.0.1:11434/v1
    model: qwen3:30b-a3b
    api_key_env: LOCAL_LLM_KEY
    timeout: 800ms
`, map[string]string{"LOCAL_LLM_KEY": "sk-local", "PROMPT_STRATEGIES_PATH": "/etc/proxy/strategies.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	want := Prompt{
		StrategiesPath: "/etc/proxy/strategies.yaml",
		ReloadInterval: 5 * time.Second,
		Modes:          map[string]string{"security-reviewer": "code_review", "docs-writer": "documentation"},
		Injection:      map[string]string{"debugging": "prepend", "research": "off"},
		Optimizer: PromptOptimizer{BaseURL: "http://127.0.0.1:11434/v1", Model: "qwen3:30b-a3b", APIKeyEnv: "LOCAL_LLM_KEY",
			APIKey: "sk-local", Timeout: 800 * time.Millisecond, CacheSize: 256},
	}
	if d := cmp.Diff(want, cfg.Prompt); d != "" {
		t.Errorf("prompt settings (-want +got):\n%s", d)
	}
	def := Default()
	if def.Prompt.Optimizer.BaseURL != "" || def.Prompt.Optimizer.Timeout != time.Second {
		t.Errorf("optimizer must be off by default with a 1s deadline: %+v", def.Prompt.Optimizer)
	}
}

// TestPromptValidation: every bad prompt setting is reported, naming its key.
func TestPromptValidation(t *testing.T) {
	_, err := loadYAML(t, `
prompt:
  modes:
    my-mode: coder
  injection:
    debugging: sideways
    tester: append
  optimizer:
    base_url: ftp://models
    timeout: -1s
`, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{
		`prompt.modes.my-mode: "coder" is not a role`,
		`prompt.injection.debugging: "sideways" must be append, prepend or off`,
		`prompt.injection: "tester" is not a role`,
		`prompt.optimizer.base_url:`,
		`prompt.optimizer.model: must be set`,
		`prompt.optimizer.timeout: must be positive`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}
