// Package e2e holds the end-to-end tests: they build the real nanogpt-proxy binary, start it
// as a subprocess against an in-process mock NanoGPT, and drive it with the clients coding
// agents use (the official openai npm SDK, as Roo Code does, and go-openai).
package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // reads the proxy's usage database
)

// testAPIKey is the NanoGPT key the proxy is started with; it must reach the upstream and
// nothing else (no log line, no response).
const testAPIKey = "sk-nano-e2e-0123456789abcdef"

// clientKey is what Roo Code sends as its bearer token when no key is configured.
const clientKey = "not-provided"

// proxyBin is the binary built once by TestMain.
var proxyBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nanogpt-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	proxyBin = filepath.Join(dir, "nanogpt-proxy")
	args := []string{"build", "-o", proxyBin}
	if raceEnabled {
		// The race detector watches the proxy too; a race makes it exit 66, which fails the test.
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool(), append(args, ".")...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building the proxy: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// logBuffer collects the proxy's stderr.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// proxy is one running nanogpt-proxy process.
type proxy struct {
	t      *testing.T
	URL    string // http://127.0.0.1:port
	DBPath string
	Home   string
	Log    *logBuffer
	mock   *upstream

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // cmd.Wait's result, valid once exited is closed
}

type proxyOptions struct {
	// defaultDB leaves DB_PATH unset so the proxy uses its default ~/.mcp/proxy/usage.db
	// under the test's HOME.
	defaultDB bool
	// env adds variables (NAME=value).
	env []string
	// config is appended to the YAML file named by CONFIG_PATH.
	config string
}

// baseConfig makes the usage writer flush only at shutdown (or when a batch fills), so
// rows found after stop prove that shutdown flushes.
const baseConfig = "storage:\n  flush_interval: 1h\n"

// startProxy starts the binary against mock and waits until /health answers.
func startProxy(t *testing.T, mock *upstream, opts proxyOptions) *proxy {
	t.Helper()
	var lastLog string
	for try := 0; try < 3; try++ {
		p, err := tryStart(t, mock, opts)
		if err == nil {
			return p
		}
		lastLog = p.Log.String()
		if !strings.Contains(lastLog, "address already in use") {
			t.Fatalf("starting the proxy: %v\nlog:\n%s", err, lastLog)
		}
	}
	t.Fatalf("starting the proxy: no free port after 3 tries\nlog:\n%s", lastLog)
	return nil
}

func tryStart(t *testing.T, mock *upstream, opts proxyOptions) (*proxy, error) {
	home := t.TempDir()
	p := &proxy{t: t, Home: home, Log: &logBuffer{}, mock: mock, exited: make(chan struct{})}
	port, err := freePort()
	if err != nil {
		return p, err
	}
	p.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	absent := filepath.Join(t.TempDir(), "absent")
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(baseConfig+opts.config), 0o600); err != nil {
		return p, err
	}
	env := []string{
		"HOME=" + home,
		"HOST=127.0.0.1",
		"PORT=" + strconv.Itoa(port),
		"NANOGPT_API_KEY=" + testAPIKey,
		"NANOGPT_BASE_URL=" + mock.URL() + "/api/v1",
		"MODEL_ROUTING_PATH=" + filepath.Join(absent, "model_routing.json"),
		"PROMPT_STRATEGIES_PATH=" + filepath.Join(absent, "prompt_strategies.yaml"),
		// The most talkative level: even debug lines must not carry keys or prompts.
		"LOG_LEVEL=debug",
		"CONFIG_PATH=" + cfgPath,
	}
	if opts.defaultDB {
		p.DBPath = filepath.Join(home, ".mcp", "proxy", "usage.db")
	} else {
		p.DBPath = filepath.Join(t.TempDir(), "data", "usage.db")
		env = append(env, "DB_PATH="+p.DBPath)
	}
	env = append(env, opts.env...)
	p.cmd = exec.Command(proxyBin)
	p.cmd.Env = env
	p.cmd.Dir = t.TempDir() // any working directory works: defaults are embedded
	p.cmd.Stdout = p.Log
	p.cmd.Stderr = p.Log
	if err := p.cmd.Start(); err != nil {
		return p, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)
	if err := p.waitHealthy(); err != nil {
		return p, err
	}
	return p, nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHealthy polls /health until it answers 200, the process dies, or 30 s pass.
func (p *proxy) waitHealthy() error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("the proxy exited before it was healthy: %v", p.err)
		default:
		}
		resp, err := client.Get(p.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("the proxy was not healthy within 30 s")
}

