package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// TestDefaults: with nothing set, Load gives the documented defaults (DESIGN.md §3).
func TestDefaults(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Default()
	want.NanoGPT.SubscriptionURL = "https://nano-gpt.com/api/subscription/v1"
	want.Storage.DBPath = "/home/u/.mcp/proxy/usage.db"
	if d := cmp.Diff(want, *cfg); d != "" {
		t.Errorf("defaults (-want +got):\n%s", d)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"addr", cfg.Server.Addr(), "127.0.0.1:8090"},
		{"base url", cfg.NanoGPT.BaseURL, "https://nano-gpt.com/api/v1"},
		{"quota", cfg.NanoGPT.MonthlyQuota, int64(60000)},
		{"quota unit", cfg.NanoGPT.QuotaUnit, "requests"},
		{"vertex location", cfg.Vertex.Location, "us-central1"},
		{"profile", cfg.Routing.ActiveProfile, "personal"},
		{"strategies", cfg.Prompt.StrategiesPath, "config/prompt_strategies.yaml"},
		{"rankings", cfg.Routing.RankingsPath, "data/model_routing.json"},
		{"log", cfg.Log, config.Log{Level: "info", Format: "text"}},
		{"body limit", cfg.Server.MaxBodyBytes, int64(32 << 20)},
		{"adaptive GOMAXPROCS", cfg.Server.AdaptiveProcs, true},
		{"nanogpt enabled without key", cfg.NanoGPT.Enabled(), false},
		{"vertex enabled without project", cfg.Vertex.Enabled(), false},
	}
	for _, c := range checks {
		if !cmp.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestEnvOverrides: every documented variable reaches its setting.
func TestEnvOverrides(t *testing.T) {
	cfg, err := config.Load(env(map[string]string{
		"NANOGPT_API_KEY": "sk-1", "NANOGPT_BASE_URL": "http://127.0.0.1:9/api/v1", "NANOGPT_MONTHLY_QUOTA": "100",
		"NANOGPT_QUOTA_UNIT": "tokens", "VERTEX_PROJECT_ID": "p", "VERTEX_LOCATION": "europe-west4",
		"VERTEX_BASE_URL": "http://127.0.0.1:10", "ACTIVE_PROFILE": "work", "HOST": "0.0.0.0", "PORT": "9999",
		"DB_PATH": "~/x/u.db", "HOME": "/h", "PROMPT_STRATEGIES_PATH": "/s.yaml", "MODEL_ROUTING_PATH": "/r.json",
		"ADMIN_TOKEN": "adm", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json", "MAX_BODY_BYTES": "2048",
		"GOMAXPROCS": "3",
	}))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"key", cfg.NanoGPT.APIKey, "sk-1"},
		{"enabled", cfg.NanoGPT.Enabled(), true},
		{"base", cfg.NanoGPT.BaseURL, "http://127.0.0.1:9/api/v1"},
		{"subscription derived from base", cfg.NanoGPT.SubscriptionURL, "http://127.0.0.1:9/api/subscription/v1"},
		{"quota", cfg.NanoGPT.MonthlyQuota, int64(100)},
		{"unit", cfg.NanoGPT.QuotaUnit, "tokens"},
		{"vertex", cfg.Vertex, config.Vertex{ProjectID: "p", Location: "europe-west4", BaseURL: "http://127.0.0.1:10"}},
		{"profile", cfg.Routing.ActiveProfile, "work"},
		{"addr", cfg.Server.Addr(), "0.0.0.0:9999"},
		{"db", cfg.Storage.DBPath, "/h/x/u.db"},
		{"strategies", cfg.Prompt.StrategiesPath, "/s.yaml"},
		{"rankings", cfg.Routing.RankingsPath, "/r.json"},
		{"admin", cfg.Admin.Token, "adm"},
		{"log", cfg.Log, config.Log{Level: "DEBUG", Format: "json"}},
		{"body", cfg.Server.MaxBodyBytes, int64(2048)},
		{"GOMAXPROCS set: the operator's number is kept", cfg.Server.AdaptiveProcs, false},
	}
	for _, c := range checks {
		if !cmp.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestYAMLFile: CONFIG_PATH is read, environment variables win over it, and unknown keys
// are an error naming the file (a typo must not be silently ignored).
func TestYAMLFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "proxy.yaml")
	yaml := `
server:
  port: 7000
  shutdown_timeout: 5s
  adaptive_procs: false
upstream:
  first_byte_timeout: 30s
  idle_timeout: 10s
storage:
  queue_size: 8
  flush_interval: 1s
routing:
  active_profile: work
log:
  level: warn
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(env(map[string]string{"CONFIG_PATH": path, "ACTIVE_PROFILE": "personal", "HOME": dir}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Port != 7000 || cfg.Server.ShutdownTimeout != 5*time.Second || cfg.Upstream.FirstByteTimeout != 30*time.Second ||
		cfg.Upstream.IdleTimeout != 10*time.Second || cfg.Storage.QueueSize != 8 || cfg.Storage.FlushInterval != time.Second || cfg.Log.Level != "warn" ||
		cfg.Server.AdaptiveProcs {
		t.Errorf("file settings not applied: %+v", cfg)
	}
	if cfg.Routing.ActiveProfile != "personal" {
		t.Errorf("ACTIVE_PROFILE should win over the file, got %q", cfg.Routing.ActiveProfile)
	}
	if cfg.Server.Host != "127.0.0.1" {
		t.Errorf("unset keys keep their defaults, host = %q", cfg.Server.Host)
	}

	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("server:\n  prot: 1\n"), 0o600)
	if _, err := config.Load(env(map[string]string{"CONFIG_PATH": bad})); err == nil || !strings.Contains(err.Error(), "CONFIG_PATH") || !strings.Contains(err.Error(), "prot") {
		t.Errorf("unknown key: err = %v, want one naming CONFIG_PATH and the key", err)
	}
	if _, err := config.Load(env(map[string]string{"CONFIG_PATH": filepath.Join(dir, "missing.yaml")})); err == nil || !strings.Contains(err.Error(), "CONFIG_PATH") {
		t.Errorf("missing file: err = %v, want one naming CONFIG_PATH", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	_ = os.WriteFile(empty, nil, 0o600)
	if _, err := config.Load(env(map[string]string{"CONFIG_PATH": empty})); err != nil {
		t.Errorf("an empty file is fine, got %v", err)
	}
}

// TestInvalidValuesNameTheVariable: each invalid value stops Load with an error naming
// the variable; several are all reported at once.
func TestInvalidValuesNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		name string
	}{
		{map[string]string{"PORT": "http"}, "PORT"},
		{map[string]string{"PORT": "70000"}, "PORT"},
		{map[string]string{"PORT": "0"}, "PORT"},
		{map[string]string{"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES"},
		{map[string]string{"MAX_BODY_BYTES": "32MiB"}, "MAX_BODY_BYTES"},
		{map[string]string{"NANOGPT_BASE_URL": "nano-gpt.com/api/v1"}, "NANOGPT_BASE_URL"},
		{map[string]string{"NANOGPT_BASE_URL": "ftp://x/api"}, "NANOGPT_BASE_URL"},
		{map[string]string{"NANOGPT_SUBSCRIPTION_URL": ":bad"}, "NANOGPT_SUBSCRIPTION_URL"},
		{map[string]string{"NANOGPT_MONTHLY_QUOTA": "-1"}, "NANOGPT_MONTHLY_QUOTA"},
		{map[string]string{"NANOGPT_MONTHLY_QUOTA": "lots"}, "NANOGPT_MONTHLY_QUOTA"},
		{map[string]string{"NANOGPT_QUOTA_UNIT": "dollars"}, "NANOGPT_QUOTA_UNIT"},
		{map[string]string{"VERTEX_BASE_URL": "localhost"}, "VERTEX_BASE_URL"},
		{map[string]string{"ACTIVE_PROFILE": "holiday"}, "ACTIVE_PROFILE"},
		{map[string]string{"LOG_LEVEL": "loud"}, "LOG_LEVEL"},
		{map[string]string{"LOG_FORMAT": "xml"}, "LOG_FORMAT"},
	}
	for _, tc := range tests {
		_, err := config.Load(env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("Load(%v) = %v, want an error naming %s", tc.env, err, tc.name)
		}
	}
	_, err := config.Load(env(map[string]string{"PORT": "x", "LOG_FORMAT": "xml", "ACTIVE_PROFILE": "y"}))
	for _, name := range []string{"PORT", "LOG_FORMAT", "ACTIVE_PROFILE"} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("combined error %v does not name %s", err, name)
		}
	}
}
