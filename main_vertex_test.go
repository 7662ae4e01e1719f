package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	_ "github.com/mattn/go-sqlite3"
)

// signalWriter collects log output and closes ready when a line contains want.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	ready chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// With VERTEX_PROJECT_ID and VERTEX_BASE_URL set, the binary serves a Roo Code tool turn
// from Vertex, /status shows the backend configured, and the usage row in SQLite says
// backend vertex with Gemini's tokens.
func TestVertexWiredInMain(t *testing.T) {
	sse, err := os.ReadFile("testdata/vertex/stream-function-call.sse")
	if err != nil {
		t.Fatal(err)
	}
	vertex := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/publishers/google/models/gemini-2.5-pro:streamGenerateContent") {
			http.Error(w, `{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}`, 404)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(sse)
	}))
	defer vertex.Close()

	dir := t.TempDir()
	base, stop := startProxy(t, dir, map[string]string{"VERTEX_PROJECT_ID": "proj-1", "VERTEX_BASE_URL": vertex.URL})
	if st := backendStatus(t, base); !st["vertex"].Configured || st["nanogpt"].Configured {
		t.Errorf("/status backends = %+v, want vertex configured, nanogpt not", st)
	}

	body, err := os.ReadFile("testdata/clients/roo-code-code-tool-turn.json")
	if err != nil {
		t.Fatal(err)
	}
	body = bytes.Replace(body, []byte(`"model": "auto"`), []byte(`"model": "vertex/gemini-2.5-pro"`), 1)
	if !bytes.Contains(body, []byte("vertex/gemini-2.5-pro")) {
		t.Fatal("fixture model not replaced")
	}
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Proxy-Backend") != "vertex" {
		t.Fatalf("status %d backend %q: %s", resp.StatusCode, resp.Header.Get("X-Proxy-Backend"), out)
	}
	for _, want := range []string{`"name":"read_file"`, `"finish_reason":"tool_calls"`, `"prompt_tokens":5020`, "data: [DONE]"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("stream lacks %s", want)
		}
	}

	stop()
	db, err := sql.Open("sqlite3", filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	type row struct {
		Backend, Model            string
		Prompt, Completion, Total int
		Estimated                 bool
	}
	var got row
	err = db.QueryRow(`SELECT backend, model, prompt_tokens, completion_tokens, total_tokens, tokens_estimated FROM usage`).
		Scan(&got.Backend, &got.Model, &got.Prompt, &got.Completion, &got.Total, &got.Estimated)
	if err != nil {
		t.Fatalf("reading the usage row: %v", err)
	}
	if diff := cmp.Diff(row{"vertex", "gemini-2.5-pro", 5020, 64, 5084, false}, got); diff != "" {
		t.Errorf("usage row (-want +got):\n%s", diff)
	}
}

// Without VERTEX_PROJECT_ID the backend is disabled and /status says why.
func TestVertexDisabledWithoutProject(t *testing.T) {
	base, stop := startProxy(t, t.TempDir(), nil)
	defer stop()
	st := backendStatus(t, base)
	if st["vertex"].Configured || st["vertex"].Reason != "VERTEX_PROJECT_ID is not set" {
		t.Errorf("/status vertex = %+v", st["vertex"])
	}
}

type backendState struct {
	Configured bool   `json:"configured"`
	Reason     string `json:"reason"`
}

func backendStatus(t *testing.T, base string) map[string]backendState {
	t.Helper()
	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Backends map[string]backendState `json:"backends"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st.Backends
}

// startProxy runs the binary's run() on a free loopback port with a database and
// rankings path in dir, plus extra env; stop shuts it down and waits.
func startProxy(t *testing.T, dir string, extra map[string]string) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	env := map[string]string{"HOST": "127.0.0.1", "PORT": strconv.Itoa(port), "DB_PATH": filepath.Join(dir, "usage.db"),
		"MODEL_ROUTING_PATH": filepath.Join(dir, "none.json"), "PROMPT_STRATEGIES_PATH": filepath.Join(dir, "none.yaml")}
	for k, v := range extra {
		env[k] = v
	}
	logs := &signalWriter{want: `msg=listening`, ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, func(k string) string { return env[k] }, logs) }()
	select {
	case <-logs.ready:
	case err := <-errc:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs.buf.String())
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(stop)
	return "http://127.0.0.1:" + strconv.Itoa(port), stop
}
