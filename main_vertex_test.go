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

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	env := map[string]string{"VERTEX_PROJECT_ID": "proj-1", "VERTEX_BASE_URL": vertex.URL, "HOST": "127.0.0.1",
		"PORT": strconv.Itoa(port), "DB_PATH": filepath.Join(dir, "usage.db"), "MODEL_ROUTING_PATH": filepath.Join(dir, "none.json"),
		"PROMPT_STRATEGIES_PATH": filepath.Join(dir, "none.yaml")}
	logs := &signalWriter{want: `msg=listening`, ready: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, nil, func(k string) string { return env[k] }, logs) }()
	select {
	case <-logs.ready:
	case err := <-errc:
		t.Fatalf("run: %v\n%s", err, logs.buf.String())
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)

	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Backends map[string]struct {
			Configured bool   `json:"configured"`
			Reason     string `json:"reason"`
		} `json:"backends"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if !st.Backends["vertex"].Configured || st.Backends["nanogpt"].Configured {
		t.Errorf("/status backends = %+v, want vertex configured, nanogpt not", st.Backends)
	}

	body, err := os.ReadFile("testdata/clients/roo-code-code-tool-turn.json")
	if err != nil {
		t.Fatal(err)
	}
	body = bytes.Replace(body, []byte(`"model": "auto"`), []byte(`"model": "vertex/gemini-2.5-pro"`), 1)
	if !bytes.Contains(body, []byte("vertex/gemini-2.5-pro")) {
		t.Fatal("fixture model not replaced")
	}
	resp, err = http.Post(base+"/v1/chat/completions", "application/json", bytes.NewReader(body))
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

	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
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
