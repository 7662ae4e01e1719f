package contextmgr

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// storedRow is a messages row as a user of the store sees it (ids and times aside).
type storedRow struct {
	Conv, Role, Content, ToolCalls, ToolCallID, Hash, RequestID string
	Seq                                                         int64
}

// storedState is everything a save leaves in the database that a reader depends on.
type storedState struct {
	Messages []storedRow
	Convs    []string // id|role|profile
	FTS      int      // index entries
}

func readState(t *testing.T, db *storage.DB) storedState {
	t.Helper()
	var s storedState
	rows, err := db.Query(`SELECT conversation_id, seq, role, content, tool_calls, tool_call_id, hash, request_id FROM messages ORDER BY conversation_id, seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var r storedRow
		if err := rows.Scan(&r.Conv, &r.Seq, &r.Role, &r.Content, &r.ToolCalls, &r.ToolCallID, &r.Hash, &r.RequestID); err != nil {
			t.Fatal(err)
		}
		s.Messages = append(s.Messages, r)
	}
	crows, err := db.Query(`SELECT id, role, profile FROM conversations ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer crows.Close()
	for crows.Next() {
		var id, role, profile string
		if err := crows.Scan(&id, &role, &profile); err != nil {
			t.Fatal(err)
		}
		s.Convs = append(s.Convs, id+"|"+role+"|"+profile)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM messages_fts`).Scan(&s.FTS); err != nil {
		t.Fatal(err)
	}
	return s
}

// countingBatchStore counts AppendBatch calls and their sizes.
type countingBatchStore struct {
	Store
	sizes []int
}

func (c *countingBatchStore) AppendBatch(ctx context.Context, items []AppendItem) error {
	c.sizes = append(c.sizes, len(items))
	return c.Store.(batchAppender).AppendBatch(ctx, items)
}

func (c *countingBatchStore) CountStored(ctx context.Context, conv string, hashes []string) (map[string]int, error) {
	return c.Store.(storedCounter).CountStored(ctx, conv, hashes)
}

// testWriter is a writer without its goroutine: the test calls saveBatch and saveOne.
func testWriter(store Store) *writer {
	return &writer{store: store, log: slog.New(slog.DiscardHandler), timeout: 5 * time.Second}
}

// exchangeJob is one request (role/content pairs) and its answer, in a conversation its
// client names.
func exchangeJob(conv, reqID, profile string, answer Turn, pairs ...string) job {
	var msgs []backends.Message
	for i := 0; i+1 < len(pairs); i += 2 {
		msgs = append(msgs, backends.NewMessage(pairs[i], pairs[i+1]))
	}
	return job{conv: conv, msgs: msgs, answer: answer, meta: Meta{RequestID: reqID, Role: "code", Profile: profile, named: true}}
}

// rawMessages parses messages given as JSON objects.
func rawMessages(objs ...string) []backends.Message {
	req, err := backends.ParseChatRequest([]byte(`{"model":"auto","messages":[` + strings.Join(objs, ",") + `]}`))
	if err != nil {
		panic(err)
	}
	return req.Messages
}

func ans(s string) Turn { return Turn{Role: "assistant", Content: s} }

// sameConversationCases are sequences of exchanges as clients send them.
var sameConversationCases = []struct {
	name string
	jobs []job
}{
	{"full history client", []job{
		exchangeJob("c", "r1", "p", ans("a1"), "system", "S", "user", "q1"),
		exchangeJob("c", "r2", "p", ans("a2"), "system", "S", "user", "q1", "assistant", "a1", "user", "q2"),
		exchangeJob("c", "r3", "p", ans("a3"), "system", "S", "user", "q1", "assistant", "a1", "user", "q2", "assistant", "a2", "user", "q3"),
	}},
	{"the same body again and again (the bench)", []job{
		exchangeJob("c", "r1", "p", ans("hello"), "system", "S", "user", "Say hi"),
		exchangeJob("c", "r2", "p", ans("hello"), "system", "S", "user", "Say hi"),
		exchangeJob("c", "r3", "p", ans("hello"), "system", "S", "user", "Say hi"),
		exchangeJob("c", "r4", "p", ans("hello"), "system", "S", "user", "Say hi"),
	}},
	{"repeated short turns counted", []job{
		exchangeJob("c", "r1", "p", ans("ok"), "user", "yes"),
		exchangeJob("c", "r2", "p", ans("ok"), "user", "yes", "assistant", "ok", "user", "yes"),
		exchangeJob("c", "r3", "p", ans("done"), "user", "yes", "assistant", "ok", "user", "yes", "assistant", "ok", "user", "yes"),
	}},
	{"thin client", []job{
		exchangeJob("c", "r1", "p", ans("a1"), "user", "q1"),
		exchangeJob("c", "r2", "p", ans("a2"), "user", "q2"),
		exchangeJob("c", "r3", "p", ans("a3"), "user", "q3"),
	}},
	{"tool calls and results", []job{
		exchangeJob("c", "r1", "p", Turn{Role: "assistant", ToolCalls: []byte(`[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{}"}}]`)}, "user", "read it"),
		{conv: "c", meta: Meta{RequestID: "r2", Profile: "p"}, msgs: rawMessages(`{"role":"user","content":"read it"}`,
			`{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{}"}}]}`,
			`{"role":"tool","tool_call_id":"call_1","content":"file body"}`), answer: ans("it says hi")},
	}},
	{"an edited earlier turn", []job{
		exchangeJob("c", "r1", "p", ans("a1"), "user", "q1"),
		exchangeJob("c", "r2", "p", ans("a2"), "user", "q1 edited", "assistant", "a1", "user", "q2"),
	}},
	{"interleaved conversations and a profile change", []job{
		exchangeJob("c", "r1", "p", ans("a1"), "user", "q1"),
		exchangeJob("d", "r2", "p", ans("b1"), "user", "other"),
		exchangeJob("c", "r3", "p", ans("a2"), "user", "q1", "assistant", "a1", "user", "q2"),
		exchangeJob("d", "r4", "p", ans("b2"), "user", "other", "assistant", "b1", "user", "more"),
		exchangeJob("c", "r5", "q", ans("a3"), "user", "q1", "assistant", "a1", "user", "q2", "assistant", "a2", "user", "q3"),
	}},
	{"nothing new, then something", []job{
		exchangeJob("c", "r1", "p", Turn{}, "user", "q1"),
		exchangeJob("c", "r2", "p", Turn{}, "user", "q1"),
		exchangeJob("c", "r3", "p", ans("a1"), "user", "q1"),
	}},
}

// A batch holding several exchanges of one conversation stores exactly what saving them
// one by one stores: the same rows and seqs, no duplicates, the same conversation row and
// index entries, in one transaction; and the fast path's cached history follows.
func TestBatchSameConversationMatchesOneByOne(t *testing.T) {
	ctx := context.Background()
	for _, tc := range sameConversationCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, prior := range []bool{false, true} { // a new conversation, and one already stored
				oneSt, oneDB := openStore(t)
				batchSt, batchDB := openStore(t)
				if prior {
					for _, st := range []*SQLiteStore{oneSt, batchSt} {
						if err := st.Append(ctx, "c", []Turn{{Role: "user", Content: "q1"}, ans("earlier")}, Meta{Role: "code", Profile: "p"}); err != nil {
							t.Fatal(err)
						}
					}
				}
				one := testWriter(oneSt)
				for _, j := range tc.jobs {
					one.saveOne(j)
				}
				fp := NewFastPath(batchSt, FastPathOptions{Exclusive: true, HistoryTurns: 50}).(fastDeleter)
				<-fp.loaded
				cs := &countingBatchStore{Store: writerStore(fp)}
				if _, err := fp.History(ctx, "c", 0); err != nil { // cache what is stored, if anything
					t.Fatal(err)
				}
				bw := testWriter(cs)
				if !bw.saveBatch(tc.jobs) {
					t.Fatal("saveBatch failed")
				}
				if want := []int{len(tc.jobs)}; !cmp.Equal(cs.sizes, want) {
					t.Errorf("AppendBatch calls with %v items, want one with all %d", cs.sizes, len(tc.jobs))
				}
				want, got := readState(t, oneDB), readState(t, batchDB)
				if d := cmp.Diff(want, got); d != "" {
					t.Errorf("prior=%v: batch stored differently from one by one (-one +batch):\n%s", prior, d)
				}
				if one.saved.Load() != bw.saved.Load() || one.messages.Load() != bw.messages.Load() {
					t.Errorf("counters: one by one saved %d/%d messages, batch %d/%d", one.saved.Load(), one.messages.Load(), bw.saved.Load(), bw.messages.Load())
				}
				seen := map[string]bool{}
				for _, r := range got.Messages {
					k := fmt.Sprint(r.Conv, r.Seq)
					if seen[k] {
						t.Errorf("seq %s stored twice", k)
					}
					seen[k] = true
				}
				for _, conv := range []string{"c", "d"} {
					stored, err := batchSt.History(ctx, conv, 0)
					if err != nil {
						t.Fatal(err)
					}
					cached, err := fp.History(ctx, conv, 0)
					if err != nil {
						t.Fatal(err)
					}
					if d := cmp.Diff(turnsRC(stored), turnsRC(cached)); d != "" {
						t.Errorf("fast path history of %s differs from the store (-store +cache):\n%s", conv, d)
					}
				}
			}
		})
	}
}

