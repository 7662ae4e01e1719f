package promptengineer

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// TestEmbeddedStrategies: the shipped file defines real guidance for every role.
func TestEmbeddedStrategies(t *testing.T) {
	st, err := ParseStrategies("embedded", config.DefaultStrategies)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range roles.All {
		b := st.Guidance(r)
		if !strings.HasPrefix(b, `<proxy_role_guidance role="`+string(r)+`">`) || !strings.HasSuffix(b, "</proxy_role_guidance>") {
			t.Errorf("%s: block is not delimited: %.80q", r, b)
		}
		// Concise: guidance must not eat the context window.
		if n := len(b); n < 150 || n > 1800 {
			t.Errorf("%s: guidance block is %d bytes; want 150-1800", r, n)
		}
		if len(st.strategyFor(r).keywords) == 0 && r != roles.General {
			t.Errorf("%s: no detection keywords", r)
		}
	}
}

// replaceLine edits the embedded file to break it in one place.
func replaceLine(t *testing.T, old, new string) []byte {
	t.Helper()
	s := string(config.DefaultStrategies)
	if !strings.Contains(s, old) {
		t.Fatalf("embedded strategies do not contain %q", old)
	}
	return []byte(strings.Replace(s, old, new, 1))
}

func lineOf(b []byte, sub string) int {
	i := strings.Index(string(b), sub)
	return strings.Count(string(b[:i]), "\n") + 1
}

// TestStrategiesValidation: an unknown role, empty guidance, a bad pattern or weight is
// rejected with the line it is on.
func TestStrategiesValidation(t *testing.T) {
	tests := []struct {
		name     string
		file     []byte
		at       string // text on the line the error must name
		contains string
	}{
		{"unknown role", replaceLine(t, "  testing:\n    guidance:", "  tester:\n    guidance:"), "  tester:", `unknown role "tester"`},
		{"empty guidance", replaceLine(t, "  general:\n    guidance: |\n      Be a precise", "  general:\n    guidance: \"\"\n    x_note: |\n      Be a precise"), "  general:", "guidance must not be empty"},
		{"bad pattern", replaceLine(t, `'exit (code|status) [1-9]\d*\b'`, `'exit (code|status [1-9]\d*\b'`), `exit (code|status [`, "bad pattern"},
		{"upper-case pattern", replaceLine(t, `'(error|exception): '`, `'(Error|Exception): '`), `(Error|Exception)`, "upper-case"},
		{"bad weight", replaceLine(t, "      traceback: 4\n", "      traceback: lots\n"), "traceback: lots", `keyword "traceback"`},
		{"bad special role", replaceLine(t, "    role: documentation\n    patterns:\n      - 'tasked", "    role: scribe\n    patterns:\n      - '(?i)tasked"), "role: scribe", `unknown role "scribe"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStrategies("s.yaml", tt.file)
			if err == nil {
				t.Fatal("accepted")
			}
			want := "s.yaml:" + strconv.Itoa(lineOf(tt.file, tt.at)) + ":"
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q; want it to name %s and say %q", err, want, tt.contains)
			}
		})
	}
}

// TestStartupRejectsBadFile: New fails on an invalid file at the configured path.
func TestStartupRejectsBadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.yaml")
	if err := os.WriteFile(p, replaceLine(t, "  testing:\n", "  tests:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{StrategiesPath: p, Default: config.DefaultStrategies}, nil)
	if err == nil || !strings.Contains(err.Error(), p+":") {
		t.Fatalf("got %v; want an error naming %s and its line", err, p)
	}
}

// TestHotReload: a changed file takes effect on the next tick; a broken edit is rejected,
// the last good strategies stay and /status shows the error; removing the file falls back
// to the embedded default.
func TestHotReload(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.yaml")
	write := func(b []byte, mt time.Time) {
		t.Helper()
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	write(config.DefaultStrategies, t0)
	e := newEngineer(t, Config{StrategiesPath: p})
	if e.Source() != p {
		t.Fatalf("source %q; want %s", e.Source(), p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan time.Time)
	done := make(chan struct{})
	go func() { e.Watch(ctx, tick); close(done) }()
	step := func() { tick <- time.Time{}; tick <- time.Time{} } // the second send waits for the first reload

	edited := replaceLine(t, "Act as a systematic debugger.", "Act as a relentless bug hunter.")
	write(edited, t0.Add(time.Minute))
	step()
	if g := e.Strategies().Guidance(roles.Debugging); !strings.Contains(g, "relentless bug hunter") {
		t.Fatalf("edit not picked up: %.120q", g)
	}

	write(replaceLine(t, "  testing:\n", "  tests:\n"), t0.Add(2*time.Minute))
	step()
	if g := e.Strategies().Guidance(roles.Debugging); !strings.Contains(g, "relentless bug hunter") {
		t.Fatal("a broken edit replaced the last good strategies")
	}
	st := e.Status().(map[string]any)["strategies"].(map[string]any)
	if msg, _ := st["error"].(string); !strings.Contains(msg, `unknown role "tests"`) {
		t.Errorf("status does not show the rejected edit: %v", st)
	}

	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	step()
	if e.Source() != "embedded" || !strings.Contains(e.Strategies().Guidance(roles.Debugging), "systematic debugger") {
		t.Errorf("after removal: source %q", e.Source())
	}
	cancel()
	<-done
}

// TestWatchPicksUpNewFile: with no file at start the embedded default is used; a file
// created later takes over on the next tick.
func TestWatchPicksUpNewFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.yaml")
	e := newEngineer(t, Config{StrategiesPath: p})
	if e.Source() != "embedded" {
		t.Fatalf("source %q", e.Source())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tick := make(chan time.Time)
	go e.Watch(ctx, tick)
	if err := os.WriteFile(p, replaceLine(t, "Act as a technical writer.", "Act as a terse technical writer."), 0o644); err != nil {
		t.Fatal(err)
	}
	tick <- time.Time{}
	tick <- time.Time{}
	if e.Source() != p || !strings.Contains(e.Strategies().Guidance(roles.Documentation), "terse technical writer") {
		t.Errorf("source %q; the new file was not loaded", e.Source())
	}
}
