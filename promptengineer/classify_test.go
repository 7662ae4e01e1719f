package promptengineer

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// classificationTable is realistic prompts from chat clients that send no role and no
// agent mode, with the role a person would pick.
var classificationTable = []struct {
	prompt string
	want   roles.Role
}{
	// debugging: stack traces, failures, "why does X"
	{"panic: runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation]\n\ngoroutine 1 [running]:\nmain.main()\n\t/app/main.go:12 +0x1d", roles.Debugging},
	{"Traceback (most recent call last):\n  File \"app.py\", line 8, in <module>\n    main()\nKeyError: 'user_id'", roles.Debugging},
	{"My React app crashes with \"TypeError: Cannot read properties of undefined (reading 'map')\" when the list is empty", roles.Debugging},
	{"Why does my goroutine deadlock when I close the channel twice?", roles.Debugging},
	{"The login page doesn't work after the upgrade to Django 5, it just redirects forever", roles.Debugging},
	{"Exception in thread \"main\" java.lang.NullPointerException\n    at com.acme.Orders.total(Orders.java:42)", roles.Debugging},
	{"npm run build fails with exit code 137 on CI but works locally", roles.Debugging},
	{"There's a memory leak in our Node service, RSS grows 100MB per hour. How do I find it?", roles.Debugging},
	// testing
	{"Write unit tests for the parseDuration function, including edge cases", roles.Testing},
	{"Add tests for the OrderService.Cancel method using pytest fixtures", roles.Testing},
	{"How can I increase test coverage for the payments module?", roles.Testing},
	{"Generate table-driven tests for this Go function:\n\nfunc Clamp(x, lo, hi int) int { ... }", roles.Testing},
	{"Mock the S3 client in these jest tests so they do not hit the network", roles.Testing},
	{"Write an integration test that spins up Postgres and checks the migration", roles.Testing},
	// code review
	{"Review this diff for security issues:\n\ndiff --git a/api/user.go b/api/user.go\n@@ -10,6 +10,8 @@\n+\tq := \"SELECT * FROM users WHERE id=\" + id", roles.CodeReview},
	{"Can you review my pull request? It adds rate limiting to the API gateway.", roles.CodeReview},
	{"Please do a code review of this function and tell me if anything is wrong with it", roles.CodeReview},
	{"Is this code safe? I'm worried about SQL injection in the search handler.", roles.CodeReview},
	{"Critique this implementation of an LRU cache, is it idiomatic Go?", roles.CodeReview},
	// architecture
	{"How should we structure a multi-tenant SaaS backend: shared schema or database per tenant?", roles.Architect},
	{"Design a system that ingests 50k events per second and makes them queryable within a minute", roles.Architect},
	{"We're moving from a monolith to microservices. What are the trade-offs and how should we plan the migration?", roles.Architect},
	{"Give me a high-level design for an offline-first mobile app with sync", roles.Architect},
	{"What architecture would you recommend for a plugin system in our desktop app?", roles.Architect},
	// implementation
	{"Write a function in Python that merges overlapping intervals", roles.Implementation},
	{"Implement a rate limiter middleware for our Express server using a token bucket", roles.Implementation},
	{"Add a /healthz endpoint to the Go HTTP server that checks the database connection", roles.Implementation},
	{"Refactor this class to use dependency injection instead of global singletons", roles.Implementation},
	{"Create a bash script that backs up the Postgres database to S3 every night", roles.Implementation},
	{"Convert this callback-based code to async/await", roles.Implementation},
	// documentation
	{"Write a README for this CLI tool with installation and usage sections", roles.Documentation},
	{"Add docstrings to every public function in utils.py", roles.Documentation},
	{"Write the changelog entry for version 2.3.0 from these commits", roles.Documentation},
	{"Update the API documentation for the /orders endpoint to include the new filter parameters", roles.Documentation},
	{"Write a commit message for these staged changes", roles.Documentation},
	// research
	{"What is the difference between a mutex and a semaphore?", roles.Research},
	{"Compare gRPC vs REST for internal service communication", roles.Research},
	{"Which is better for a small team in 2026, Postgres or MySQL?", roles.Research},
	{"How does the Raft consensus algorithm handle leader election?", roles.Research},
	{"What are the pros and cons of using an ORM?", roles.Research},
	{"Explain how HTTP/3 differs from HTTP/2", roles.Research},
	// general / chit-chat
	{"hi!", roles.General},
	{"Thanks, that worked.", roles.General},
	{"Tell me a joke about cats", roles.General},
	{"What's a good name for a golden retriever puppy?", roles.General},
	{"Translate 'good morning' into Spanish", roles.General},
}

// TestClassificationTable keeps content classification at 100 % on realistic prompts and
// reports the accuracy.
func TestClassificationTable(t *testing.T) {
	if len(classificationTable) < 40 {
		t.Fatalf("table has %d prompts; want at least 40", len(classificationTable))
	}
	e := newEngineer(t, Config{})
	correct := 0
	for _, tt := range classificationTable {
		body := fmt.Sprintf(`{"model":"auto","messages":[{"role":"user","content":%s}]}`, quoteJSON(tt.prompt))
		req, err := backends.ParseChatRequest([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.Resolve(req, Input{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Role == tt.want {
			correct++
			continue
		}
		t.Errorf("%q: got %s (%s); want %s", firstLine(tt.prompt), res.Role, res.Reason, tt.want)
	}
	acc := 100 * float64(correct) / float64(len(classificationTable))
	t.Logf("classification accuracy: %d/%d = %.1f%%", correct, len(classificationTable), acc)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// TestPatternPrefilterIsExact: the literal prefilter never hides a match the regular
// expression would find (it may only skip texts that cannot match).
func TestPatternPrefilterIsExact(t *testing.T) {
	e := newEngineer(t, Config{})
	extra := []string{"exit status 2", "exit code 0", "@@ -1,3 +1,4 @@", "is this code ok", "high-level plan", "add a new field to", "should we go with kafka"}
	for _, st := range e.Strategies().roles {
		for i := range st.patterns {
			p := &st.patterns[i]
			for _, tt := range classificationTable {
				text := strings.ToLower(tt.prompt)
				if got, want := p.match(text), p.re.MatchString(text); got != want {
					t.Errorf("pattern %s on %q: prefiltered %v, regexp %v", p.re, firstLine(text), got, want)
				}
			}
			for _, text := range extra {
				if got, want := p.match(text), p.re.MatchString(text); got != want {
					t.Errorf("pattern %s on %q: prefiltered %v, regexp %v", p.re, text, got, want)
				}
			}
		}
	}
	for _, tt := range []struct {
		re   string
		lits []string
	}{
		{`(add|implement) (a |the )?x`, []string{"add ", "implement "}},
		{`high[- ]level (design|plan)\b`, []string{"high level design", "high level plan", "high-level design", "high-level plan"}},
		{`^(what|why)\b.*\?`, []string{"what", "why"}},
		{`\w+ error`, nil},
		{`(panic: |\d+ apples)`, nil},
	} {
		p, err := compilePattern(tt.re)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(p.lits) != fmt.Sprint(tt.lits) {
			t.Errorf("%s: literals %q; want %q", tt.re, p.lits, tt.lits)
		}
	}
}
