package promptengineer

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	openai "github.com/sashabaranov/go-openai"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// OptimizerConfig configures the optional rewrite of the latest user message by a local
// OpenAI-compatible model (Ollama, LM Studio, llama.cpp server). Empty BaseURL or Model
// means off.
type OptimizerConfig struct {
	// BaseURL is the OpenAI-compatible API base, e.g. http://127.0.0.1:11434/v1.
	BaseURL string
	// Model is the local model's id.
	Model string
	// APIKey is sent as a bearer token when set (most local servers need none). Never logged.
	APIKey string
	// Timeout is the hard deadline of one rewrite; past it the message goes out unchanged.
	// Zero means 1 s.
	Timeout time.Duration
	// CacheSize bounds the rewrite cache (entries); zero means 256.
	CacheSize int
	// MaxBytes is the longest user text that is rewritten; zero means 8 KiB.
	MaxBytes int
	// HTTPClient is used for the calls; nil means a fresh http.Client.
	HTTPClient *http.Client
}

func (c OptimizerConfig) enabled() bool { return c.BaseURL != "" && c.Model != "" }

// Outcomes of a rewrite attempt (Result.Rewrite).
const (
	RewriteDone       = "rewritten"
	RewriteCached     = "rewritten (cached)"
	RewriteToolTurn   = "skipped: the last message is a tool result"
	RewriteHelper     = "skipped: helper request (context condensing, enhance prompt, ...)"
	RewriteNoText     = "skipped: no user text to rewrite"
	RewriteTooLong    = "skipped: user text longer than the optimizer limit"
	RewriteTimeout    = "fallback: optimizer timed out"
	RewriteError      = "fallback: optimizer failed"
	RewriteEmptyReply = "fallback: optimizer returned nothing"
)

type optimizer struct {
	cfg    OptimizerConfig
	client *openai.Client

	mu    sync.Mutex
	cache map[[32]byte]*list.Element
	lru   *list.List // of *cacheEntry, most recent first

	rewrites, hits, timeouts, failures, skipped atomic.Int64
	lastErr                                     atomic.Value // string
}

type cacheEntry struct {
	key  [32]byte
	text string
}

func newOptimizer(cfg OptimizerConfig) *optimizer {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 256
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 8 << 10
	}
	oc := openai.DefaultConfig(cfg.APIKey)
	oc.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	if cfg.HTTPClient != nil {
		oc.HTTPClient = cfg.HTTPClient
	}
	return &optimizer{cfg: cfg, client: openai.NewClientWithConfig(oc), cache: map[[32]byte]*list.Element{}, lru: list.New()}
}

// target is the text of the latest user message that a rewrite replaces.
type target struct {
	msg  *backends.Message
	part int // index of the text part in an array content; -1 for a string content
	// full is the whole text of that string or part; the user's words are full[lo:hi].
	full   string
	lo, hi int
}

func (t target) text() string { return t.full[t.lo:t.hi] }

// findTarget picks the user's own words in the last message: a string content, or the
// first text part of an array, inside agent tags like <user_message> when present.
func findTarget(req *backends.ChatRequest) (target, string) {
	if len(req.Messages) == 0 {
		return target{}, RewriteNoText
	}
	m := &req.Messages[len(req.Messages)-1]
	switch m.Role {
	case "user":
	case "tool", "function":
		return target{}, RewriteToolTurn
	default:
		return target{}, RewriteNoText
	}
	t := target{msg: m, part: -1}
	content := m.ContentJSON()
	switch {
	case len(content) > 0 && content[0] == '"':
		if json.Unmarshal(content, &t.full) != nil {
			return target{}, RewriteNoText
		}
	case len(content) > 0 && content[0] == '[':
		for i, p := range splitParts(content) {
			raw := partText(p)
			if raw == nil {
				continue
			}
			if json.Unmarshal(raw, &t.full) != nil {
				return target{}, RewriteNoText
			}
			t.part = i
			break
		}
		if t.part < 0 {
			return target{}, RewriteNoText
		}
	default:
		return target{}, RewriteNoText
	}
	t.lo, t.hi = 0, len(t.full)
	for _, tag := range [...]string{"user_message", "task", "feedback"} {
		open, end := "<"+tag+">", "</"+tag+">"
		if i := strings.Index(t.full, open); i >= 0 {
			if j := strings.Index(t.full[i:], end); j >= 0 {
				t.lo, t.hi = i+len(open), i+j
			}
			break
		}
	}
	if strings.HasPrefix(strings.TrimSpace(t.text()), "<environment_details>") {
		return target{}, RewriteNoText
	}
	if strings.TrimSpace(t.text()) == "" {
		return target{}, RewriteNoText
	}
	return t, ""
}

