package contextmgr

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// gatedBatchStore blocks its first save until released, so that the queue fills, and
// records the size of every batch.
type gatedBatchStore struct {
	*SQLiteStore
	once    sync.Once
	entered chan struct{} // closed when the first save is blocked (nil: not told)
	release chan struct{}
	mu      sync.Mutex
	sizes   []int
}

func (g *gatedBatchStore) AppendBatch(ctx context.Context, items []AppendItem) error {
	g.once.Do(func() {
		if g.entered != nil {
			close(g.entered)
		}
		<-g.release
	})
	g.mu.Lock()
	g.sizes = append(g.sizes, len(items))
	g.mu.Unlock()
	return g.SQLiteStore.AppendBatch(ctx, items)
}

func (g *gatedBatchStore) Append(ctx context.Context, conv string, turns []Turn, meta Meta) error {
	return g.AppendBatch(ctx, []AppendItem{{Conv: conv, Turns: turns, Meta: meta}})
}

// Exchanges queued while the writer is busy are saved together in one transaction, and
// every turn is stored exactly once.
func TestWriterBatchesQueuedSaves(t *testing.T) {
	st, _ := openStore(t)
	g := &gatedBatchStore{SQLiteStore: st, release: make(chan struct{})}
	w := newWriter(g, 256, 5*time.Second, slog.New(slog.DiscardHandler))
	ex := func(conv, q, a string) job {
		return job{conv: conv, msgs: []backends.Message{backends.NewMessage("user", q)}, answer: Turn{Role: "assistant", Content: a}}
	}
	w.enqueue(ex("first", "q0", "a0")) // taken by the writer, which then blocks in the store
	for i := range 20 {
		w.enqueue(ex(fmt.Sprintf("c%d", i), "question", fmt.Sprintf("answer %d", i)))
	}
	// The same conversation again, carrying its first turn: it must not be stored twice.
	w.enqueue(job{conv: "c3", msgs: []backends.Message{backends.NewMessage("user", "question"), backends.NewMessage("assistant", "answer 3"),
		backends.NewMessage("user", "follow-up")}, answer: Turn{Role: "assistant", Content: "answer 3b"}})
	close(g.release)
	if err := w.sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	sizes := append([]int(nil), g.sizes...)
	g.mu.Unlock()
	biggest := 0
	for _, n := range sizes {
		biggest = max(biggest, n)
	}
	if biggest < 2 {
		t.Errorf("batch sizes %v: queued exchanges were not saved together", sizes)
	}
	if got := w.saved.Load(); got != 22 {
		t.Errorf("saved %d exchanges, want 22", got)
	}
	h, err := st.History(context.Background(), "c3", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tt := range h {
		got = append(got, tt.Role+":"+tt.Content)
	}
	want := "[user:question assistant:answer 3 user:follow-up assistant:answer 3b]"
	if fmt.Sprint(got) != want {
		t.Errorf("c3 history %v, want %s", got, want)
	}
	for i := range 20 {
		if h, _ := st.History(context.Background(), fmt.Sprintf("c%d", i), 0); len(h) < 2 {
			t.Errorf("c%d: %d turns stored, want its question and answer", i, len(h))
		}
	}
	_ = w.close(context.Background())
}

// TestAppendBatchNoGoroutinePerStatement: a save batch runs its statements on the writer's
// goroutine. go-sqlite3 starts a goroutine for every statement given a cancellable
// context: two per saved answer (the message and its index entry), a cost on every
// proxied request (bench/ab.sh) until storage.StmtContext.
func TestAppendBatchNoGoroutinePerStatement(t *testing.T) {
	st, _ := openStore(t)
	const convs, perConv = 10, 10
	var items []AppendItem
	for i := range convs * perConv {
		items = append(items, AppendItem{Conv: fmt.Sprintf("conv-%d", i%convs), Meta: Meta{RequestID: fmt.Sprintf("req-%d", i)},
			Turns: []Turn{{Role: "assistant", Content: fmt.Sprintf("answer number %d about goroutines", i)}}})
	}
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.AppendBatch(ctx, items); err != nil {
		t.Fatal(err)
	}
	metrics.Read(s)
	created := s[0].Value.Uint64() - before
	for c := range convs {
		h, err := st.History(ctx, fmt.Sprintf("conv-%d", c), 0)
		if err != nil || len(h) != perConv {
			t.Fatalf("conv-%d: %d turns stored (err %v), want %d", c, len(h), err, perConv)
		}
	}
	if created >= convs*perConv/4 {
		t.Errorf("saving %d answers started %d goroutines, want a few per transaction", convs*perConv, created)
	}
}
