package contextmgr

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// BenchmarkWriterSameConversation measures the background save per exchange when one
// conversation is busy (a coding agent; a load generator repeating one body): a Roo Code
// tool turn and its streamed answer, queued burst at a time, then flushed. ns/op is the
// writer's wall time per exchange (it runs while the benchmark goroutine waits).
func BenchmarkWriterSameConversation(b *testing.B) {
	raw, err := os.ReadFile("../testdata/clients/roo-code-code-tool-turn.json")
	if err != nil {
		b.Fatal(err)
	}
	req, err := backends.ParseChatRequest(raw)
	if err != nil {
		b.Fatal(err)
	}
	chunks := streamChunks("I read the file; the handler returns early when the list is empty, so I will fix the check.")
	for _, burst := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) {
			st, _ := openStore(b)
			m := New(testConfig(), st, nil)
			defer m.Close(context.Background())
			in := Input{ConversationID: "bench", Role: roles.Implementation, Profile: "personal"}
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				tr := m.Track(req, in)
				for _, c := range chunks {
					tr.Chunk(c)
				}
				tr.Finish(true)
				if n++; n%burst == 0 {
					if err := m.Flush(context.Background()); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := m.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			if s := m.Stats(); s.Dropped > 0 || s.SaveFailures > 0 {
				b.Fatalf("dropped %d, failed %d", s.Dropped, s.SaveFailures)
			}
		})
	}
}
