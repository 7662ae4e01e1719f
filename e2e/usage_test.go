package e2e

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeSQLiteCommands returns the README's sqlite3 command lines.
func readmeSQLiteCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); strings.HasPrefix(line, "sqlite3 ~/.mcp/proxy/usage.db ") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatal("the README shows no sqlite3 ~/.mcp/proxy/usage.db command")
	}
	return out
}

// TestUsageREADMECommand runs the README's sqlite3 commands, as written, against the
// database a real proxy created at its default path (DB_PATH unset, HOME a temp dir).
func TestUsageREADMECommand(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the sqlite3 shell is missing (.ci/run installs it)")
		}
		t.Skip("skipping: the sqlite3 shell is not installed")
	}
	cmds := readmeSQLiteCommands(t)
	mock := newUpstream(t)
	p := startProxy(t, mock, proxyOptions{defaultDB: true})
	resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json",
		bytes.NewReader(readFixture(t, "clients/roo-code-one-shot.json")))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	reqID, model := resp.Header.Get("X-Request-Id"), resp.Header.Get("X-Proxy-Model")
	p.stop()

	for _, c := range cmds {
		cmd := exec.Command("sh", "-c", c)
		cmd.Env = append(os.Environ(), "HOME="+p.Home)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("%s: %v\n%s", c, err, stderr.String())
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], model) {
			t.Errorf("%s printed %q, want one line about the one request (model %s)", c, out, model)
		}
		if strings.Contains(c, "SELECT * FROM usage") {
			for _, want := range []string{reqID, "|nanogpt|", "|812|14|826|"} {
				if !strings.Contains(lines[0], want) {
					t.Errorf("%s printed %q, want it to contain %q", c, lines[0], want)
				}
			}
		}
	}
}
