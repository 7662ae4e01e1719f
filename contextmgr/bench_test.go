package contextmgr

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
	n := 0
	for b.Loop() {
		if n++; n%200 == 0 { // an answer of 200 chunks, then the next one
			tr = &tracker{}
		}
		tr.Chunk(chunk)
	}
}

// BenchmarkConversationID measures the conversation key of an agent request with a 60 KB
// system prompt and a 40 KB first user message in parts (the bounded text hash).
func BenchmarkConversationID(b *testing.B) {
	sys, _ := json.Marshal(strings.Repeat("You are Roo, a highly skilled software engineer. \"Rules\" follow.\n", 1000))
	env, _ := json.Marshal("<environment_details>\n" + strings.Repeat("src/orders/service.go\n", 2000) + "</environment_details>")
	body := `{"model":"auto","messages":[{"role":"system","content":` + string(sys) + `},{"role":"user","content":[{"type":"text","text":"<task>fix it</task>"},{"type":"text","text":` + string(env) + `,"cache_control":{"type":"ephemeral"}}]}]}`
	b.Run("first", func(b *testing.B) { // bytes the validation cache does not keep: hashed
		req := parse(b, body)
		for b.Loop() {
			ConversationID(req, "")
		}
	})
	b.Run("again", func(b *testing.B) { // a later turn of the task: both parts are memos
		parse(b, body)
		req := parse(b, body)
		for b.Loop() {
			ConversationID(req, "")
		}
	})
}
