package promptengineer

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

func compact(t testing.TB, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, b)
	}
	return buf.String()
}

// stripBlock removes exactly what inject added, given where it went.
func stripBlock(t testing.TB, upstream string, block, where string) string {
	t.Helper()
	q := string(quoteJSON(block))
	var added string
	switch where {
	case "append":
		if strings.Contains(upstream, `{"type":"text","text":`+q+`}`) {
			added = `,{"type":"text","text":` + q + `}`
		} else {
			added = string(quoteJSON("\n\n" + block))
			added = added[1 : len(added)-1]
		}
	case "prepend":
		if strings.Contains(upstream, `{"type":"text","text":`+q+`}`) {
			added = `{"type":"text","text":` + q + `},`
		} else {
			added = string(quoteJSON(block + "\n\n"))
			added = added[1 : len(added)-1]
		}
	case injNewSystem:
		added = `{"role":"system","content":` + q + `},`
	default:
		return upstream
	}
	if n := strings.Count(upstream, added); n != 1 {
		t.Fatalf("the added block occurs %d times in the upstream body", n)
	}
	return strings.Replace(upstream, added, "", 1)
}

// TestInjectionByteIdentity: for every client fixture the upstream body is the client body
// plus the guidance block and nothing else: system prompt, tools, messages and every other
// field byte-identical.
func TestInjectionByteIdentity(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "clients", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatal("no fixtures", err)
	}
	for _, mode := range []Injection{InjectAppend, InjectPrepend} {
		inj := map[roles.Role]Injection{}
		for _, r := range roles.All {
			inj[r] = mode
		}
		e := newEngineer(t, Config{Injection: inj})
		for _, f := range files {
			t.Run(string(mode)+"/"+filepath.Base(f), func(t *testing.T) {
				body, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				req := parse(t, body)
				res, err := e.Prepare(context.Background(), req, Input{})
				if err != nil {
					t.Fatal(err)
				}
				up := compact(t, req.UpstreamBody(req.Model))
				block := e.Strategies().Guidance(res.Role)
				if res.Signal == SignalSpecial && res.Role == roles.Documentation {
					st := e.Strategies()
					block = st.special[st.firstSpecial("you are a helpful ai assistant tasked with summarizing conversations.", len(st.special))].block
				}
				if res.Guidance && !strings.Contains(up, `role=\"`+string(res.Role)+`\"`) {
					t.Fatalf("guidance reported but no block for %s upstream", res.Role)
				}
				got := stripBlock(t, up, block, res.Injection)
				if want := compact(t, body); got != want {
					t.Errorf("upstream minus the block differs from the client body (injection %q)\n got: %.400s\nwant: %.400s", res.Injection, got, want)
				}
			})
		}
	}
}

