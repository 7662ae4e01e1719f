package mcp_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// TestInteropServerMemory drives the real third-party @modelcontextprotocol/server-memory
// (npm, installed by `npm ci --prefix e2e`) over stdio through the bridge.
func TestInteropServerMemory(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is required in CI for the MCP interop test")
		}
		t.Skip("node not installed")
	}
	script, _ := filepath.Abs("../e2e/node_modules/@modelcontextprotocol/server-memory/dist/index.js")
	if _, err := os.Stat(script); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("server-memory is not installed: run `npm ci --prefix e2e` (%v)", err)
		}
		t.Skipf("server-memory is not installed: run `npm ci --prefix e2e` or ./scripts/test.sh (%v)", err)
	}
	memFile := filepath.Join(t.TempDir(), "memory.jsonl")
	b := startBridge(t, config.MCPServer{Name: "memory", Command: node, Args: []string{script},
		Env: map[string]string{"MEMORY_FILE_PATH": memFile}})
	srv := b.Server("memory")

	st := srv.Status()
	for _, want := range []string{"create_entities", "search_nodes", "read_graph", "create_relations"} {
		if !slices.Contains(st.Tools, want) {
			t.Errorf("tools %v lack %s", st.Tools, want)
		}
	}
	if !strings.Contains(st.ServerInfo, "memory") {
		t.Errorf("server info %q", st.ServerInfo)
	}

	ctx := context.Background()
	_, err = srv.CallTool(ctx, "create_entities", map[string]any{"entities": []map[string]any{
		{"name": "nanogpt-proxy", "entityType": "project", "observations": []string{"routes coding-agent requests to NanoGPT"}},
		{"name": "Helix", "entityType": "editor", "observations": []string{"modal text editor"}},
	}})
	if err != nil {
		t.Fatalf("create_entities: %v", err)
	}
	res, err := srv.CallTool(ctx, "search_nodes", map[string]any{"query": "NanoGPT"})
	if err != nil {
		t.Fatalf("search_nodes: %v", err)
	}
	all := strings.Join(res.Texts, "\n") + string(res.Structured)
	if !strings.Contains(all, "nanogpt-proxy") || strings.Contains(all, "Helix") {
		t.Errorf("search_nodes(NanoGPT) = %s, want the nanogpt-proxy entity only", all)
	}
	// The server wrote its graph where the config's env told it to.
	if b, err := os.ReadFile(memFile); err != nil || !strings.Contains(string(b), "nanogpt-proxy") {
		t.Errorf("memory file: %q, %v", b, err)
	}
}
