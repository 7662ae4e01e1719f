package backends

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processCPU returns the CPU time (user+system) this process has used. Benchmarks report
// it per operation beside ns/op, because on a shared machine wall time mostly measures the
// neighbours.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rooSizedBody returns a Roo-Code-sized request (~60 KB): the recorded Roo Code first turn
// with its system prompt grown to ~36 KB and its tool list repeated under MCP-style names,
// the shape bench/run.sh sends.
func rooSizedBody(tb testing.TB) []byte {
	tb.Helper()
	raw, err := os.ReadFile("../testdata/clients/roo-code-code-first-turn.json")
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		tb.Fatal(err)
	}
	sys := m["messages"].([]any)[0].(map[string]any)
	base := sys["content"].(string)
	var sb strings.Builder
	sb.WriteString(base)
	for i := 1; sb.Len() < 36_000; i++ {
		fmt.Fprintf(&sb, "\n\n====\n\nRULES FROM .roo/rules/%02d.md\n\n%s", i, base)
	}
	sys["content"] = sb.String()
	toolsJSON, _ := json.Marshal(m["tools"])
	tools := m["tools"].([]any)
	for i := 1; ; i++ {
		b, _ := json.Marshal(m)
		if len(b) >= 60_000 {
			return b
		}
		var more []map[string]any
		_ = json.Unmarshal(toolsJSON, &more)
		for _, t := range more {
			fn := t["function"].(map[string]any)
			fn["name"] = fmt.Sprintf("mcp_server%d_%s", i, fn["name"])
			tools = append(tools, t)
		}
		m["tools"] = tools
	}
}

// BenchmarkParseChatRequest measures decoding (and validating) a Roo-Code-sized body and
// encoding it for the upstream: the proxy's per-request JSON work.
func BenchmarkParseChatRequest(b *testing.B) {
	body := rooSizedBody(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu0 := processCPU()
	for b.Loop() {
		r, err := ParseChatRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		_ = r.UpstreamBody("deepseek-ai/DeepSeek-V3.1-Terminus")
	}
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
}
