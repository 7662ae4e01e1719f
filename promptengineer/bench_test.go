package promptengineer

import (
	"context"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// rooRequest60K pads the Roo Code debug fixture to the size of a real Roo request (about
// 60 KB: a long system prompt with tool docs and a file listing in the environment details).
func rooRequest60K(t testing.TB) []byte {
	s := string(fixture(t, "roo-code-debug-first-turn.json"))
	pad := strings.Repeat(`- src/orders/some_generated_file_with_a_long_name.go (1234 lines)\n`, 40)
	s = strings.Replace(s, `====\n\nTOOL USE`, `====\n\n`+strings.Repeat(`RULES: use the tools one at a time, wait for the result, never assume success.\n`, 500)+`====\n\nTOOL USE`, 1)
	s = strings.Replace(s, `# Current Time`, `# Recently Modified Files\n`+pad+`\n# Current Time`, 1)
	for len(s) < 60<<10 {
		s = strings.Replace(s, `RULES: use`, `RULES: use the tools one at a time.\nRULES: use`, 1)
	}
	return []byte(s)
}

// BenchmarkResolveRoo60K measures role resolution on a 60 KB Roo Code request (goal:
// ≤ 20 µs). The body is parsed outside the timer: parsing belongs to the handler.
func BenchmarkResolveRoo60K(b *testing.B) {
	e := newEngineer(b, Config{})
	req := parse(b, rooRequest60K(b))
	b.ResetTimer()
	for b.Loop() {
		if res, _ := e.Resolve(req, Input{}); res.Role != roles.Debugging {
			b.Fatal(res.Role)
		}
	}
}

// BenchmarkPrepareRoo60K is resolution plus guidance injection (which keeps the block
// beside the 60 KB system prompt rather than copying the prompt).
func BenchmarkPrepareRoo60K(b *testing.B) {
	e := newEngineer(b, Config{})
	body := rooRequest60K(b)
	b.SetBytes(int64(len(body)))
	req := parse(b, body)
	if res, _ := e.Prepare(context.Background(), req.Clone(), Input{}); res.Role != roles.Debugging || res.Signal != SignalMode {
		b.Fatalf("padded request resolved to %s by %s", res.Role, res.Signal)
	}
	b.ReportMetric(float64(len(body)), "body_bytes")
	b.ResetTimer()
	for b.Loop() {
		r := req.Clone()
		if _, err := e.Prepare(context.Background(), r, Input{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkResolveOpening60K is the same request without environment details: the
// system prompt's opening decides.
func BenchmarkResolveOpening60K(b *testing.B) {
	e := newEngineer(b, Config{})
	req := parse(b, withoutEnvMode(b, rooRequest60K(b)))
	b.ResetTimer()
	for b.Loop() {
		if res, _ := e.Resolve(req, Input{}); res.Signal != SignalOpening {
			b.Fatal(res.Signal)
		}
	}
}

// BenchmarkClassify measures content classification of a chat prompt.
func BenchmarkClassify(b *testing.B) {
	e := newEngineer(b, Config{})
	req := parse(b, []byte(`{"model":"auto","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"My React app crashes with \"TypeError: Cannot read properties of undefined (reading 'map')\" when the list is empty. I tried adding a guard but it still fails in production builds only."}]}`))
	b.ResetTimer()
	for b.Loop() {
		if res, _ := e.Resolve(req, Input{}); res.Role != roles.Debugging {
			b.Fatal(res.Role)
		}
	}
}

// BenchmarkHasMarker is the check for a guidance block already in a 60 KB system prompt
// (both ends of it), done on every request before injecting.
func BenchmarkHasMarker(b *testing.B) {
	req := parse(b, rooRequest60K(b))
	content := req.Messages[0].Content
	b.SetBytes(int64(2 * markerWindow))
	for b.Loop() {
		if hasMarker(content) {
			b.Fatal("marker in the client's prompt")
		}
	}
}