// rewrite rewrites the latest user message of req for the role's strategy, within the
// deadline; on any failure the message stays as the client sent it.
func (o *optimizer) rewrite(ctx context.Context, req *backends.ChatRequest, st *strategy) string {
	t, skip := findTarget(req)
	if skip != "" {
		o.skipped.Add(1)
		return skip
	}
	text := t.text()
	if len(text) > o.cfg.MaxBytes {
		o.skipped.Add(1)
		return RewriteTooLong
	}
	key := sha256.Sum256([]byte(o.cfg.Model + "\x00" + st.block + "\x00" + text))
	if cached, ok := o.get(key); ok {
		o.hits.Add(1)
		t.apply(cached)
		return RewriteCached
	}
	cctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	resp, err := o.client.CreateChatCompletion(cctx, openai.ChatCompletionRequest{
		Model:       o.cfg.Model,
		Temperature: 0.2,
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: optimizerPrompt(st)},
			{Role: openai.ChatMessageRoleUser, Content: text},
		},
	})
	if err != nil {
		if errors.Is(cctx.Err(), context.DeadlineExceeded) {
			o.timeouts.Add(1)
			o.lastErr.Store(fmt.Sprintf("timed out after %s", o.cfg.Timeout))
			return RewriteTimeout
		}
		o.failures.Add(1)
		o.lastErr.Store(fmt.Errorf("promptengineer: optimizer: %w", err).Error())
		return RewriteError
	}
	var out string
	if len(resp.Choices) > 0 {
		out = cleanRewrite(resp.Choices[0].Message.Content)
	}
	if out == "" {
		o.failures.Add(1)
		return RewriteEmptyReply
	}
	o.put(key, out)
	o.rewrites.Add(1)
	t.apply(out)
	return RewriteDone
}

// cleanRewrite drops a reasoning model's <think> block and surrounding space.
func cleanRewrite(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "<think>") {
		if i := strings.Index(s, "</think>"); i >= 0 {
			s = strings.TrimSpace(s[i+len("</think>"):])
		}
	}
	return s
}

func optimizerPrompt(st *strategy) string {
	return "You improve requests sent to an AI assistant that works as: " + string(st.role) + ".\n" +
		"The assistant follows this guidance:\n" + st.guidance + "\n\n" +
		"Rewrite the user's request so it is clear, specific and complete for that role. Keep every fact, " +
		"name, path, number, code block and constraint exactly as written; make vague wording precise; add " +
		"no new requirements; do not answer the request. Reply with the rewritten request only."
}

// apply replaces the user's words in the message, keeping every other byte of it.
func (t target) apply(words string) {
	m := t.msg
	newText := t.full[:t.lo] + words + t.full[t.hi:]
	var content json.RawMessage
	if t.part < 0 {
		content = quoteJSON(newText)
	} else {
		parts := splitParts(m.ContentJSON())
		fs, err := backends.SplitObject(parts[t.part])
		if err != nil {
			return
		}
		parts[t.part] = backends.JoinObject(backends.SetField(fs, "text", quoteJSON(newText)))
		content = append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']')
	}
	src := m.Raw
	if src == nil {
		src = m.JSON()
	}
	fs, err := backends.SplitObject(src)
	if err != nil {
		return
	}
	m.Content = content
	m.Raw = backends.JoinObject(backends.SetField(fs, "content", content))
}

// quoteJSON encodes s as a JSON string without HTML escaping.
func quoteJSON(s string) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimRight(buf.Bytes(), "\n")
}

func (o *optimizer) get(key [32]byte) (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	el, ok := o.cache[key]
	if !ok {
		return "", false
	}
	o.lru.MoveToFront(el)
	return el.Value.(*cacheEntry).text, true
}

func (o *optimizer) put(key [32]byte, text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if el, ok := o.cache[key]; ok {
		el.Value.(*cacheEntry).text = text
		o.lru.MoveToFront(el)
		return
	}
	o.cache[key] = o.lru.PushFront(&cacheEntry{key: key, text: text})
	for o.lru.Len() > o.cfg.CacheSize {
		old := o.lru.Back()
		o.lru.Remove(old)
		delete(o.cache, old.Value.(*cacheEntry).key)
	}
}

func (o *optimizer) status() map[string]any {
	o.mu.Lock()
	n := o.lru.Len()
	o.mu.Unlock()
	out := map[string]any{
		"enabled": true, "base_url": o.cfg.BaseURL, "model": o.cfg.Model, "timeout": o.cfg.Timeout.String(),
		"rewrites": o.rewrites.Load(), "cache_hits": o.hits.Load(), "cache_entries": n,
		"timeouts": o.timeouts.Load(), "failures": o.failures.Load(), "skipped": o.skipped.Load(),
	}
	if s, ok := o.lastErr.Load().(string); ok && s != "" {
		out["last_error"] = s
		out["degraded"] = o.timeouts.Load()+o.failures.Load() > 0
	}
	return out
}