// signal sends sig to the proxy.
func (p *proxy) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling the proxy: %v", err)
	}
}

// wait waits (at most limit, then kills) for the process to exit and returns its exit code.
func (p *proxy) wait(limit time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Fatalf("the proxy did not exit within %v of the signal\nlog:\n%s", limit, p.Log.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM, requires exit code 0 and returns the log. After stop the usage
// rows are on disk: shutdown flushes the writer.
func (p *proxy) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		p.t.Fatalf("the proxy exited with code %d after SIGTERM, want 0\nlog:\n%s", code, p.Log.String())
	}
}

// cleanup stops a proxy still running (SIGTERM, so that it writes out the log lines it
// still holds; killed after a grace period), checks the whole log for secrets and prompt
// text, and checks that every upstream request carried the proxy's key and never the
// client's.
func (p *proxy) cleanup() {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	p.checkLog()
	p.mock.checkAuth(p.t)
}

// checkLog fails the test if the log contains a key, a prompt, or a data race report.
func (p *proxy) checkLog() {
	log := p.Log.String()
	forbidden := []string{testAPIKey, "Bearer " + clientKey}
	forbidden = append(forbidden, p.mock.promptSnippets()...)
	for _, s := range forbidden {
		if strings.Contains(log, s) {
			p.t.Errorf("the proxy's log contains %q (keys and prompt text must never be logged)\nlog:\n%s", s, log)
		}
	}
	if strings.Contains(log, "WARNING: DATA RACE") {
		p.t.Errorf("the race detector reported a data race in the proxy:\n%s", log)
	}
}

// usageRow is one row of the public usage table.
type usageRow struct {
	RequestID        string
	Backend          string
	Model            string
	Role             string
	Profile          string
	Stream           bool
	StatusCode       int
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	TokensEstimated  bool
	Error            string
}

// usageRows reads every usage row, keyed by request_id. Call it after stop.
func (p *proxy) usageRows() map[string]usageRow {
	p.t.Helper()
	db, err := sql.Open("sqlite3", "file:"+p.DBPath+"?mode=ro")
	if err != nil {
		p.t.Fatalf("opening %s: %v", p.DBPath, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(context.Background(), `SELECT request_id, backend, model, role, profile, stream,
		status_code, prompt_tokens, completion_tokens, total_tokens, tokens_estimated, error FROM usage ORDER BY id`)
	if err != nil {
		p.t.Fatalf("reading the usage table: %v", err)
	}
	defer rows.Close()
	out := map[string]usageRow{}
	for rows.Next() {
		var u usageRow
		if err := rows.Scan(&u.RequestID, &u.Backend, &u.Model, &u.Role, &u.Profile, &u.Stream, &u.StatusCode,
			&u.PromptTokens, &u.CompletionTokens, &u.TotalTokens, &u.TokensEstimated, &u.Error); err != nil {
			p.t.Fatalf("reading the usage table: %v", err)
		}
		if _, dup := out[u.RequestID]; dup {
			p.t.Errorf("two usage rows for request %s", u.RequestID)
		}
		out[u.RequestID] = u
	}
	if err := rows.Err(); err != nil {
		p.t.Fatalf("reading the usage table: %v", err)
	}
	return out
}

// readFixture reads a file under ../testdata.
func readFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeJSON decodes b into an any (numbers as float64) for comparisons.
func decodeJSON(t *testing.T, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %.200s: %v", b, err)
	}
	return v
}
