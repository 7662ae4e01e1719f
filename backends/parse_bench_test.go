package backends

import (
	"os"
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

// rooSizedBody returns the Roo-Code-sized request (~60 KB) that bench/run.sh sends,
// derived from testdata/clients/roo-code-code-first-turn.json (refresh with
// bench/load -write-fixture).
func rooSizedBody(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("../testdata/bench/roo-code-60k.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
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