// The bench's case in numbers: four identical requests of one conversation in one batch
// store the question once and each answer, at seqs 1-5, all searchable.
func TestBatchSameBodyStoredOnce(t *testing.T) {
	ctx := context.Background()
	st, db := openStore(t)
	w := testWriter(st)
	jobs := sameConversationCases[1].jobs
	if !w.saveBatch(jobs) {
		t.Fatal("saveBatch failed")
	}
	var got []string
	for _, r := range readState(t, db).Messages {
		got = append(got, fmt.Sprintf("%d %s:%s %s", r.Seq, r.Role, r.Content, r.RequestID))
	}
	want := []string{"1 user:Say hi r1", "2 assistant:hello r1", "3 assistant:hello r2", "4 assistant:hello r3", "5 assistant:hello r4"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stored rows (-want +got):\n%s", d)
	}
	// Another conversation's search finds the answer.
	if err := st.Append(ctx, "other", []Turn{{Role: "user", Content: "x"}}, Meta{Profile: "p"}); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH 'hello'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("%d answers searchable, want 4", n)
	}
}

// failTrigger makes every insert of a message with content 'boom' fail inside the
// transaction, after the rows before it were inserted.
func failTrigger(t *testing.T, db *storage.DB) {
	t.Helper()
	if _, err := db.Exec(`CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.content = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`); err != nil {
		t.Fatal(err)
	}
}

