package mcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp/internal/ctxserver"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// The test binary doubles as the stdio MCP server: run with this variable set, it serves
// the context-persistence test server on stdin/stdout instead of running tests.
const childEnv = "NANOGPT_PROXY_TEST_MCP_SERVER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		if pf := os.Getenv("TEST_PID_FILE"); pf != "" {
			_ = os.WriteFile(pf, []byte(strconv.Itoa(os.Getpid())), 0o600)
		}
		srv := ctxserver.New(ctxserver.Options{File: os.Getenv("TEST_STORE_FILE"), Hang: mode == "hang", Exit: func() { os.Exit(3) }})
		if err := server.ServeStdio(srv); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func bridgeConfig(servers ...config.MCPServer) config.MCP {
	c := config.Default().MCP
	c.Servers = servers
	c.ReconnectMin = 20 * time.Millisecond
	c.ReconnectMax = 200 * time.Millisecond
	c.PingInterval = 0
	return c
}

// testServer starts the context-persistence test server over transport ("stdio" or
// "http") and returns its config and a switch that takes the HTTP server down (nil for
// stdio, whose server dies through its exit tool).
type testServer struct {
	cfg  config.MCPServer
	down func(bool)
	pid  func() int
	// methods are the JSON-RPC methods the HTTP server received, in order.
	methods func() []string
}

func startServer(t *testing.T, transport string, hang bool) testServer {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "store.json")
	switch transport {
	case "stdio":
		mode := "stdio"
		if hang {
			mode = "hang"
		}
		pidFile := filepath.Join(dir, "pid")
		return testServer{
			cfg: config.MCPServer{Name: "ctx", Command: os.Args[0], Args: []string{"-test.run=^$"},
				Env: map[string]string{childEnv: mode, "TEST_STORE_FILE": file, "TEST_PID_FILE": pidFile}},
			pid: func() int {
				b, _ := os.ReadFile(pidFile)
				n, _ := strconv.Atoi(string(b))
				return n
			},
		}
	default:
		var isDown atomic.Bool
		var h atomic.Pointer[server.StreamableHTTPServer]
		var mu sync.Mutex
		var methods []string
		h.Store(server.NewStreamableHTTPServer(ctxserver.New(ctxserver.Options{File: file, Hang: hang})))
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isDown.Load() {
				// A dead server: the connection drops without an answer.
				if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
					c.Close()
				}
				return
			}
			if r.Method == http.MethodPost {
				b, _ := io.ReadAll(r.Body)
				var msg struct{ Method string }
				_ = json.Unmarshal(b, &msg)
				mu.Lock()
				methods = append(methods, msg.Method)
				mu.Unlock()
				r.Body = io.NopCloser(bytes.NewReader(b))
			}
			h.Load().ServeHTTP(w, r)
		}))
		t.Cleanup(ts.Close)
		return testServer{
			cfg: config.MCPServer{Name: "ctx", URL: ts.URL + "/mcp", Headers: map[string]string{"Authorization": "Bearer s3cret-token"}},
			down: func(d bool) {
				if !d {
					// It comes back as a new process would: fresh, without the old sessions.
					h.Store(server.NewStreamableHTTPServer(ctxserver.New(ctxserver.Options{File: file})))
				}
				isDown.Store(d)
			},
			methods: func() []string {
				mu.Lock()
				defer mu.Unlock()
				return append([]string(nil), methods...)
			},
		}
	}
}

func startBridge(t *testing.T, servers ...config.MCPServer) *mcp.Bridge {
	t.Helper()
	b := mcp.New(bridgeConfig(servers...), "test", nil)
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := b.Server(s.Name).WaitConnected(ctx); err != nil {
			t.Fatalf("%s never connected: %v (status %+v)", s.Name, err, b.Status())
		}
	}
	return b
}

func ctxConfig() config.Context {
	c := config.Default().Context
	c.Store = "mcp"
	c.MCPStore.Server = "ctx"
	c.MCPStore.MinScore = 0.5
	c.LoadTimeout = 10 * time.Second // the hanging-server test sets its own
	return c
}

