package storage

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkUsageInsert is the usage writer's cost per row (ns/row) in one transaction of
// n rows, in a SQLite file: a lone request's row is a batch of one; under load a batch
// holds what came in one flush interval (200 ms), up to 256 rows.
func BenchmarkUsageInsert(b *testing.B) {
	for _, n := range []int{1, 16, 64, 256} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchUsageInsert(b, n) })
	}
}

func benchUsageInsert(b *testing.B, n int) {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	w := NewUsageWriter(db, slog.New(slog.NewTextHandler(io.Discard, nil)), 16, time.Hour)
	defer w.Close(context.Background())
	batch := make([]Usage, n)
	for i := range batch {
		batch[i] = Usage{CreatedAt: time.Date(2026, 11, 28, 8, 0, i, 123456789, time.UTC), RequestID: fmt.Sprintf("req_%016x", i),
			Backend: "nanogpt", Model: "zai-org/glm-4.6", Role: "implementation", ConversationID: "conv_0123456789abcdef",
			Profile: "personal", Stream: i%2 == 0, StatusCode: 200, PromptTokens: 15000, CompletionTokens: 250, TotalTokens: 15250,
			LatencyMS: 1200, TTFTMS: 300, Attempts: 1}
	}
	b.ReportAllocs()
	at := batch[0].CreatedAt
	for b.Loop() {
		for i := range batch { // rows come in time order: the indexes grow at their right edge
			at = at.Add(time.Millisecond)
			batch[i].CreatedAt = at
		}
		if err := w.insert(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/row")
}