// When a batch fails part way, nothing of it stays, the writer saves its exchanges one by
// one (re-planning each from what is stored), and the result is what saving one by one
// stores: only the exchange that cannot be saved is missing and counted as failed, and the
// fast path's caches hold what the store holds.
func TestBatchFailureFallsBackOneByOne(t *testing.T) {
	ctx := context.Background()
	jobs := []job{
		exchangeJob("c", "r1", "p", ans("a1"), "user", "q1"),
		exchangeJob("c", "r2", "p", ans("a2"), "user", "q1", "assistant", "a1", "user", "q2"),
		exchangeJob("d", "r3", "p", ans("boom"), "user", "doomed"),
		exchangeJob("c", "r4", "p", ans("a3"), "user", "q1", "assistant", "a1", "user", "q2", "assistant", "a2", "user", "q3"),
	}
	oneSt, oneDB := openStore(t)
	failTrigger(t, oneDB)
	one := testWriter(oneSt)
	for _, j := range jobs {
		one.saveOne(j)
	}

	st, db := openStore(t)
	failTrigger(t, db)
	fp := NewFastPath(st, FastPathOptions{Exclusive: true, HistoryTurns: 50}).(fastDeleter)
	<-fp.loaded
	g := &gatedBatchStore{SQLiteStore: st, entered: make(chan struct{}), release: make(chan struct{})}
	fp.inner = g
	w := newWriter(writerStore(fp), 64, 5*time.Second, slog.New(slog.DiscardHandler))
	w.enqueue(exchangeJob("warm", "r0", "p", ans("a0"), "user", "q0"))
	<-g.entered // the writer is saving it: what follows queues up
	for _, j := range jobs {
		w.enqueue(j)
	}
	close(g.release)
	if err := w.sync(ctx); err != nil {
		t.Fatal(err)
	}
	_ = w.close(ctx)
	g.mu.Lock()
	sizes := g.sizes
	g.mu.Unlock()
	if len(sizes) < 2 || sizes[0] != 1 || sizes[1] != len(jobs) {
		t.Fatalf("AppendBatch sizes %v: the queued exchanges were not tried as one batch of %d", sizes, len(jobs))
	}
	if _, err := db.Exec(`DELETE FROM messages_fts WHERE docid IN (SELECT id FROM messages WHERE conversation_id = 'warm')`); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Delete(ctx, "warm"); err != nil {
		t.Fatal(err)
	}
	want, got := readState(t, oneDB), readState(t, db)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("after the fallback the store differs from one by one (-one +batch):\n%s", d)
	}
	if len(got.Messages) != 6 {
		t.Errorf("%d messages stored, want c's 6", len(got.Messages))
	}
	if w.failed.Load() != 1 || one.failed.Load() != 1 {
		t.Errorf("failed: batch writer %d, one by one %d; want 1 each", w.failed.Load(), one.failed.Load())
	}
	if w.saved.Load() != 4 { // warm, and c's three
		t.Errorf("saved %d exchanges, want 4", w.saved.Load())
	}
	for _, conv := range []string{"c", "d"} {
		stored, _ := st.History(ctx, conv, 0)
		cached, err := fp.History(ctx, conv, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(turnsRC(stored), turnsRC(cached)); d != "" {
			t.Errorf("fast path history of %s differs from the store (-store +cache):\n%s", conv, d)
		}
	}
}

