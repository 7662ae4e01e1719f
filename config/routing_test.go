package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func loadYAML(t *testing.T, yaml string, env map[string]string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = map[string]string{}
	}
	env["CONFIG_PATH"] = p
	env["HOME"] = t.TempDir()
	return Load(func(k string) string { return env[k] })
}

func TestRoutingProfilesFromYAML(t *testing.T) {
	cfg, err := loadYAML(t, `
routing:
  max_attempts: 2
  circuit_cooldown: 1m
  profiles:
    offline:
      backends: [nanogpt]
      prefer_subscription: true
  quota:
    daily_cap: 2000
`, map[string]string{"ACTIVE_PROFILE": "offline"})
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Routing
	if r.ActiveProfile != "offline" || r.MaxAttempts != 2 || r.CircuitCooldown != time.Minute || r.Quota.DailyCap != 2000 {
		t.Errorf("routing = %+v", r)
	}
	// The predefined profiles stay beside the new one; unset keys keep their defaults.
	want := map[string]Profile{
		"personal": {Backends: []string{"nanogpt", "vertex"}, PreferSubscription: true},
		"work":     {Backends: []string{"vertex", "nanogpt"}},
		"offline":  {Backends: []string{"nanogpt"}, PreferSubscription: true},
	}
	if d := cmp.Diff(want, r.Profiles); d != "" {
		t.Errorf("profiles (-want +got):\n%s", d)
	}
	if r.Quota.Threshold != 0.95 || r.ReloadInterval != 5*time.Second {
		t.Errorf("defaults lost: %+v", r.Quota)
	}
}

func TestRoutingValidation(t *testing.T) {
	tests := []struct {
		yaml string
		env  map[string]string
		want string
	}{
		{"routing:\n  profiles:\n    x:\n      exclude: [openai]\n", nil, `routing.profiles.x: unknown backend "openai"`},
		{"", map[string]string{"ACTIVE_PROFILE": "holiday"}, `ACTIVE_PROFILE: "holiday" is not a defined profile`},
		{"routing:\n  quota:\n    threshold: 1.5\n", nil, "routing.quota.threshold: 1.5 must be in (0, 1]"},
		{"routing:\n  max_attempts: 0\n", nil, "routing.max_attempts: 0 must be at least 1"},
	}
	for _, tc := range tests {
		_, err := loadYAML(t, tc.yaml, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: err = %v; want it to say %q", tc.yaml, err, tc.want)
		}
	}
}
