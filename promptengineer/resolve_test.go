package promptengineer

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

func newEngineer(t testing.TB, cfg Config) *Engineer {
	t.Helper()
	if cfg.Default == nil {
		cfg.Default = config.DefaultStrategies
	}
	e, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "clients", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parse(t testing.TB, body []byte) *backends.ChatRequest {
	t.Helper()
	req, err := backends.ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestFixturesResolve: every client fixture gets the role its agent mode means, for the
// right reason, with no configuration.
func TestFixturesResolve(t *testing.T) {
	e := newEngineer(t, Config{})
	tests := []struct {
		file   string
		role   roles.Role
		signal string
		reason string // a substring of the reason
	}{
		{"roo-code-architect-first-turn.json", roles.Architect, SignalMode, `"architect"`},
		{"roo-code-code-first-turn.json", roles.Implementation, SignalMode, `"code"`},
		{"roo-code-code-tool-turn.json", roles.Implementation, SignalMode, `"code"`},
		{"roo-code-ask-first-turn.json", roles.Research, SignalMode, `"ask"`},
		{"roo-code-debug-first-turn.json", roles.Debugging, SignalMode, `"debug"`},
		{"roo-code-orchestrator-first-turn.json", roles.Architect, SignalMode, `"orchestrator"`},
		{"kilo-code-architect-first-turn.json", roles.Architect, SignalMode, `"architect"`},
		{"cline-first-turn.json", roles.Implementation, SignalMode, `"code"`},
		{"roo-code-condense.json", roles.Documentation, SignalSpecial, "context condensing"},
		{"roo-code-one-shot.json", roles.General, SignalSpecial, "enhance-prompt"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			req := parse(t, fixture(t, tt.file))
			res, err := e.Prepare(context.Background(), req, Input{})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s -> %s (%s)", tt.file, res.Role, res.Reason)
			if res.Role != tt.role || res.Signal != tt.signal || !strings.Contains(res.Reason, tt.reason) {
				t.Errorf("got role %s signal %s reason %q; want %s by %s mentioning %s", res.Role, res.Signal, res.Reason, tt.role, tt.signal, tt.reason)
			}
		})
	}
}
