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

// withoutEnvMode removes the "# Current Mode" section so only the system prompt's opening
// can tell the mode.
func withoutEnvMode(t testing.TB, body []byte) []byte {
	t.Helper()
	s := string(body)
	for _, slug := range []string{"architect", "code", "ask", "debug", "orchestrator"} {
		s = strings.ReplaceAll(s, `# Current Mode\n<slug>`+slug+`</slug>`, `# Something Else\n<x>`+slug+`</x>`)
	}
	if strings.Contains(s, "# Current Mode") {
		t.Fatal("fixture still carries # Current Mode")
	}
	return []byte(s)
}

// TestOpeningFallback: without environment details the system prompt's opening role
// definition decides, not the list of every mode further down.
func TestOpeningFallback(t *testing.T) {
	e := newEngineer(t, Config{})
	tests := []struct {
		file  string
		role  roles.Role
		agent string
	}{
		{"roo-code-architect-first-turn.json", roles.Architect, "Roo"},
		{"roo-code-code-first-turn.json", roles.Implementation, "Roo"},
		{"roo-code-ask-first-turn.json", roles.Research, "Roo"},
		{"roo-code-debug-first-turn.json", roles.Debugging, "Roo"},
		{"roo-code-orchestrator-first-turn.json", roles.Architect, "Roo"},
		{"kilo-code-architect-first-turn.json", roles.Architect, "Kilo Code"},
		{"cline-first-turn.json", roles.Implementation, "Cline"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			res, err := e.Resolve(parse(t, withoutEnvMode(t, fixture(t, tt.file))), Input{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Role != tt.role || res.Signal != SignalOpening || !strings.Contains(res.Reason, tt.agent+" system prompt opening") {
				t.Errorf("got %s by %s (%s); want %s from the %s opening", res.Role, res.Signal, res.Reason, tt.role, tt.agent)
			}
		})
	}
}

// TestCustomModeSlugs: the same prompts sent from custom modes map through prompt.modes;
// an unmapped custom mode falls through to classification and says so.
func TestCustomModeSlugs(t *testing.T) {
	e := newEngineer(t, Config{Modes: map[string]roles.Role{
		"security-reviewer": roles.CodeReview,
		"test-writer":       roles.Testing,
		"code":              roles.CodeReview, // built-in slugs can be remapped too
	}})
	setSlug := func(t *testing.T, file, slug string) *backends.ChatRequest {
		t.Helper()
		s := string(fixture(t, file))
		i := strings.Index(s, `<slug>`)
		j := strings.Index(s, `</slug>`)
		if i < 0 || j < i {
			t.Fatal("no slug in fixture")
		}
		s = strings.ReplaceAll(s, s[i:j], "<slug>"+slug)
		return parse(t, []byte(s))
	}
	tests := []struct {
		file, slug string
		role       roles.Role
		signal     string
	}{
		{"roo-code-debug-first-turn.json", "security-reviewer", roles.CodeReview, SignalMode},
		{"roo-code-code-first-turn.json", "test-writer", roles.Testing, SignalMode},
		{"kilo-code-architect-first-turn.json", "test-writer", roles.Testing, SignalMode},
		{"roo-code-code-first-turn.json", "code", roles.CodeReview, SignalMode},
		// Unknown slug: the opening ("an expert software debugger") still tells the mode.
		{"roo-code-debug-first-turn.json", "my-unknown-mode", roles.Debugging, SignalOpening},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.slug, func(t *testing.T) {
			res, err := e.Resolve(setSlug(t, tt.file, tt.slug), Input{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Role != tt.role || res.Signal != tt.signal {
				t.Errorf("got %s by %s (%s); want %s by %s", res.Role, res.Signal, res.Reason, tt.role, tt.signal)
			}
		})
	}

	// A custom mode with its own role definition and no mapping: content decides, and the
	// reason names the unmapped mode so the user knows what to configure.
	body := `{"model":"auto","messages":[{"role":"system","content":"You are Roo, a docs gardener."},` +
		`{"role":"user","content":[{"type":"text","text":"<task>\nUpdate the README with the new install steps\n</task>"},` +
		`{"type":"text","text":"<environment_details>\n# Current Mode\n<slug>docs-gardener</slug>\n</environment_details>"}]}]}`
	res, err := e.Resolve(parse(t, []byte(body)), Input{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Role != roles.Documentation || res.Signal != SignalContent || !strings.Contains(res.Reason, `"docs-gardener" is not in prompt.modes`) {
		t.Errorf("got %s by %s (%s)", res.Role, res.Signal, res.Reason)
	}
}

// TestClinePlanActModes: Cline writes "# Current Mode\nPLAN MODE" / "ACT MODE".
func TestClinePlanActModes(t *testing.T) {
	e := newEngineer(t, Config{})
	for mode, want := range map[string]roles.Role{"PLAN MODE": roles.Architect, "ACT MODE": roles.Implementation} {
		s := strings.Replace(string(fixture(t, "cline-first-turn.json")), `<slug>code</slug>\n<name>💻 Code</name>`, mode, 1)
		res, err := e.Resolve(parse(t, []byte(s)), Input{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Role != want || res.Signal != SignalMode {
			t.Errorf("%s: got %s by %s (%s); want %s", mode, res.Role, res.Signal, res.Reason, want)
		}
	}
}

// TestExplicitRoleWins: body role beats the header, the alias and the agent's mode; the
// header beats the alias; unknown explicit roles are errors listing the valid roles.
func TestExplicitRoleWins(t *testing.T) {
	e := newEngineer(t, Config{})
	withRole := func(file, role string) []byte {
		s := string(fixture(t, file))
		return []byte(strings.Replace(s, `"model": "auto",`, `"model": "auto", "role": "`+role+`",`, 1))
	}
	tests := []struct {
		name    string
		body    []byte
		in      Input
		role    roles.Role
		signal  string
		invalid string
	}{
		{"body over everything", withRole("roo-code-debug-first-turn.json", "testing"),
			Input{HeaderRole: "architect", AliasRole: roles.Research}, roles.Testing, SignalBody, ""},
		{"body over condense", withRole("roo-code-condense.json", "code_review"), Input{}, roles.CodeReview, SignalBody, ""},
		{"header over alias and mode", fixture(t, "roo-code-debug-first-turn.json"),
			Input{HeaderRole: "Code-Review", AliasRole: roles.Research}, roles.CodeReview, SignalHeader, ""},
		{"alias over mode", fixture(t, "roo-code-debug-first-turn.json"), Input{AliasRole: roles.Research}, roles.Research, SignalAlias, ""},
		{"invalid body role", withRole("roo-code-code-first-turn.json", "coder"), Input{}, "", "", "coder"},
		{"invalid header role", fixture(t, "roo-code-code-first-turn.json"), Input{HeaderRole: "hacker"}, "", "", "hacker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := parse(t, tt.body)
			before := string(req.UpstreamBody("m"))
			res, err := e.Prepare(context.Background(), req, tt.in)
			if tt.invalid != "" {
				ire, ok := err.(*InvalidRoleError)
				if !ok || ire.Value != tt.invalid || !strings.Contains(err.Error(), roles.List()) {
					t.Fatalf("got %v; want an InvalidRoleError for %q listing %s", err, tt.invalid, roles.List())
				}
				if after := string(req.UpstreamBody("m")); after != before {
					t.Error("a rejected request was edited")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Role != tt.role || res.Signal != tt.signal {
				t.Errorf("got %s by %s (%s); want %s by %s", res.Role, res.Signal, res.Reason, tt.role, tt.signal)
			}
		})
	}
}

// The opening of a system prompt is read once per strategies: later requests carrying the
// same prompt read the memo (backends.Message.Memo), and must resolve exactly as the first
// did; an engineer whose strategies read the opening otherwise (here: agent "Roo" renamed)
// gets its own answer for the same bytes, whichever engineer read them first.
func TestOpeningMemoResolvesAsFirstRead(t *testing.T) {
	renamed := strings.Replace(string(config.DefaultStrategies), `names: ["Roo", "Kilo Code", "Cline"]`, `names: ["Kilo Code", "Cline"]`, 1)
	if renamed == string(config.DefaultStrategies) {
		t.Fatal("the default strategies no longer name their agents as this test expects")
	}
	engineers := []*Engineer{newEngineer(t, Config{}), newEngineer(t, Config{Default: []byte(renamed)})}
	entries, err := os.ReadDir(filepath.Join("..", "testdata", "clients"))
	if err != nil {
		t.Fatal(err)
	}
	openingRead := 0
	for _, ent := range entries {
		body := fixture(t, ent.Name())
		var first [2]Result
		for round := range 4 { // the bytes are kept from the second round: memos from the third
			for k, e := range engineers {
				req, err := backends.ParseChatRequest(append([]byte(nil), body...))
				if err != nil {
					continue // a fixture of a request the proxy rejects
				}
				// Without the mode in environment_details the opening decides.
				if i := lastUserIndex(req); i >= 0 {
					req.Messages[i] = backends.NewMessage("user", "please go on")
				}
				res, err := e.Resolve(req, Input{})
				if err != nil {
					t.Fatal(err)
				}
				if round == 0 {
					first[k] = res
					if res.Signal == SignalOpening && k == 0 {
						openingRead++
					}
					continue
				}
				if res.Role != first[k].Role || res.Signal != first[k].Signal || res.Reason != first[k].Reason {
					t.Errorf("%s, engineer %d, round %d: %s/%s (%s); first read %s/%s (%s)", ent.Name(), k, round,
						res.Role, res.Signal, res.Reason, first[k].Role, first[k].Signal, first[k].Reason)
				}
			}
		}
		if first[0].Signal == SignalOpening && strings.Contains(first[0].Reason, "Roo") && first[1].Signal == SignalOpening {
			t.Errorf("%s: the engineer without agent Roo read a Roo opening: %s", ent.Name(), first[1].Reason)
		}
	}
	if openingRead == 0 {
		t.Fatal("no fixture resolved by its system prompt's opening: the test checks nothing")
	}
}
