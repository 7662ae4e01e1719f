package handlers_test

// Shared test harness: a fake NanoGPT upstream (httptest) that replays the fixtures in
// ../testdata/nanogpt byte for byte and records what it received, and a proxy built with
// handlers.New and the real pipeline stages, writing usage rows to a real SQLite file.
// Other test files of this package (router, prompt engineer, context manager, e2e-ish
// handler tests) can reuse newFakeUpstream / newTestProxy.

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// Secrets used by the tests; neither may ever show up where it does not belong.
const (
	proxyKey     = "sk-nano-proxy-test-key-4c1d"
	clientSecret = "Bearer client-secret-must-not-leak-9f2e"
)

// testTimeout bounds every wait in these tests so that a proxy that buffers or hangs
// fails with a clear message instead of hanging the suite.
const testTimeout = 15 * time.Second

// fixture reads a file from the repository's testdata folder.
func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	if err != nil {
		t.Fatalf("reading fixture: %v", err)
	}
	return b
}

// upstreamRequest is what the fake upstream received.
type upstreamRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// fakeUpstream is an httptest NanoGPT. Handler answers every request; it defaults to
// replaying chat-stream-text.sse or chat-completion.json depending on the request's stream
// flag. Every request is recorded before Handler runs.
type fakeUpstream struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []upstreamRequest
	handler http.HandlerFunc
}

// newFakeUpstream starts a fake NanoGPT answering with h (nil: replay by stream flag).
func newFakeUpstream(t testing.TB, h http.HandlerFunc) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{handler: h}
	if f.handler == nil {
		stream, plain := fixture(t, "nanogpt/chat-stream-text.sse"), fixture(t, "nanogpt/chat-completion.json")
		f.handler = func(w http.ResponseWriter, r *http.Request) {
			if isStreamRequest(r) {
				replaySSE(stream)(w, r)
				return
			}
			replayJSON(http.StatusOK, plain, nil)(w, r)
		}
	}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.reqs = append(f.reqs, upstreamRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		f.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// Requests returns a copy of what the upstream received so far.
func (f *fakeUpstream) Requests() []upstreamRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]upstreamRequest(nil), f.reqs...)
}

// BaseURL is the value for NANOGPT_BASE_URL.
func (f *fakeUpstream) BaseURL() string { return f.URL + "/api/v1" }

// isStreamRequest reports whether the recorded request body asked for a stream.
func isStreamRequest(r *http.Request) bool {
	b, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(b))
	var v struct {
		Stream bool `json:"stream"`
	}
	_ = json.Unmarshal(b, &v)
	return v.Stream
}

// replaySSE writes body as an event stream, exactly as given, in one write.
func replaySSE(body []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}
}

