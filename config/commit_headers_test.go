package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// upstream.commit_headers_after defaults to 8s, is read from the YAML file (0 turns early
// headers off), and a negative value is an error naming it.
func TestCommitHeadersAfter(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		yaml    string
		want    time.Duration
		wantErr string
	}{
		{"default", "", 8 * time.Second, ""},
		{"set", "upstream:\n  commit_headers_after: 3s\n", 3 * time.Second, ""},
		{"off", "upstream:\n  commit_headers_after: 0s\n", 0, ""},
		{"negative", "upstream:\n  commit_headers_after: -1s\n", 0, "upstream"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vars := map[string]string{"HOME": dir}
			if tt.yaml != "" {
				path := filepath.Join(dir, "c"+string(rune('0'+i))+".yaml")
				if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
					t.Fatal(err)
				}
				vars["CONFIG_PATH"] = path
			}
			cfg, err := config.Load(env(vars))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Upstream.CommitHeadersAfter != tt.want {
				t.Errorf("CommitHeadersAfter = %v, want %v", cfg.Upstream.CommitHeadersAfter, tt.want)
			}
		})
	}
}
