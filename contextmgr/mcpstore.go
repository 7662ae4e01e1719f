package contextmgr

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp"
)

// ToolCaller calls a tool of an MCP server (*mcp.Server).
type ToolCaller interface {
	CallTool(ctx context.Context, name string, args any) (*mcp.Result, error)
}

// MCPStore keeps conversations in a context-persistence MCP server through its tools
// save_conversation, load_conversation_history and search_similar_conversations (names
// configurable).
type MCPStore struct {
	srv ToolCaller
	cfg config.MCPStore
}

var _ Store = (*MCPStore)(nil)

// NewMCPStore returns a store on srv.
func NewMCPStore(srv ToolCaller, cfg config.MCPStore) *MCPStore {
	return &MCPStore{srv: srv, cfg: cfg}
}

type mcpMessage struct {
	Role       string          `json:"role"`
	Content    string          `json:"content"`
	ToolCalls  json.RawMessage `json:"tool_calls,omitempty"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Timestamp  string          `json:"timestamp,omitempty"`
}

// History implements Store with load_conversation_history(conversation_id, limit).
func (s *MCPStore) History(ctx context.Context, conversationID string, limit int) ([]Turn, error) {
	args := map[string]any{"conversation_id": conversationID}
	if limit > 0 {
		args["limit"] = limit
	} else {
		args["limit"] = 1000
	}
	res, err := s.srv.CallTool(ctx, s.cfg.LoadTool, args)
	if err != nil {
		return nil, fmt.Errorf("contextmgr: %s: %w", s.cfg.LoadTool, err)
	}
	var out []Turn
	for _, e := range entries(res, "messages") {
		var m mcpMessage
		if json.Unmarshal(e, &m) != nil || m.Role == "" {
			continue
		}
		out = append(out, Turn{Role: m.Role, Content: m.Content, ToolCalls: m.ToolCalls, ToolCallID: m.ToolCallID, At: parseTime(m.Timestamp)})
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// Append implements Store with save_conversation(conversation_id, messages, project_path?,
// mode?, metadata?).
func (s *MCPStore) Append(ctx context.Context, conversationID string, turns []Turn, meta Meta) error {
	msgs := make([]mcpMessage, 0, len(turns))
	for _, t := range turns {
		msgs = append(msgs, mcpMessage{Role: t.Role, Content: t.Content, ToolCalls: t.ToolCalls, ToolCallID: t.ToolCallID})
	}
	md := map[string]any{"source": "nanogpt-proxy", "request_id": meta.RequestID}
	if meta.Profile != "" {
		md["profile"] = meta.Profile
	}
	args := map[string]any{"conversation_id": conversationID, "messages": msgs, "metadata": md}
	if meta.Role != "" {
		args["mode"] = meta.Role
	}
	if s.cfg.ProjectPath != "" {
		args["project_path"] = s.cfg.ProjectPath
	}
	if _, err := s.srv.CallTool(ctx, s.cfg.SaveTool, args); err != nil {
		return fmt.Errorf("contextmgr: %s: %w", s.cfg.SaveTool, err)
	}
	return nil
}

// Similar implements Store with search_similar_conversations(query, limit, min_score): the
// entries of each conversation other than exclude become one interaction, ranked by their
// best similarity_score. Append saves the profile in the conversation's metadata; an entry
// the server returns with a profile (its own "profile" member or metadata.profile) is kept
// only when that is the request's profile. Entries without one are kept: a server that
// drops metadata cannot be scoped by the proxy (use one store per profile then).
func (s *MCPStore) Similar(ctx context.Context, query, exclude, profile string, limit int) ([]Interaction, error) {
	q := cleanText(query)
	if len(q) > 2000 {
		q = clip(q, 2000)
	}
	if q == "" || limit <= 0 {
		return nil, nil
	}
	res, err := s.srv.CallTool(ctx, s.cfg.SearchTool, map[string]any{"query": q, "limit": limit + 1, "min_score": s.cfg.MinScore})
	if err != nil {
		return nil, fmt.Errorf("contextmgr: %s: %w", s.cfg.SearchTool, err)
	}
	byConv := map[string]*Interaction{}
	var order []string
	for _, e := range entries(res, "results") {
		var h struct {
			ConversationID string          `json:"conversation_id"`
			Role           string          `json:"role"`
			Content        string          `json:"content"`
			Timestamp      string          `json:"timestamp"`
			Score          *float64        `json:"similarity_score"`
			Profile        *string         `json:"profile"`
			Metadata       json.RawMessage `json:"metadata"`
		}
		if json.Unmarshal(e, &h) != nil || h.ConversationID == "" || h.ConversationID == exclude || strings.TrimSpace(h.Content) == "" {
			continue
		}
		if h.Profile == nil && len(h.Metadata) > 0 && h.Metadata[0] == '{' {
			var md struct {
				Profile *string `json:"profile"`
			}
			_ = json.Unmarshal(h.Metadata, &md)
			h.Profile = md.Profile
		}
		if h.Profile != nil && *h.Profile != profile {
			continue // another profile's conversation
		}
		score := 1.0
		if h.Score != nil {
			score = *h.Score
		}
		if score < s.cfg.MinScore {
			continue
		}
		it := byConv[h.ConversationID]
		if it == nil {
			it = &Interaction{ConversationID: h.ConversationID, At: parseTime(h.Timestamp)}
			byConv[h.ConversationID] = it
			order = append(order, h.ConversationID)
		}
		if score > it.Score {
			it.Score, it.Match = score, score
		}
		if len(it.Turns) < 2 {
			role := h.Role
			if role == "" {
				role = "user"
			}
			it.Turns = append(it.Turns, Turn{Role: role, Content: h.Content})
		}
	}
	out := make([]Interaction, 0, len(order))
	for _, id := range order {
		out = append(out, *byConv[id])
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// listKeys are the members under which servers wrap a list of entries.
var listKeys = []string{"messages", "results", "conversations", "items", "entries", "matches", "data"}

// entries extracts the JSON objects of a tool result, whether the server sent them as one
// JSON text item (an array, or an object holding the array under want or a usual key), as
// one text item per entry, or as structured content.
func entries(res *mcp.Result, want string) []json.RawMessage {
	var out []json.RawMessage
	add := func(raw []byte) {
		raw = bytes.TrimSpace(raw)
		if len(raw) == 0 {
			return
		}
		switch raw[0] {
		case '[':
			var list []json.RawMessage
			if json.Unmarshal(raw, &list) == nil {
				for _, e := range list {
					if e = bytes.TrimSpace(e); len(e) > 0 && e[0] == '{' {
						out = append(out, e)
					}
				}
			}
		case '{':
			var obj map[string]json.RawMessage
			if json.Unmarshal(raw, &obj) != nil {
				return
			}
			for _, k := range append([]string{want}, listKeys...) {
				if v, ok := obj[k]; ok && len(bytes.TrimSpace(v)) > 0 && bytes.TrimSpace(v)[0] == '[' {
					var list []json.RawMessage
					if json.Unmarshal(v, &list) == nil {
						out = append(out, list...)
					}
					return
				}
			}
			out = append(out, raw)
		}
	}
	if res == nil {
		return nil
	}
	if len(res.Structured) > 0 {
		add(res.Structured)
		if len(out) > 0 {
			return out
		}
	}
	for _, t := range res.Texts {
		add([]byte(t))
	}
	return out
}

func parseTime(s string) time.Time {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}