// replayJSON writes a JSON body with status and extra headers.
func replayJSON(status int, body []byte, hdr map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

// splitEvents splits an SSE body into its events, each with its terminating blank line
// (LF or CRLF). It is the test's own, independent reading of the format.
func splitEvents(t testing.TB, body []byte) [][]byte {
	t.Helper()
	var out [][]byte
	br := bufio.NewReader(bytes.NewReader(body))
	for {
		ev, err := readEvent(br)
		if len(ev) > 0 {
			out = append(out, ev)
		}
		if err != nil {
			return out
		}
	}
}

// readEvent reads one event (lines up to and including a blank line) from br.
func readEvent(br *bufio.Reader) ([]byte, error) {
	var ev []byte
	for {
		line, err := br.ReadBytes('\n')
		ev = append(ev, line...)
		if err != nil {
			return ev, err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 && len(bytes.TrimSpace(ev)) > 0 {
			return ev, nil
		}
	}
}

// lockedBuffer is a log sink tests can search (for leaked secrets).
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proxyOptions configure newTestProxy. The zero value is a proxy with the NanoGPT key
// set, no timeouts and the default body limit.
type proxyOptions struct {
	// NoKey leaves NANOGPT_API_KEY unset (the backend is disabled).
	NoKey bool
	// BaseURL overrides the upstream URL (e.g. a closed port).
	BaseURL          string
	FirstByteTimeout time.Duration
	IdleTimeout      time.Duration
	MaxBodyBytes     int64
	// QueueSize of the usage writer (default 1024).
	QueueSize int
	// Transport, when set, carries the NanoGPT backend's requests instead of the network.
	Transport http.RoundTripper
}

// testProxy is a running proxy with its usage database.
type testProxy struct {
	*httptest.Server
	Handler *handlers.Server
	DBPath  string
	Log     *lockedBuffer
	db      *storage.DB
	writer  *storage.UsageWriter
	ctx     *contextmgr.Manager
	once    sync.Once
}

// realStages builds the prompt engineer and the context manager as main does with no
// configuration: embedded strategies, the embedded conversation store on db.
func realStages(t testing.TB, db *storage.DB, log *slog.Logger) (*promptengineer.Engineer, *contextmgr.Manager) {
	t.Helper()
	prompt, err := promptengineer.New(promptengineer.Config{Default: config.DefaultStrategies}, log)
	if err != nil {
		t.Fatalf("promptengineer.New: %v", err)
	}
	cfg := config.Default()
	return prompt, contextmgr.New(cfg.Context, contextmgr.NewSQLiteStore(db, nil), log)
}

// newTestProxy builds the proxy the way main does: handlers.New with the real stages, a
// real NanoGPT backend pointed at up, and a real usage writer on a SQLite file.
func newTestProxy(t testing.TB, up *fakeUpstream, o proxyOptions) *testProxy {
	t.Helper()
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dbPath := filepath.Join(t.TempDir(), "state", "usage.db")
	db, err := storage.Open(context.Background(), dbPath)
	if err != nil {
		t.Fatalf("opening usage db: %v", err)
	}
	qs := o.QueueSize
	if qs == 0 {
		qs = 1024
	}
	writer := storage.NewUsageWriter(db, log, qs, 10*time.Millisecond)

	bes := map[string]backends.Backend{}
	var client *http.Client
	if o.Transport != nil {
		client = &http.Client{Transport: o.Transport}
	}
	if !o.NoKey {
		base := o.BaseURL
		if base == "" && up != nil {
			base = up.BaseURL()
		}
		bes["nanogpt"] = backends.NewNanoGPT(backends.NanoGPTConfig{
			APIKey: proxyKey, BaseURL: base,
			FirstByteTimeout: o.FirstByteTimeout, IdleTimeout: o.IdleTimeout,
			UserAgent: "nanogpt-proxy/test",
		}, client)
	}
	router, err := routing.New(routing.Config{
		Default: data.DefaultRouting,
		Enabled: func(b string) bool { return bes[b] != nil },
	}, log)
	if err != nil {
		t.Fatalf("routing.New: %v", err)
	}
	prompt, ctxMgr := realStages(t, db, log)
	maxBody := o.MaxBodyBytes
	if maxBody == 0 {
		maxBody = 32 << 20
	}
	h := handlers.New(handlers.Config{MaxBodyBytes: maxBody, DefaultProfile: "personal", Version: "test"},
		handlers.Deps{
			Log:      log,
			Prompt:   prompt,
			Router:   router,
			Context:  ctxMgr,
			Backends: bes,
			Usage:    writer,
		})
	p := &testProxy{Server: httptest.NewServer(h), Handler: h, DBPath: dbPath, Log: logs, db: db, writer: writer, ctx: ctxMgr}
	t.Cleanup(func() { p.shutdown(t) })
	return p
}

// shutdown stops the server (waiting for in-flight handlers, so every usage row has been
// queued), flushes the writer and closes the database. It is idempotent.
func (p *testProxy) shutdown(t testing.TB) {
	p.once.Do(func() {
		p.Server.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := p.writer.Close(ctx); err != nil {
			t.Errorf("flushing usage: %v", err)
		}
		if err := p.ctx.Close(ctx); err != nil {
			t.Errorf("flushing conversation saves: %v", err)
		}
		_ = p.db.Close()
		if logs := p.Log.String(); strings.Contains(logs, proxyKey) || strings.Contains(logs, "client-secret-must-not-leak") {
			t.Errorf("a secret reached the log:\n%s", logs)
		}
	})
}

// usageRow is a row of the public usage table.
type usageRow struct {
	RequestID        string
	Backend          string
	Model            string
	Role             string
	ConversationID   string
	Profile          string
	Stream           int
	StatusCode       int
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	TokensEstimated  int
	Error            string
}

// UsageRows shuts the proxy down (see shutdown) and returns every usage row, read from
// the SQLite file with a fresh connection.
func (p *testProxy) UsageRows(t testing.TB) []usageRow {
	t.Helper()
	p.shutdown(t)
	db, err := sql.Open("sqlite3", "file:"+p.DBPath+"?mode=ro")
	if err != nil {
		t.Fatalf("opening %s: %v", p.DBPath, err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT request_id, backend, model, role, conversation_id, profile, stream, status_code,
		prompt_tokens, completion_tokens, total_tokens, tokens_estimated, error FROM usage ORDER BY id`)
	if err != nil {
		t.Fatalf("querying usage: %v", err)
	}
	defer rows.Close()
	var out []usageRow
	for rows.Next() {
		var r usageRow
		if err := rows.Scan(&r.RequestID, &r.Backend, &r.Model, &r.Role, &r.ConversationID, &r.Profile, &r.Stream,
			&r.StatusCode, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens, &r.TokensEstimated, &r.Error); err != nil {
			t.Fatalf("scanning usage: %v", err)
		}
		if strings.Contains(fmt.Sprint(r), proxyKey) || strings.Contains(fmt.Sprint(r), "client-secret-must-not-leak") {
			t.Errorf("a secret reached the usage table: %+v", r)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading usage: %v", err)
	}
	return out
}

// post sends a chat completion to the proxy and returns the response with its body read.
func (p *testProxy) post(t testing.TB, body []byte, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := p.do(ctx, body, hdr)
	if err != nil {
		t.Fatalf("POST /v1/chat/completions: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading proxy response: %v", err)
	}
	return resp, b
}

// do sends a chat completion and returns the response unread.
func (p *testProxy) do(ctx context.Context, body []byte, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", clientSecret)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return p.Client().Do(req)
}

// apiError is the OpenAI error envelope as a client decodes it.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Code    *string `json:"code"`
		Param   *string `json:"param"`
	} `json:"error"`
}

// decodeError decodes an error envelope, failing the test if the body is not one.
func decodeError(t testing.TB, b []byte) apiError {
	t.Helper()
	var e apiError
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error.Message == "" || e.Error.Type == "" {
		t.Fatalf("body is not an OpenAI error envelope (%v): %s", err, b)
	}
	return e
}

// closedURL returns a base URL on a loopback port that nothing listens on.
func closedURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/api/v1"
}

// waitFor waits for ch or fails after testTimeout with msg.
func waitFor[T any](t testing.TB, ch <-chan T, msg string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		var zero T
		t.Fatalf("timed out after %v: %s", testTimeout, msg)
		return zero
	}
}

// errString formats an optional error for messages.
func errString(err error) string {
	if err == nil || errors.Is(err, io.EOF) {
		return "EOF"
	}
	return fmt.Sprint(err)
}
