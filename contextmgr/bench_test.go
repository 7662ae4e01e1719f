package contextmgr

import (
	"context"
	"fmt"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// BenchmarkEnrichEmbedded measures the hot-path cost of enrichment on an embedded store of
// 2,000 conversations: a thin client's history plus a similar-interactions search.
func BenchmarkEnrichEmbedded(b *testing.B) {
	st, _ := openStore(b)
	m := New(testConfig(), st, nil)
	defer m.Close(context.Background())
	topics := []string{"pagination", "database migration", "kubernetes ingress", "react hooks", "golang generics", "sqlite wal", "oauth tokens", "docker layers"}
	for i := range 2000 {
		tp := topics[i%len(topics)]
		req := parse(b, body("user", fmt.Sprintf("question %d about %s in service %d with details", i, tp, i%37)))
		in := Input{ConversationID: fmt.Sprintf("c%d", i), Role: roles.General}
		tr := m.Track(req, in)
		for _, c := range streamChunks(fmt.Sprintf("answer %d about %s: use the standard approach for %s", i, tp, tp)) {
			tr.Chunk(c)
		}
		tr.Finish(true)
	}
	if err := m.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		req := parse(b, body("system", "S.", "user", "how do I do pagination with sqlite wal in my service?"))
		m.Enrich(context.Background(), req, Input{ConversationID: "c5", Role: roles.General})
	}
}

// BenchmarkTrackerChunk measures the per-event cost the tracker adds to streaming.
func BenchmarkTrackerChunk(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"some streamed words here"},"finish_reason":null}]}`)
	tr := &tracker{}
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		tr.Chunk(chunk)
	}
}