func parse(t *testing.T, pairs ...string) *backends.ChatRequest {
	t.Helper()
	var ms []string
	for i := 0; i+1 < len(pairs); i += 2 {
		c, _ := json.Marshal(pairs[i+1])
		ms = append(ms, fmt.Sprintf(`{"role":%q,"content":%s}`, pairs[i], c))
	}
	req, err := backends.ParseChatRequest([]byte(`{"model":"auto","stream":true,"messages":[` + strings.Join(ms, ",") + `]}`))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// exchange runs one request through the context manager as the handler does.
func exchange(t *testing.T, m *contextmgr.Manager, conv, user, answer string) (*backends.ChatRequest, contextmgr.Result) {
	t.Helper()
	req := parse(t, "system", "Be brief.", "user", user)
	in := contextmgr.Input{RequestID: "r-" + conv, ConversationID: conv, Role: roles.General}
	res := m.Enrich(context.Background(), req, in)
	if tr := m.Track(req, in); tr != nil {
		c, _ := json.Marshal(answer)
		tr.Chunk([]byte(`{"choices":[{"index":0,"delta":{"content":` + string(c) + `}}]}`))
		tr.Finish(true)
	}
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return req, res
}

type rc struct{ Role, Content string }

func roleContents(req *backends.ChatRequest) []rc {
	var out []rc
	for i := range req.Messages {
		out = append(out, rc{req.Messages[i].Role, req.Messages[i].Text(0)})
	}
	return out
}

var transports = []string{"stdio", "http"}

func TestEnrichmentThroughMCP(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, false)
			b := startBridge(t, ts.cfg)
			st := b.Server("ctx").Status()
			if want := []string{"exit", "load_conversation_history", "save_conversation", "search_similar_conversations"}; !cmp.Equal(want, st.Tools) || !st.Connected {
				t.Errorf("status = %+v, want connected with tools %v", st, want)
			}
			if ts.methods != nil {
				// The handshake on the wire: initialize, the initialized notification, the tool list.
				if got := ts.methods(); len(got) < 3 || !cmp.Equal(got[:3], []string{"initialize", "notifications/initialized", "tools/list"}) {
					t.Errorf("methods received: %v", got)
				}
			}
			if sj, _ := json.Marshal(b.Status()); strings.Contains(string(sj), "s3cret") || strings.Contains(string(sj), "TEST_STORE_FILE") {
				t.Errorf("status leaks configuration values: %s", sj)
			}
			m := contextmgr.New(ctxConfig(), contextmgr.NewMCPStore(b.Server("ctx"), ctxConfig().MCPStore), nil)
			defer m.Close(context.Background())

			exchange(t, m, "other", "How should the billing invoices table be indexed?", "Index invoices by customer and date.")
			exchange(t, m, "thin", "My favourite editor is Helix.", "Noted: Helix.")
			req, res := exchange(t, m, "thin", "Which editor do I like?", "Helix.")
			want := []rc{{"system", "Be brief."}, {"user", "My favourite editor is Helix."}, {"assistant", "Noted: Helix."}, {"user", "Which editor do I like?"}}
			if diff := cmp.Diff(want, roleContents(req)); diff != "" || res.Err != nil {
				t.Errorf("thin client request (err %v) (-want +got):\n%s", res.Err, diff)
			}

			req, res = exchange(t, m, "new", "Index the billing invoices table", "ok")
			sys := req.Messages[0].Text(0)
			if res.SimilarItems != 1 || !strings.Contains(sys, "<past_interactions>") || !strings.Contains(sys, "User: How should the billing invoices table be indexed?") {
				t.Errorf("similar interaction not added (%+v):\n%s", res, sys)
			}
			if strings.Contains(sys, "Helix") {
				t.Errorf("unrelated conversation added:\n%s", sys)
			}
		})
	}
}

func TestHangingServerDeadlineHolds(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, true)
			b := startBridge(t, ts.cfg)
			cfg := ctxConfig()
			cfg.LoadTimeout = 100 * time.Millisecond
			m := contextmgr.New(cfg, contextmgr.NewMCPStore(b.Server("ctx"), cfg.MCPStore), nil)
			req := parse(t, "user", "anything stored about invoices?")
			before := string(req.UpstreamBody("m"))
			res := m.Enrich(context.Background(), req, contextmgr.Input{ConversationID: "c", Role: roles.General})
			if !errors.Is(res.Err, context.DeadlineExceeded) {
				t.Errorf("Enrich error = %v, want the deadline", res.Err)
			}
			if after := string(req.UpstreamBody("m")); after != before {
				t.Errorf("request changed: %s", after)
			}
			if s := m.Stats(); s.LoadTimeouts == 0 {
				t.Errorf("timeout not counted: %+v", s)
			}
			// A hang is not a dead connection.
			if st := b.Server("ctx").Status(); !st.Connected {
				t.Errorf("status after a hang = %+v, want still connected", st)
			}
		})
	}
}

