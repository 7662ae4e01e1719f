package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestContextAndMCPConfig(t *testing.T) {
	cfg, err := loadYAML(t, `
context:
  store: mcp
  roles: [architect, debugging]
  load_timeout: 150ms
  budget_tokens: {architect: 2000}
  mcp_store:
    server: persist
    search_tool: find_similar
mcp:
  servers:
    - name: persist
      command: npx
      args: [-y, context-persistence]
      env: {API_KEY: "${PERSIST_KEY}"}
    - name: remote
      url: http://127.0.0.1:9000/mcp
      headers: {Authorization: "Bearer ${REMOTE_TOKEN}"}
`, map[string]string{"PERSIST_KEY": "k1", "REMOTE_TOKEN": "t2"})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Context
	if c.Store != "mcp" || c.LoadTimeout != 150*time.Millisecond || c.MCPStore.SearchTool != "find_similar" ||
		c.MCPStore.LoadTool != "load_conversation_history" || c.BudgetTokens["architect"] != 2000 || !c.Save || !c.Enrich {
		t.Errorf("context = %+v", c)
	}
	if diff := cmp.Diff([]string{"architect", "debugging"}, c.Roles); diff != "" {
		t.Error(diff)
	}
	s := cfg.MCP.Servers
	if len(s) != 2 || s[0].Env["API_KEY"] != "k1" || s[1].Headers["Authorization"] != "Bearer t2" || s[0].Transport() != "stdio" || s[1].Transport() != "http" {
		t.Errorf("servers = %+v", s)
	}
	if cfg.MCP.ReconnectMin <= 0 || cfg.MCP.ConnectTimeout <= 0 {
		t.Errorf("mcp defaults missing: %+v", cfg.MCP)
	}
}

func TestContextConfigInvalid(t *testing.T) {
	for _, tc := range []struct{ yml, want string }{
		{"context: {store: redis}", "context.store"},
		{"context: {roles: [wizard]}", `unknown role "wizard"`},
		{"context: {budget_tokens: {general: -1}}", "budget_tokens.general"},
		{"context: {load_timeout: 0s}", "context.load_timeout"},
		{"context: {store: mcp}", `context.mcp_store.server: "context-persistence" is not one of mcp.servers`},
		{"mcp: {servers: [{name: a}]}", "set exactly one of command"},
		{"mcp: {servers: [{name: a, command: x, url: 'http://h/'}]}", "set exactly one of command"},
		{"mcp: {servers: [{name: a, url: 'ftp://h/'}]}", "must be an http(s) URL"},
		{"mcp: {servers: [{name: a, command: x}, {name: a, command: y}]}", "duplicate name"},
	} {
		_, err := loadYAML(t, tc.yml, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.yml, err, tc.want)
		}
	}
}
