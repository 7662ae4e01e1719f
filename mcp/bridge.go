// Package mcp owns the proxy's MCP client bridge: one supervised connection per configured
// server (a stdio child process or a streamable HTTP endpoint), the initialize handshake
// and tool listing, tool calls under the caller's deadline, reconnection with backoff when
// a server dies, its state for /status, and stopping the children on shutdown.
package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// States of a server connection.
const (
	StateConnecting   = "connecting"
	StateConnected    = "connected"
	StateDisconnected = "disconnected"
	StateStopped      = "stopped"
)

// ErrNotConnected is returned by calls to a server that is not connected right now.
var ErrNotConnected = errors.New("mcp: server not connected")

// ErrUnknownServer is returned for a server name that is not configured.
var ErrUnknownServer = errors.New("mcp: unknown server")

// Bridge holds the connections to every configured MCP server. A nil *Bridge has no servers.
type Bridge struct {
	servers map[string]*Server
	order   []string
}

// New starts a supervised connection to each server of cfg; connecting happens in the
// background, so New never blocks on a slow or absent server. version is sent as the
// client version in initialize.
func New(cfg config.MCP, version string, log *slog.Logger) *Bridge {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bridge{servers: map[string]*Server{}}
	for _, sc := range cfg.Servers {
		s := newServer(sc, cfg, version, log.With("mcp_server", sc.Name))
		b.servers[sc.Name] = s
		b.order = append(b.order, sc.Name)
		go s.run()
	}
	return b
}

// Server returns the named server, or nil.
func (b *Bridge) Server(name string) *Server {
	if b == nil {
		return nil
	}
	return b.servers[name]
}

// Status returns every server's state, in configuration order.
func (b *Bridge) Status() []Status {
	if b == nil {
		return []Status{}
	}
	out := make([]Status, 0, len(b.order))
	for _, n := range b.order {
		out = append(out, b.servers[n].Status())
	}
	return out
}

// Close stops every server (stdio children get their stdin closed, then SIGTERM, then
// SIGKILL) and waits for them, up to ctx.
func (b *Bridge) Close(ctx context.Context) error {
	if b == nil {
		return nil
	}
	var wg sync.WaitGroup
	for _, s := range b.servers {
		wg.Add(1)
		go func() { defer wg.Done(); s.stop() }()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mcp: stopping servers: %w", ctx.Err())
	}
}