// TestInjectionOnce: a request that already carries a guidance block (a replayed upstream
// body, a proxy chain) does not get a second one, whatever its role now resolves to.
func TestInjectionOnce(t *testing.T) {
	e := newEngineer(t, Config{})
	req := parse(t, fixture(t, "roo-code-debug-first-turn.json"))
	if _, err := e.Prepare(context.Background(), req, Input{}); err != nil {
		t.Fatal(err)
	}
	first := req.UpstreamBody("auto")
	again := parse(t, first)
	res, err := e.Prepare(context.Background(), again, Input{HeaderRole: "testing"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Guidance || res.Injection != injAlready {
		t.Errorf("second pass: guidance %v, injection %q; want none, already present", res.Guidance, res.Injection)
	}
	if got := again.UpstreamBody("auto"); !bytes.Equal(got, first) {
		t.Error("second pass changed the body")
	}
	if n := bytes.Count(first, []byte("<"+Marker)); n != 1 {
		t.Errorf("%d guidance blocks; want 1", n)
	}
}

// Whether a system prompt already carries a guidance block is a memo of its bytes: the same
// prompts sent four times each (their bytes kept from the second time) are answered as the
// first time, with the block and without.
func TestInjectionOnceFromMemo(t *testing.T) {
	e := newEngineer(t, Config{})
	plain := fixture(t, "roo-code-debug-first-turn.json")
	req := parse(t, plain)
	if _, err := e.Prepare(context.Background(), req, Input{}); err != nil {
		t.Fatal(err)
	}
	guided := req.UpstreamBody("auto")
	for round := range 4 {
		for _, tc := range []struct {
			body []byte
			want string
		}{{guided, injAlready}, {plain, string(InjectAppend)}} {
			r := parse(t, bytes.Clone(tc.body))
			res, err := e.Prepare(context.Background(), r, Input{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Injection != tc.want {
				t.Errorf("round %d: injection %q, want %q", round, res.Injection, tc.want)
			}
			if n := bytes.Count(r.UpstreamBody("auto"), []byte("<"+Marker)); n != 1 {
				t.Errorf("round %d: %d guidance blocks, want 1", round, n)
			}
		}
	}
}

// TestInjectionModes: per role off / append / prepend, a new system message when the
// client sent none, and the same bytes on every turn of one task (prompt caches hold).
func TestInjectionModes(t *testing.T) {
	e := newEngineer(t, Config{Injection: map[roles.Role]Injection{
		roles.Debugging: InjectPrepend, roles.Research: InjectOff}})
	sys := func(req *backends.ChatRequest) string { return req.Messages[0].Text(0) }

	debug := parse(t, fixture(t, "roo-code-debug-first-turn.json"))
	res, _ := e.Prepare(context.Background(), debug, Input{})
	if res.Injection != "prepend" || !strings.HasPrefix(sys(debug), `<proxy_role_guidance role="debugging">`) {
		t.Errorf("debugging: injection %q, system starts %.60q", res.Injection, sys(debug))
	}
	ask := parse(t, fixture(t, "roo-code-ask-first-turn.json"))
	res, _ = e.Prepare(context.Background(), ask, Input{})
	if res.Injection != "off" || res.Guidance || strings.Contains(sys(ask), Marker) {
		t.Errorf("research is off but got injection %q", res.Injection)
	}
	code := parse(t, fixture(t, "roo-code-code-first-turn.json"))
	res, _ = e.Prepare(context.Background(), code, Input{})
	if res.Injection != "append" || !strings.HasSuffix(sys(code), "</proxy_role_guidance>") {
		t.Errorf("implementation: injection %q, system ends %q", res.Injection, sys(code)[len(sys(code))-40:])
	}
	// The next turn of the same task gets byte-identical system bytes.
	tool := parse(t, fixture(t, "roo-code-code-tool-turn.json"))
	if _, err := e.Prepare(context.Background(), tool, Input{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(code.Messages[0].JSON(), tool.Messages[0].JSON()) {
		t.Error("the system message differs between two turns of one task")
	}
	// No system message: one is added first, the user's message untouched.
	plain := parse(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"Write unit tests for Clamp"}]}`))
	res, _ = e.Prepare(context.Background(), plain, Input{})
	if res.Injection != injNewSystem || len(plain.Messages) != 2 || plain.Messages[0].Role != "system" ||
		string(plain.Messages[1].JSON()) != `{"role":"user","content":"Write unit tests for Clamp"}` {
		t.Errorf("no system message: injection %q, messages %s", res.Injection, plain.UpstreamBody("m"))
	}
}

// TestInjectionOnceLongGuidance: a long custom guidance appended to a long system prompt
// is still recognised on a second pass, and so is one written by Go's encoding/json
// (which escapes "<" and ">").
func TestInjectionOnceLongGuidance(t *testing.T) {
	system := strings.Repeat("You are a helpful assistant. ", 2000)
	longBlock := "<" + Marker + ` role="general">` + "\n" + strings.Repeat("Check every error path. ", 1000) + "\n</" + Marker + ">"
	shortBlock := "<" + Marker + ` role="general">` + "\nBe brief.\n</" + Marker + ">"
	escaped, _ := json.Marshal(system + "\n\n" + shortBlock) // \u003c...\u003e
	tests := map[string]string{
		"long guidance":    string(quoteJSON(system + "\n\n" + longBlock)),
		"escaped by Go":    string(escaped),
		"prepended, plain": string(quoteJSON(shortBlock + "\n\n" + system)),
	}
	for name, content := range tests {
		t.Run(name, func(t *testing.T) {
			req := parse(t, []byte(`{"model":"auto","messages":[{"role":"system","content":`+content+`},{"role":"user","content":"hi"}]}`))
			if got := inject(req, shortBlock, InjectAppend); got != injAlready {
				t.Errorf("inject: %q; want %q", got, injAlready)
			}
		})
	}
}