// signalStore tells each save on a channel.
type signalStore struct {
	*gatedBatchStore
	saved chan int
}

func (s *signalStore) AppendBatch(ctx context.Context, items []AppendItem) error {
	err := s.gatedBatchStore.AppendBatch(ctx, items)
	s.saved <- len(items)
	return err
}

// next waits for the next save and returns how many exchanges it held; nothing saved
// before ctx ends fails t.
func (s *signalStore) next(ctx context.Context, t *testing.T, what string) int {
	t.Helper()
	select {
	case n := <-s.saved:
		return n
	case <-ctx.Done():
		t.Fatalf("%s: not saved", what)
		return 0
	}
}

func (s *signalStore) Append(ctx context.Context, conv string, turns []Turn, meta Meta) error {
	return s.AppendBatch(ctx, []AppendItem{{Conv: conv, Turns: turns, Meta: meta}})
}

// Under load the writer keeps a batch open for more exchanges, but an exchange after a
// quiet spell is saved without waiting, and a flush closes an open batch at once.
func TestWriterLinger(t *testing.T) {
	st, db := openStore(t)
	g := &gatedBatchStore{SQLiteStore: st, release: make(chan struct{})}
	close(g.release)
	s := &signalStore{gatedBatchStore: g, saved: make(chan int, 16)}
	w := &writer{store: s, log: slog.New(slog.DiscardHandler), timeout: 5 * time.Second, linger: time.Hour, queue: storage.NewQueue[job](64)}
	go w.run()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer w.close(ctx) // bounded: a writer stuck in its linger fails the test, not the run
	w.enqueue(exchangeJob("c", "r1", "p", ans("a1"), "user", "q1"))
	if n := s.next(ctx, t, "the first exchange, without a flush"); n != 1 {
		t.Errorf("first save of %d exchanges, want 1", n)
	}
	// Taken right after the first: the writer waits for more, until the flush.
	for i := 2; i <= 4; i++ {
		w.enqueue(exchangeJob("c", fmt.Sprintf("r%d", i), "p", ans(fmt.Sprintf("a%d", i)), "user", fmt.Sprintf("q%d", i)))
	}
	if err := w.sync(ctx); err != nil {
		t.Fatalf("flush during a lingering batch: %v", err)
	}
	if n := s.next(ctx, t, "the lingering batch"); n != 3 {
		t.Errorf("lingering batch saved %d exchanges, want the 3 queued", n)
	}
	if got := len(readState(t, db).Messages); got != 8 {
		t.Errorf("%d messages stored, want 8", got)
	}
}

// A writer that finds a full batch already queued saves it without lingering: a backlog
// (after a slow commit) is not made to wait longer still.
func TestWriterBacklogNotLingered(t *testing.T) {
	st, db := openStore(t)
	g := &gatedBatchStore{SQLiteStore: st, entered: make(chan struct{}), release: make(chan struct{})}
	s := &signalStore{gatedBatchStore: g, saved: make(chan int, 16)}
	w := &writer{store: s, log: slog.New(slog.DiscardHandler), timeout: 5 * time.Second, linger: time.Hour, queue: storage.NewQueue[job](4 * maxSaveBatch)}
	go w.run()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer w.close(ctx) // bounded: a writer stuck in its linger fails the test, not the run
	w.enqueue(exchangeJob("c", "r0", "p", ans("a0"), "user", "q0"))
	<-g.entered // the writer is saving it: what follows queues up
	n := maxSaveBatch + 3
	for i := 1; i <= n; i++ {
		w.enqueue(exchangeJob("c", fmt.Sprintf("r%d", i), "p", ans(fmt.Sprintf("a%d", i)), "user", fmt.Sprintf("q%d", i)))
	}
	close(g.release)
	if got := s.next(ctx, t, "the first exchange"); got != 1 {
		t.Errorf("first save of %d exchanges, want 1", got)
	}
	if got := s.next(ctx, t, "the backlog, without a flush"); got != maxSaveBatch {
		t.Errorf("backlog saved %d exchanges at once, want %d", got, maxSaveBatch)
	}
	if err := w.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.next(ctx, t, "the rest"); got != 3 {
		t.Errorf("the rest saved %d exchanges at once, want 3", got)
	}
	if got := len(readState(t, db).Messages); got != 2*(n+1) {
		t.Errorf("%d messages stored, want %d", got, 2*(n+1))
	}
}
