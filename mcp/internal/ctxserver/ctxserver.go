// Package ctxserver is a context-persistence MCP server for tests: the tools
// save_conversation, load_conversation_history and search_similar_conversations on a JSON
// file (so data survives a restart), plus exit (the process dies) for reconnect tests.
// Hang makes every tool block until its request is cancelled.
package ctxserver

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// Options configure the server.
type Options struct {
	// File keeps the conversations; empty keeps them in memory.
	File string
	// Hang makes every tool call block until it is cancelled.
	Hang bool
	// Exit is called by the exit tool (os.Exit in a child process).
	Exit func()
}

type message struct {
	Role      string `json:"role"`
	Content   string `json:"content"`
	Timestamp string `json:"timestamp"`
}

type store struct {
	mu    sync.Mutex
	file  string
	convs map[string][]message
}

func (s *store) load() {
	s.convs = map[string][]message{}
	if s.file == "" {
		return
	}
	if b, err := os.ReadFile(s.file); err == nil {
		_ = json.Unmarshal(b, &s.convs)
	}
}

func (s *store) persist() {
	if s.file == "" {
		return
	}
	b, _ := json.Marshal(s.convs)
	tmp := s.file + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, s.file)
	}
}

// New returns the MCP server.
func New(o Options) *server.MCPServer {
	st := &store{file: o.File}
	st.load()
	srv := server.NewMCPServer("context-persistence-test", "1.0.0", server.WithToolCapabilities(false))
	hang := func(ctx context.Context) (*mcp.CallToolResult, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	srv.AddTool(mcp.NewTool("save_conversation",
		mcp.WithString("conversation_id", mcp.Required()),
		mcp.WithArray("messages", mcp.Required(), mcp.Items(map[string]any{"type": "object"})),
		mcp.WithString("project_path"), mcp.WithString("mode"), mcp.WithObject("metadata"),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if o.Hang {
			return hang(ctx)
		}
		var args struct {
			ConversationID string    `json:"conversation_id"`
			Messages       []message `json:"messages"`
		}
		if err := req.BindArguments(&args); err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		st.mu.Lock()
		now := time.Now().UTC().Format(time.RFC3339Nano)
		for _, m := range args.Messages {
			m.Timestamp = now
			st.convs[args.ConversationID] = append(st.convs[args.ConversationID], m)
		}
		st.persist()
		st.mu.Unlock()
		return mcp.NewToolResultText(`{"status":"saved"}`), nil
	})
	srv.AddTool(mcp.NewTool("load_conversation_history",
		mcp.WithString("conversation_id", mcp.Required()), mcp.WithNumber("limit"),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if o.Hang {
			return hang(ctx)
		}
		id := req.GetString("conversation_id", "")
		limit := req.GetInt("limit", 50)
		st.mu.Lock()
		msgs := append([]message{}, st.convs[id]...)
		st.mu.Unlock()
		if len(msgs) > limit {
			msgs = msgs[len(msgs)-limit:]
		}
		// One JSON text item holding an object with "messages".
		b, _ := json.Marshal(map[string]any{"conversation_id": id, "messages": msgs})
		return mcp.NewToolResultText(string(b)), nil
	})
	srv.AddTool(mcp.NewTool("search_similar_conversations",
		mcp.WithString("query", mcp.Required()), mcp.WithNumber("limit"), mcp.WithNumber("min_score"),
	), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if o.Hang {
			return hang(ctx)
		}
		q := words(req.GetString("query", ""))
		limit := req.GetInt("limit", 5)
		minScore := req.GetFloat("min_score", 0.7)
		type hit struct {
			ConversationID string  `json:"conversation_id"`
			Role           string  `json:"role"`
			Content        string  `json:"content"`
			Timestamp      string  `json:"timestamp"`
			Score          float64 `json:"similarity_score"`
		}
		var hits []hit
		st.mu.Lock()
		for id, msgs := range st.convs {
			for _, m := range msgs {
				w := words(m.Content)
				n := 0
				for k := range q {
					if w[k] {
						n++
					}
				}
				if len(q) > 0 && float64(n)/float64(len(q)) >= minScore {
					hits = append(hits, hit{id, m.Role, m.Content, m.Timestamp, float64(n) / float64(len(q))})
				}
			}
		}
		st.mu.Unlock()
		sort.Slice(hits, func(i, j int) bool {
			if hits[i].Score != hits[j].Score {
				return hits[i].Score > hits[j].Score
			}
			return hits[i].ConversationID < hits[j].ConversationID
		})
		if len(hits) > limit {
			hits = hits[:limit]
		}
		// One text item per entry.
		res := &mcp.CallToolResult{Content: []mcp.Content{}}
		for _, h := range hits {
			b, _ := json.Marshal(h)
			res.Content = append(res.Content, mcp.NewTextContent(string(b)))
		}
		return res, nil
	})
	srv.AddTool(mcp.NewTool("exit"), func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		if o.Exit != nil {
			o.Exit()
		}
		return mcp.NewToolResultText("bye"), nil
	})
	return srv
}

func words(s string) map[string]bool {
	out := map[string]bool{}
	for _, w := range strings.FieldsFunc(strings.ToLower(s), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) {
		if len(w) >= 3 {
			out[w] = true
		}
	}
	return out
}