func TestServerDiesAndComesBack(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, tr, false)
			b := startBridge(t, ts.cfg)
			srv := b.Server("ctx")
			m := contextmgr.New(ctxConfig(), contextmgr.NewMCPStore(srv, ctxConfig().MCPStore), nil)
			defer m.Close(context.Background())
			exchange(t, m, "thin", "Remember the number 4217.", "Remembered.")

			// The server dies.
			if tr == "stdio" {
				_, _ = srv.CallTool(context.Background(), "exit", map[string]any{})
			} else {
				ts.down(true)
				_, _ = srv.CallTool(context.Background(), "load_conversation_history", map[string]any{"conversation_id": "x"})
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if st, err := srv.WaitState(ctx, mcp.StateConnected); err != nil {
				t.Fatalf("connection loss not noticed (state %s): %v", st, err)
			}
			// While it is away requests go out unenriched, and the failure is counted.
			req := parse(t, "user", "What number?")
			if res := m.Enrich(context.Background(), req, contextmgr.Input{ConversationID: "thin", Role: roles.General}); res.Err == nil && res.HistoryMessages > 0 {
				t.Errorf("enriched from a dead server: %+v", res)
			}
			if ts.down != nil {
				ts.down(false)
			}
			if err := srv.WaitConnected(ctx); err != nil {
				t.Fatalf("never reconnected: %v (status %+v)", err, srv.Status())
			}
			if st := srv.Status(); st.Reconnects == 0 || st.LastError == "" {
				t.Errorf("status after reconnect = %+v, want reconnects and the last error", st)
			}
			req, res := exchange(t, m, "thin", "What number?", "4217.")
			if res.HistoryMessages != 2 || !strings.Contains(req.Messages[1].Text(0), "4217") {
				t.Errorf("after reconnect: %+v, messages %v", res, roleContents(req))
			}
		})
	}
}

func TestShutdownStopsChildren(t *testing.T) {
	ts := startServer(t, "stdio", false)
	b := mcp.New(bridgeConfig(ts.cfg), "test", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Server("ctx").WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	pid := ts.pid()
	if pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Fatalf("child pid %d not running", pid)
	}
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d still exists after Close (kill 0: %v)", pid, err)
	}
	if st := b.Server("ctx").Status(); st.State != mcp.StateStopped || st.Connected {
		t.Errorf("state after Close: %+v", st)
	}
}

func TestUnreachableServerReported(t *testing.T) {
	b := mcp.New(bridgeConfig(config.MCPServer{Name: "missing", Command: filepath.Join(t.TempDir(), "no-such-binary")}), "test", nil)
	defer b.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Server("missing").WaitState(ctx, mcp.StateConnecting); err != nil {
		t.Fatal(err)
	}
	st := b.Server("missing").Status()
	if st.Connected || st.State != mcp.StateDisconnected || !strings.Contains(st.LastError, "no-such-binary") {
		t.Errorf("status = %+v, want disconnected naming the command", st)
	}
	if _, err := b.Server("missing").CallTool(ctx, "x", nil); !errors.Is(err, mcp.ErrNotConnected) {
		t.Errorf("call on a down server: %v, want ErrNotConnected", err)
	}
}

func TestStatusHidesURLSecrets(t *testing.T) {
	b := mcp.New(bridgeConfig(config.MCPServer{Name: "r", URL: "http://127.0.0.1:1/mcp?token=hunter2"}), "test", nil)
	defer b.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.Server("r").WaitState(ctx, mcp.StateConnecting); err != nil {
		t.Fatal(err)
	}
	st := b.Server("r").Status()
	if st.LastError == "" || strings.Contains(st.LastError, "hunter2") {
		t.Errorf("last error %q: want the failure without the token", st.LastError)
	}
}
