// Package promptengineer owns the first pipeline stage: it works out the role of each
// request (explicit field, header, model alias, special helper requests, the coding
// agent's mode, content) and adds that role's guidance to the system area without
// touching what the client sent; optionally a local model rewrites the latest user message.
// It also owns the prompt strategies file (parsing, validation, hot reload).
package promptengineer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Input is what the handler knows of a request beyond its body.
type Input struct {
	// HeaderRole is the X-Proxy-Role header (empty when absent).
	HeaderRole string
	// AliasRole is the role of an "auto:<role>" model alias (empty otherwise).
	AliasRole roles.Role
	// ConversationID is the request's conversation key (contextmgr.ConversationID; empty:
	// unknown). A conversation keeps the role its content was first classified as.
	ConversationID string
}

// Signals say which step of the resolution order decided a role (Result.Signal).
const (
	SignalBody    = "body"       // the request's "role" member
	SignalHeader  = "header"     // X-Proxy-Role
	SignalAlias   = "alias"      // model "auto:<role>"
	SignalSpecial = "special"    // a helper request (context condensing, enhance prompt)
	SignalMode    = "agent_mode" // "# Current Mode" in the environment details
	SignalOpening = "agent_role" // the role definition opening the system prompt
	SignalContent = "content"    // classification of the latest user text
	// SignalConversation: the role an earlier turn of the same conversation was classified
	// as by content (a later turn without an explicit signal keeps it).
	SignalConversation = "conversation"
	SignalDefault      = "default" // nothing matched: general
)

// Result is the outcome of Prepare.
type Result struct {
	Role roles.Role
	// Reason says, for people, which signal decided the role and why.
	Reason string
	// Signal is the resolution step that decided (one of the Signal constants).
	Signal string
	// Guidance reports whether role guidance was added to the request.
	Guidance bool
	// Injection says where guidance went or why not ("append", "prepend", "new system
	// message", "off", "already present", "none for this request").
	Injection string
	// Rewrite is the outcome of the local-model rewrite ("" when no optimizer is set up).
	Rewrite string
	// Original is the latest user message as the client sent it, when the optimizer
	// rewrote it (nil otherwise): what the conversation store should keep, since the
	// client sends its own words back next turn.
	Original *backends.Message
	// Helper reports a helper request (a special request: context condensing, enhance
	// prompt, commit message): a one-shot that is not the task itself, so it should get
	// no past context and not be saved as a conversation.
	Helper bool
}

// InvalidRoleError is an explicit role that is not one of the eight.
type InvalidRoleError struct {
	Source string
	Value  string
}

func (e *InvalidRoleError) Error() string {
	return fmt.Sprintf("Invalid %s %q: expected one of %s", e.Source, e.Value, roles.List())
}

// Injection says where a role's guidance goes.
type Injection string

// Injection modes.
const (
	InjectOff     Injection = "off"
	InjectAppend  Injection = "append"
	InjectPrepend Injection = "prepend"
)

// DefaultModes maps the built-in modes of Roo Code, Kilo Code and Cline to roles.
var DefaultModes = map[string]roles.Role{
	"architect":    roles.Architect,
	"code":         roles.Implementation,
	"debug":        roles.Debugging,
	"ask":          roles.Research,
	"orchestrator": roles.Architect,
	"plan":         roles.Architect,      // Cline PLAN MODE
	"act":          roles.Implementation, // Cline ACT MODE
}

// Config configures an Engineer.
type Config struct {
	// StrategiesPath is the strategies file; when it does not exist Default is used.
	StrategiesPath string
	// Default is the embedded strategies file.
	Default []byte
	// Modes maps agent mode slugs to roles, on top of DefaultModes (nil: the defaults).
	Modes map[string]roles.Role
	// Injection is the injection mode per role; a missing role means append.
	Injection map[roles.Role]Injection
	// Optimizer configures the optional rewrite by a local model; zero means off.
	Optimizer OptimizerConfig
	// ConversationRoles bounds how many conversations' content-classified roles are
	// remembered (least recently used first out); zero means 4096, negative turns the
	// memory off (every turn is classified on its own).
	ConversationRoles int
	// ConversationRoleTTL forgets a conversation's role after this long unused; zero
	// means 6 h.
	ConversationRoleTTL time.Duration
	// Now is the clock of the role memory; nil means time.Now.
	Now func() time.Time
}

// Engineer resolves roles and applies strategies. It is safe for concurrent use; the
// strategies are swapped atomically on reload.
type Engineer struct {
	cfg   Config
	log   *slog.Logger
	modes map[string]roles.Role
	strat atomic.Pointer[Strategies]
	opt   *optimizer
	conv  *convRoles

	mu       sync.Mutex // guards the fields below
	source   string
	loadedAt time.Time
	modTime  time.Time
	size     int64
	lastErr  error

	byRole   [numRoles]atomic.Int64
	bySignal sync.Map // signal -> *atomic.Int64
}