// Status is one server's state as shown in /status. It never holds env or header values.
type Status struct {
	Name      string   `json:"name"`
	Transport string   `json:"transport"`
	State     string   `json:"state"`
	Connected bool     `json:"connected"`
	Tools     []string `json:"tools"`
	// ServerInfo is the server's name and version from initialize.
	ServerInfo  string    `json:"server_info,omitempty"`
	ConnectedAt time.Time `json:"connected_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// LatencyMS is the duration of the last successful call.
	LatencyMS  int64 `json:"latency_ms"`
	Calls      int64 `json:"calls"`
	Failures   int64 `json:"failures"`
	Reconnects int64 `json:"reconnects"`
}

// Server is one supervised MCP server connection. Its methods are safe for concurrent use.
type Server struct {
	cfg     config.MCPServer
	opts    config.MCP
	version string
	log     *slog.Logger

	ctx    context.Context // lives until stop
	cancel context.CancelFunc
	done   chan struct{}
	lost   chan struct{} // a call saw the connection die

	mu          sync.Mutex
	cli         *client.Client
	state       string
	tools       []string
	serverInfo  string
	connectedAt time.Time
	lastErr     string
	lastErrAt   time.Time
	changed     chan struct{} // closed and replaced at every state change
	stderr      *tailBuffer

	latency    atomic.Int64
	calls      atomic.Int64
	failures   atomic.Int64
	reconnects atomic.Int64
}

func newServer(sc config.MCPServer, opts config.MCP, version string, log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{cfg: sc, opts: opts, version: version, log: log, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), lost: make(chan struct{}, 1), state: StateConnecting, changed: make(chan struct{})}
}

// Name is the server's configured name.
func (s *Server) Name() string { return s.cfg.Name }

// Status returns the server's state.
func (s *Server) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{
		Name: s.cfg.Name, Transport: s.cfg.Transport(), State: s.state, Connected: s.state == StateConnected,
		Tools: append([]string{}, s.tools...), ServerInfo: s.serverInfo, ConnectedAt: s.connectedAt,
		LastError: s.lastErr, LastErrorAt: s.lastErrAt, LatencyMS: s.latency.Load(),
		Calls: s.calls.Load(), Failures: s.failures.Load(), Reconnects: s.reconnects.Load(),
	}
}

// WaitConnected blocks until the server is connected (returning nil) or ctx ends.
func (s *Server) WaitConnected(ctx context.Context) error {
	for {
		s.mu.Lock()
		st, ch := s.state, s.changed
		s.mu.Unlock()
		switch st {
		case StateConnected:
			return nil
		case StateStopped:
			return fmt.Errorf("mcp: %s: %w", s.cfg.Name, ErrNotConnected)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("mcp: waiting for %s: %w", s.cfg.Name, ctx.Err())
		}
	}
}

// WaitState blocks until the server leaves state from (returning the new state) or ctx ends.
func (s *Server) WaitState(ctx context.Context, from string) (string, error) {
	for {
		s.mu.Lock()
		st, ch := s.state, s.changed
		s.mu.Unlock()
		if st != from {
			return st, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return st, ctx.Err()
		}
	}
}

// Result is a tool call's outcome: the text items of its content, in order, and its
// structured content when the server sent one.
type Result struct {
	Texts      []string
	Structured json.RawMessage
	IsError    bool
}

// CallTool calls a tool with args (marshalled to a JSON object) under ctx's deadline. A
// transport failure that is not the caller's deadline marks the connection lost, and the
// supervisor reconnects in the background.
func (s *Server) CallTool(ctx context.Context, name string, args any) (*Result, error) {
	s.calls.Add(1)
	s.mu.Lock()
	cli, st := s.cli, s.state
	s.mu.Unlock()
	if cli == nil || st != StateConnected {
		s.failures.Add(1)
		return nil, fmt.Errorf("mcp: %s: calling %s: %w", s.cfg.Name, name, ErrNotConnected)
	}
	t0 := time.Now()
	var req mcpgo.CallToolRequest
	req.Params.Name = name
	req.Params.Arguments = args
	res, err := cli.CallTool(ctx, req)
	if err != nil {
		s.failures.Add(1)
		var te *transport.Error
		if errors.As(err, &te) && ctx.Err() == nil {
			s.markLost(err)
		} else {
			s.setErr(err)
		}
		return nil, fmt.Errorf("mcp: %s: calling %s: %w", s.cfg.Name, name, err)
	}
	s.latency.Store(time.Since(t0).Milliseconds())
	out := &Result{IsError: res.IsError}
	for _, c := range res.Content {
		if tc, ok := mcpgo.AsTextContent(c); ok {
			out.Texts = append(out.Texts, tc.Text)
		}
	}
	if len(res.RawStructuredContent) > 0 {
		out.Structured = res.RawStructuredContent
	} else if res.StructuredContent != nil {
		out.Structured, _ = json.Marshal(res.StructuredContent)
	}
	if res.IsError {
		s.failures.Add(1)
		msg := "tool reported an error"
		if len(out.Texts) > 0 {
			msg = truncate(out.Texts[0], 300)
		}
		err := fmt.Errorf("mcp: %s: %s: %s", s.cfg.Name, name, msg)
		s.setErr(err)
		return out, err
	}
	return out, nil
}

func (s *Server) setErr(err error) {
	msg := err.Error()
	if s.cfg.URL != "" {
		// A URL may carry a token in its query or user info: show scheme, host and path only.
		if u, perr := url.Parse(s.cfg.URL); perr == nil && (u.RawQuery != "" || u.User != nil) {
			msg = strings.ReplaceAll(msg, s.cfg.URL, u.Scheme+"://"+u.Host+u.Path)
		}
	}
	s.mu.Lock()
	s.lastErr, s.lastErrAt = truncate(msg, 500), time.Now()
	s.mu.Unlock()
}

func (s *Server) markLost(err error) {
	s.setErr(err)
	select {
	case s.lost <- struct{}{}:
	default:
	}
}

func (s *Server) setState(st string, f func()) {
	s.mu.Lock()
	s.state = st
	if f != nil {
		f()
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// run connects, watches the connection, and reconnects with exponential backoff until stop.
func (s *Server) run() {
	defer close(s.done)
	backoff := s.opts.ReconnectMin
	for first := true; ; first = false {
		if !first {
			s.reconnects.Add(1)
		}
		cli, err := s.connect()
		if err == nil {
			t0 := time.Now()
			s.watch(cli)
			// A server that keeps dying right after connecting backs off like one that
			// cannot connect at all.
			if time.Since(t0) >= s.opts.ReconnectMax {
				backoff = s.opts.ReconnectMin
			} else {
				err = errors.New("connection lost soon after connecting")
			}
		} else {
			s.setErr(err)
			s.setState(StateDisconnected, nil)
			s.log.Warn("mcp server unavailable", "err", err, "retry_in", backoff)
		}
		if s.ctx.Err() != nil {
			return
		}
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(backoff):
		}
		if err != nil {
			backoff = min(2*backoff, s.opts.ReconnectMax)
		}
		s.setState(StateConnecting, nil)
	}
}

// watch holds a live connection until it is lost (a call failed, a ping failed) or stop.
func (s *Server) watch(cli *client.Client) {
	var tick <-chan time.Time
	if s.opts.PingInterval > 0 {
		t := time.NewTicker(s.opts.PingInterval)
		defer t.Stop()
		tick = t.C
	}
	defer func() {
		s.setState(StateDisconnected, func() { s.cli = nil; s.tools = nil })
		_ = cli.Close()
	}()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.lost:
			s.log.Warn("mcp server connection lost; reconnecting", "err", s.Status().LastError)
			return
		case <-tick:
			ctx, cancel := context.WithTimeout(s.ctx, s.opts.ConnectTimeout)
			err := cli.Ping(ctx)
			cancel()
			if err != nil && s.ctx.Err() == nil {
				s.setErr(fmt.Errorf("mcp: %s: ping: %w", s.cfg.Name, err))
				s.log.Warn("mcp server stopped answering pings; reconnecting", "err", err)
				return
			}
		}
	}
}

// connect starts the transport, performs initialize + notifications/initialized and lists
// the tools.
func (s *Server) connect() (*client.Client, error) {
	// Drain a stale "lost" signal from the previous connection.
	select {
	case <-s.lost:
	default:
	}
	var tr transport.Interface
	if s.cfg.URL != "" {
		h, err := transport.NewStreamableHTTP(s.cfg.URL, transport.WithHTTPHeaders(s.cfg.Headers),
			transport.WithHTTPLogger(s.log))
		if err != nil {
			return nil, fmt.Errorf("mcp: %s: %w", s.cfg.Name, err)
		}
		tr = h
	} else {
		s.stderr = &tailBuffer{max: 2048}
		tr = transport.NewStdioWithOptions(s.cfg.Command, nil, s.cfg.Args,
			transport.WithCommandFunc(s.command), transport.WithCommandLogger(s.log),
			transport.WithCommandStderrWriter(s.stderr))
	}
	cli := client.NewClient(tr, client.WithProtocolVersion(mcpgo.LATEST_LEGACY_PROTOCOL_VERSION))
	fail := func(op string, err error) (*client.Client, error) {
		_ = cli.Close()
		if s.stderr != nil {
			if tail := s.stderr.String(); tail != "" {
				err = fmt.Errorf("%w (stderr: %s)", err, tail)
			}
		}
		return nil, fmt.Errorf("mcp: %s: %s: %w", s.cfg.Name, op, err)
	}
	// The transport's context must outlive the handshake: it owns the child process.
	if err := cli.Start(s.ctx); err != nil {
		return fail("starting", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.ConnectTimeout)
	defer cancel()
	var init mcpgo.InitializeRequest
	init.Params.ProtocolVersion = mcpgo.LATEST_LEGACY_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "nanogpt-proxy", Version: s.version}
	ir, err := cli.Initialize(ctx, init)
	if err != nil {
		return fail("initialize", err)
	}
	lt, err := cli.ListTools(ctx, mcpgo.ListToolsRequest{})
	if err != nil {
		return fail("listing tools", err)
	}
	tools := make([]string, 0, len(lt.Tools))
	for _, t := range lt.Tools {
		tools = append(tools, t.Name)
	}
	sort.Strings(tools)
	info := ir.ServerInfo.Name
	if ir.ServerInfo.Version != "" {
		info += " " + ir.ServerInfo.Version
	}
	s.setState(StateConnected, func() {
		s.cli, s.tools, s.serverInfo, s.connectedAt = cli, tools, info, time.Now()
	})
	s.log.Info("mcp server connected", "transport", s.cfg.Transport(), "tools", len(tools), "server_info", info)
	return cli, nil
}

// inheritedEnv are the variables a stdio child inherits from the proxy; everything else
// (API keys, tokens) stays out of the child unless the config passes it in env.
var inheritedEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "LANG", "LC_ALL", "TZ",
	"NODE_PATH", "NODE_OPTIONS", "NPM_CONFIG_CACHE", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "SYSTEMROOT"}

func (s *Server) command(ctx context.Context, command string, _ []string, args []string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(s.ctx, command, args...)
	env := make([]string, 0, len(inheritedEnv)+len(s.cfg.Env))
	for _, k := range inheritedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	keys := make([]string, 0, len(s.cfg.Env))
	for k := range s.cfg.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+s.cfg.Env[k])
	}
	cmd.Env = env
	cmd.Dir = s.cfg.Dir
	// On shutdown the child gets SIGTERM first, SIGKILL only if it is still there 5 s later.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd, nil
}

// stop ends the supervisor and closes the connection (the child process with it).
func (s *Server) stop() {
	s.cancel()
	<-s.done
	s.setState(StateStopped, nil)
}

// tailBuffer keeps the last max bytes written (a child's stderr, for error messages).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	t.mu.Unlock()
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
