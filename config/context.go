package config

import (
	"fmt"
	"os"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Context configures the context manager: which store keeps conversations, which roles get
// enrichment, how much may be added, and how long loading may take.
type Context struct {
	// Enrich turns enrichment (history and similar interactions) on; false adds nothing.
	Enrich bool `yaml:"enrich"`
	// Save turns storage of exchanges on; false stores nothing (privacy switch).
	Save bool `yaml:"save"`
	// Store is "embedded" (SQLite, the default) or "mcp" (the MCP server named in MCPStore).
	Store string `yaml:"store"`
	// Roles lists the roles that get enrichment; empty means every role.
	Roles []string `yaml:"roles"`
	// LoadTimeout bounds loading history and similar interactions for one request; past it
	// the request goes out without enrichment.
	LoadTimeout time.Duration `yaml:"load_timeout"`
	// BudgetFraction is the share of the model's context window that added context may use.
	BudgetFraction float64 `yaml:"budget_fraction"`
	// DefaultContextWindow is assumed when the model's window is unknown.
	DefaultContextWindow int `yaml:"default_context_window"`
	// BudgetTokens overrides the budget per role (tokens; role name → tokens).
	BudgetTokens map[string]int `yaml:"budget_tokens"`
	// HistoryTurns caps the stored turns loaded for a thin client.
	HistoryTurns int `yaml:"history_turns"`
	// SimilarLimit caps the similar past interactions added; 0 disables them.
	SimilarLimit int `yaml:"similar_limit"`
	// MinScore is the embedded store's threshold: the share (0-1) of the query's weight a
	// past interaction must match to be added.
	MinScore float64 `yaml:"min_score"`
	// QueueSize is how many exchanges may wait for the background writer before new ones
	// are dropped (and counted).
	QueueSize int `yaml:"queue_size"`
	// MCPStore names the MCP server and tools used when Store is "mcp".
	MCPStore MCPStore `yaml:"mcp_store"`
	// EmbeddedLoadTimeout replaces LoadTimeout for the embedded store, whose lookups take
	// milliseconds (0: LoadTimeout applies).
	EmbeddedLoadTimeout time.Duration `yaml:"embedded_load_timeout"`
	// MaxLookups caps concurrent store lookups for enrichment; past it a request goes out
	// at once without them (counted as skipped_busy). 0: no cap.
	MaxLookups int `yaml:"max_lookups"`
}

// MCPStore names a context-persistence MCP server and its tools.
type MCPStore struct {
	Server     string `yaml:"server"`
	SaveTool   string `yaml:"save_tool"`
	LoadTool   string `yaml:"load_tool"`
	SearchTool string `yaml:"search_tool"`
	// MinScore is passed to the search tool as min_score and applied to its results.
	MinScore float64 `yaml:"min_score"`
	// ProjectPath and Mode are passed to the save tool when set.
	ProjectPath string `yaml:"project_path"`
}

// MCP configures the MCP client bridge.
type MCP struct {
	Servers []MCPServer `yaml:"servers"`
	// ConnectTimeout bounds starting a server, initialize and the tool listing.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMin and ReconnectMax bound the exponential backoff between reconnects.
	ReconnectMin time.Duration `yaml:"reconnect_min"`
	ReconnectMax time.Duration `yaml:"reconnect_max"`
	// PingInterval is how often an idle connection is checked; 0 disables pings.
	PingInterval time.Duration `yaml:"ping_interval"`
}

// MCPServer is one MCP server: a stdio child (Command) or a streamable HTTP endpoint (URL).
// Values of Env and Headers may name environment variables as ${NAME}; they are never logged.
type MCPServer struct {
	Name    string            `yaml:"name"`
	Command string            `yaml:"command"`
	Args    []string          `yaml:"args"`
	Env     map[string]string `yaml:"env"`
	Dir     string            `yaml:"dir"`
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers"`
}

// Transport is "stdio" or "http".
func (s MCPServer) Transport() string {
	if s.URL != "" {
		return "http"
	}
	return "stdio"
}

func defaultContext() Context {
	return Context{
		Enrich: true, Save: true, Store: "embedded",
		LoadTimeout: 300 * time.Millisecond, BudgetFraction: 0.05, DefaultContextWindow: 128000,
		HistoryTurns: 40, SimilarLimit: 3, MinScore: 0.5, QueueSize: 1024,
		EmbeddedLoadTimeout: 100 * time.Millisecond, MaxLookups: 4,
		MCPStore: MCPStore{
			Server: "context-persistence", SaveTool: "save_conversation",
			LoadTool: "load_conversation_history", SearchTool: "search_similar_conversations", MinScore: 0.7,
		},
	}
}

func defaultMCP() MCP {
	return MCP{ConnectTimeout: 20 * time.Second, ReconnectMin: 500 * time.Millisecond, ReconnectMax: 30 * time.Second,
		PingInterval: 30 * time.Second}
}

// expandEnv replaces ${NAME} in server env and header values.
func (m *MCP) expandEnv(getenv func(string) string) {
	for i := range m.Servers {
		s := &m.Servers[i]
		for k, v := range s.Env {
			s.Env[k] = os.Expand(v, getenv)
		}
		for k, v := range s.Headers {
			s.Headers[k] = os.Expand(v, getenv)
		}
	}
}

func (c *Config) validateContext() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	x := c.Context
	if x.Store != "embedded" && x.Store != "mcp" {
		bad("context.store: %q must be \"embedded\" or \"mcp\"", x.Store)
	}
	for _, r := range x.Roles {
		if !validRole(r) {
			bad("context.roles: unknown role %q", r)
		}
	}
	for r, n := range x.BudgetTokens {
		if !validRole(r) {
			bad("context.budget_tokens: unknown role %q", r)
		}
		if n < 0 {
			bad("context.budget_tokens.%s: %d must not be negative", r, n)
		}
	}
	if x.LoadTimeout <= 0 {
		bad("context.load_timeout: must be positive")
	}
	if x.BudgetFraction < 0 || x.BudgetFraction > 0.5 {
		bad("context.budget_fraction: %v must be between 0 and 0.5", x.BudgetFraction)
	}
	if x.DefaultContextWindow < 1024 {
		bad("context.default_context_window: %d is too small (at least 1024)", x.DefaultContextWindow)
	}
	if x.HistoryTurns < 0 || x.SimilarLimit < 0 {
		bad("context.history_turns and context.similar_limit must not be negative")
	}
	if x.MinScore < 0 || x.MinScore > 1 || x.MCPStore.MinScore < 0 || x.MCPStore.MinScore > 1 {
		bad("context.min_score and context.mcp_store.min_score must be between 0 and 1")
	}
	if x.EmbeddedLoadTimeout < 0 || x.MaxLookups < 0 {
		bad("context.embedded_load_timeout and context.max_lookups must not be negative")
	}
	if x.QueueSize < 1 {
		bad("context.queue_size: %d must be positive", x.QueueSize)
	}
	names := map[string]bool{}
	for i, s := range c.MCP.Servers {
		switch {
		case s.Name == "":
			bad("mcp.servers[%d]: name must not be empty", i)
		case names[s.Name]:
			bad("mcp.servers[%d]: duplicate name %q", i, s.Name)
		}
		names[s.Name] = true
		if (s.Command == "") == (s.URL == "") {
			bad("mcp.servers[%d] (%s): set exactly one of command (stdio) or url (streamable HTTP)", i, s.Name)
		}
		if s.URL != "" {
			if err := checkURL(s.URL); err != nil {
				bad("mcp.servers[%d] (%s).url: %v", i, s.Name, err)
			}
		}
	}
	if x.Store == "mcp" && !names[x.MCPStore.Server] {
		bad("context.mcp_store.server: %q is not one of mcp.servers", x.MCPStore.Server)
	}
	if x.MCPStore.SaveTool == "" || x.MCPStore.LoadTool == "" || x.MCPStore.SearchTool == "" {
		bad("context.mcp_store: tool names must not be empty")
	}
	m := c.MCP
	if m.ConnectTimeout <= 0 || m.ReconnectMin <= 0 || m.ReconnectMax < m.ReconnectMin || m.PingInterval < 0 {
		bad("mcp: connect_timeout and reconnect_min must be positive, reconnect_max at least reconnect_min, ping_interval not negative")
	}
	return errs
}

func validRole(r string) bool {
	_, ok := roles.Parse(r)
	return ok
}