// New loads the strategies (file if present, else Default) and returns an Engineer. An
// invalid strategies file is an error naming its line.
func New(cfg Config, log *slog.Logger) (*Engineer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engineer{cfg: cfg, log: log, modes: map[string]roles.Role{}}
	for k, v := range DefaultModes {
		e.modes[k] = v
	}
	for k, v := range cfg.Modes {
		e.modes[k] = v
	}
	if err := e.Reload(); err != nil {
		return nil, err
	}
	if cfg.Optimizer.enabled() {
		e.opt = newOptimizer(cfg.Optimizer)
	}
	e.conv = newConvRoles(cfg.ConversationRoles, cfg.ConversationRoleTTL, cfg.Now)
	return e, nil
}

// Strategies returns the strategies in force.
func (e *Engineer) Strategies() *Strategies { return e.strat.Load() }

// Reload re-reads the strategies file. An invalid file is rejected, the strategies in
// force stay, and the error (naming the line) is returned and shown in Status.
func (e *Engineer) Reload() error {
	b, src, fi, err := e.read()
	if err == nil {
		var st *Strategies
		st, err = ParseStrategies(src, b)
		if err == nil {
			e.strat.Store(st)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if fi != nil {
		e.modTime, e.size = fi.ModTime(), fi.Size()
	} else {
		e.modTime, e.size = time.Time{}, -1
	}
	e.lastErr = err
	if err == nil {
		e.source, e.loadedAt = src, time.Now()
	}
	return err
}

func (e *Engineer) read() ([]byte, string, os.FileInfo, error) {
	if p := e.cfg.StrategiesPath; p != "" {
		fi, err := os.Stat(p)
		if err == nil {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, p, fi, fmt.Errorf("promptengineer: reading strategies: %w", err)
			}
			return b, p, fi, nil
		}
		if !os.IsNotExist(err) {
			return nil, p, nil, fmt.Errorf("promptengineer: reading strategies: %w", err)
		}
	}
	if len(e.cfg.Default) == 0 {
		return nil, "", nil, fmt.Errorf("promptengineer: no strategies file at %q and no embedded default", e.cfg.StrategiesPath)
	}
	return e.cfg.Default, "embedded", nil, nil
}

// Watch re-reads the strategies file whenever it changes (modification time or size),
// checked on every tick, until ctx ends. A bad edit is logged and the last good file stays.
func (e *Engineer) Watch(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if !e.changed() {
				continue
			}
			if err := e.Reload(); err != nil {
				e.log.Error("prompt strategies rejected; keeping the last good ones", "path", e.cfg.StrategiesPath, "err", err)
			} else {
				e.log.Info("prompt strategies reloaded", "source", e.Source())
			}
		}
	}
}

func (e *Engineer) changed() bool {
	if e.cfg.StrategiesPath == "" {
		return false
	}
	e.mu.Lock()
	mt, size := e.modTime, e.size
	e.mu.Unlock()
	fi, err := os.Stat(e.cfg.StrategiesPath)
	if err != nil {
		return size != -1 // the file went away: fall back to the embedded default
	}
	return !fi.ModTime().Equal(mt) || fi.Size() != size
}

// Source says where the strategies in force came from (a path or "embedded").
func (e *Engineer) Source() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.source
}

// Prepare resolves the role of req and edits req for it: the latest user message may be
// rewritten by the optimizer, and the role's guidance is added to the system area. An
// unknown explicit role is an *InvalidRoleError.
func (e *Engineer) Prepare(ctx context.Context, req *backends.ChatRequest, in Input) (Result, error) {
	st := e.strat.Load()
	res, sp, err := e.resolve(st, req, in)
	if err != nil {
		return Result{}, err
	}
	if res.Signal == SignalContent {
		e.conv.put(in.ConversationID, res.Role)
	}
	e.byRole[roleIndex(res.Role)].Add(1)
	c, ok := e.bySignal.Load(res.Signal)
	if !ok {
		c, _ = e.bySignal.LoadOrStore(res.Signal, new(atomic.Int64))
	}
	c.(*atomic.Int64).Add(1)

	strat := st.strategyFor(res.Role)
	res.Helper = sp != nil
	switch {
	case e.opt == nil:
	case sp != nil:
		res.Rewrite = RewriteHelper // a helper's prompt is the agent's, not the user's words
	default:
		var orig backends.Message
		if n := len(req.Messages); n > 0 {
			orig = req.Messages[n-1] // the rewrite replaces the content, never edits its bytes
		}
		res.Rewrite = e.opt.rewrite(ctx, req, strat)
		if res.Rewrite == RewriteDone || res.Rewrite == RewriteCached {
			res.Original = &orig
		}
	}
	block := strat.block
	if sp != nil {
		block = sp.block
		if sp.inject && block == "" {
			block = strat.block
		}
	}
	mode := e.injection(res.Role)
	switch {
	case sp != nil && !sp.inject:
		res.Injection = "none for this request"
	case mode == InjectOff:
		res.Injection = string(InjectOff)
	default:
		res.Injection = inject(req, block, mode)
		res.Guidance = res.Injection != injAlready
	}
	return res, nil
}

func (e *Engineer) injection(r roles.Role) Injection {
	if m, ok := e.cfg.Injection[r]; ok && m != "" {
		return m
	}
	return InjectAppend
}

// Resolve works out the role of req without editing it. It reads the conversation role
// memory but does not add to it.
func (e *Engineer) Resolve(req *backends.ChatRequest, in Input) (Result, error) {
	res, _, err := e.resolve(e.strat.Load(), req, in)
	return res, err
}

// resolve applies the resolution order; the first signal that matches wins.
func (e *Engineer) resolve(st *Strategies, req *backends.ChatRequest, in Input) (Result, *special, error) {
	if req.Role != "" {
		r, ok := roles.Parse(req.Role)
		if !ok {
			return Result{}, nil, &InvalidRoleError{Source: "'role'", Value: req.Role}
		}
		return Result{Role: r, Signal: SignalBody, Reason: "body role field"}, nil, nil
	}
	if in.HeaderRole != "" {
		r, ok := roles.Parse(in.HeaderRole)
		if !ok {
			return Result{}, nil, &InvalidRoleError{Source: "X-Proxy-Role header", Value: in.HeaderRole}
		}
		return Result{Role: r, Signal: SignalHeader, Reason: "X-Proxy-Role header"}, nil, nil
	}
	if in.AliasRole != "" {
		return Result{Role: in.AliasRole, Signal: SignalAlias, Reason: "model alias auto:" + string(in.AliasRole)}, nil, nil
	}

	op := openingFacts{special: len(st.special)}
	if si := systemIndex(req); si >= 0 {
		op = st.openingOf(&req.Messages[si])
	}
	ui := lastUserIndex(req)
	var userHead string
	if ui >= 0 {
		userHead = userText(headText(req.Messages[ui].ContentJSON(), specialBytes+64))
	}

	// Helper requests (context condensing, enhance prompt) are not the task itself: they
	// win over the agent's mode, which earlier turns still carry.
	if i := st.firstSpecial(strings.ToLower(userHead), op.special); i < len(st.special) {
		sp := st.special[i]
		return Result{Role: sp.role, Signal: SignalSpecial, Reason: sp.name + " request"}, sp, nil
	}

	var unmapped string
	if ui >= 0 {
		if slug := envMode(req.Messages[ui].ContentJSON()); slug != "" {
			if r, ok := e.modes[slug]; ok {
				return Result{Role: r, Signal: SignalMode,
					Reason: "agent mode " + strconv.Quote(slug) + " (# Current Mode in environment_details)"}, nil, nil
			}
			unmapped = slug
		}
	}
	if slug, agent := op.slug, op.agent; slug != "" {
		if r, ok := e.modes[slug]; ok {
			return Result{Role: r, Signal: SignalOpening,
				Reason: "agent mode " + strconv.Quote(slug) + " (" + agent + " system prompt opening)"}, nil, nil
		}
		if unmapped == "" {
			unmapped = slug
		}
	}
	note := ""
	if unmapped != "" {
		note = fmt.Sprintf("; agent mode %q is not in prompt.modes", unmapped)
	}

	// A conversation whose content was classified before keeps that role: its guidance
	// (and so the provider's prompt cache) and its route stay the same turn to turn.
	if r, ok := e.conv.get(in.ConversationID); ok {
		return Result{Role: r, Signal: SignalConversation,
			Reason: "conversation role (first classified as " + string(r) + ")" + note}, nil, nil
	}
	if ui >= 0 {
		text := userText(headText(req.Messages[ui].ContentJSON(), st.MaxBytes+512))
		r, score, hits, ok := st.classify(text)
		if ok {
			return Result{Role: r, Signal: SignalContent,
				Reason: fmt.Sprintf("content classification (score %.1f: %s)%s", score, describeHits(hits), note)}, nil, nil
		}
	}
	return Result{Role: roles.General, Signal: SignalDefault, Reason: "default: no role signal" + note}, nil, nil
}

// Status is the prompt engineer's /status section.
func (e *Engineer) Status() any {
	byRole := make(map[string]int64, numRoles)
	for i, r := range roles.All {
		byRole[string(r)] = e.byRole[i].Load()
	}
	bySignal := map[string]int64{}
	e.bySignal.Range(func(k, v any) bool {
		bySignal[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	e.mu.Lock()
	strat := map[string]any{"source": e.source, "loaded_at": e.loadedAt.UTC().Format(time.RFC3339)}
	if e.lastErr != nil {
		strat["error"] = e.lastErr.Error()
		strat["degraded"] = true
	}
	e.mu.Unlock()
	out := map[string]any{"strategies": strat, "roles": byRole, "signals": bySignal, "conversation_roles": e.conv.len()}
	if e.opt != nil {
		out["optimizer"] = e.opt.status()
	} else {
		out["optimizer"] = map[string]any{"enabled": false}
	}
	return out
}
