package contextmgr

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// heldStore is the embedded store with a hold on one save: the first save that holds
// conversation hold waits, before its commit or after it, until release is closed. With
// releaseOnRead the first history read of the store during the hold closes it.
type heldStore struct {
	*SQLiteStore
	hold          string
	afterCommit   bool
	releaseOnRead bool
	held          chan struct{} // closed when the save is held
	release       chan struct{}
	once, rel     sync.Once
}

func newHeldStore(st *SQLiteStore, hold string, afterCommit, releaseOnRead bool) *heldStore {
	return &heldStore{SQLiteStore: st, hold: hold, afterCommit: afterCommit, releaseOnRead: releaseOnRead,
		held: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldStore) AppendBatch(ctx context.Context, items []AppendItem) error {
	holds := false
	for _, it := range items {
		holds = holds || it.Conv == h.hold
	}
	wait := func() {
		h.once.Do(func() {
			close(h.held)
			<-h.release
		})
	}
	if holds && !h.afterCommit {
		wait()
	}
	err := h.SQLiteStore.AppendBatch(ctx, items)
	if holds && h.afterCommit {
		wait()
	}
	return err
}

func (h *heldStore) Append(ctx context.Context, conv string, turns []Turn, meta Meta) error {
	return h.AppendBatch(ctx, []AppendItem{{Conv: conv, Turns: turns, Meta: meta}})
}

func (h *heldStore) History(ctx context.Context, conv string, limit int) ([]Turn, error) {
	turns, err := h.SQLiteStore.History(ctx, conv, limit)
	select {
	case <-h.held:
		if h.releaseOnRead {
			h.rel.Do(func() { close(h.release) })
		}
	default:
	}
	return turns, err
}

// newHeldManager is newTestManager on the embedded store through h: the fast path treats it
// as the embedded store (exclusive), and the writer saves through it.
func newHeldManager(t *testing.T, h *heldStore) *Manager {
	t.Helper()
	cfg := testConfig()
	m := New(cfg, nil, nil)
	fp := NewFastPath(h, FastPathOptions{Exclusive: true, HistoryTurns: cfg.HistoryTurns, MaxLookups: cfg.MaxLookups}).(fastDeleter)
	<-fp.loaded
	m.store = fp
	m.w = newWriter(writerStore(fp), 64, saveTimeout, m.log)
	m.w.deleter = fp.Delete
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// A thin client's next turn can arrive before the background writer has saved its
// previous exchange (saves linger to share a commit). The history it gets back holds that
// exchange anyway, read from the queue, and once everything is written the store holds
// each turn once. The cases take each way history is read: a conversation the store does
// not have yet, one in the fast path's cache, and one read from SQLite (after a restart).
func TestThinClientSeesQueuedExchange(t *testing.T) {
	const conv = "conv-queued"
	sys := "You are terse."
	for _, tc := range []struct {
		name    string
		saved   int  // exchanges saved before the writer is held
		restart bool // a new manager on the same database: nothing cached
	}{
		{"new conversation", 0, false},
		{"cached conversation", 1, false},
		{"conversation read from the store", 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := openStore(t)
			in := Input{RequestID: "r", ConversationID: conv, Role: roles.General}
			qs := []string{"My cat is called Miso.", "She is three years old.", "How old is my cat, and what is her name?"}
			as := []string{"Nice name.", "Noted.", "Miso is three."}
			h := newHeldStore(st, "other", false, false)
			m := newHeldManager(t, h)
			for i := range tc.saved {
				turn(t, m, parse(t, body("system", sys, "user", qs[i])), in, streamChunks(as[i]))
			}
			sync_(t, m)
			if tc.restart {
				_ = m.Close(context.Background())
				m = newHeldManager(t, h)
			}
			// Hold the writer on another conversation's save: what follows stays queued.
			m.w.enqueue(exchangeJob("other", "r0", "", ans("a0"), "user", "q0"))
			<-h.held

			last := len(qs) - 1
			for i := tc.saved; i < last; i++ {
				turn(t, m, parse(t, body("system", sys, "user", qs[i])), in, streamChunks(as[i]))
			}
			req, res := turn(t, m, parse(t, body("system", sys, "user", qs[last])), in, streamChunks(as[last]))
			want := []rc{{"system", sys}}
			for i := range last {
				want = append(want, rc{"user", qs[i]}, rc{"assistant", as[i]})
			}
			want = append(want, rc{"user", qs[last]})
			if d := cmp.Diff(want, roleContents(req.Messages)); d != "" {
				t.Errorf("request sent upstream (-want +got):\n%s", d)
			}
			if res.HistoryMessages != 2*last || res.Err != nil {
				t.Errorf("result = %+v, want %d history messages and no error", res, 2*last)
			}

			// The same question again while the first is queued (asked twice, or a retry) is the
			// conversation's next turn: the queued exchange with the same words goes before it.
			twinIn := in
			twinIn.NoStore = true
			twin, _ := turn(t, m, parse(t, body("system", sys, "user", qs[last])), twinIn, streamChunks(as[last]))
			want = append(want, rc{"assistant", as[last]}, rc{"user", qs[last]})
			if d := cmp.Diff(want, roleContents(twin.Messages)); d != "" {
				t.Errorf("the queued question asked again, sent upstream (-want +got):\n%s", d)
			}

			close(h.release)
			sync_(t, m)
			var wantStored []rc
			for i := range qs {
				wantStored = append(wantStored, rc{"user", qs[i]}, rc{"assistant", as[i]})
			}
			checkStored(t, st, conv, wantStored)
		})
	}
}

// A history read from the store while the previous exchange is being written may or may
// not hold it (here it does: committed, not yet done): the exchange is not added a second
// time from the queue.
func TestHistoryReadDuringSaveNotDoubled(t *testing.T) {
	const conv = "conv-inflight"
	sys := "You are terse."
	st, _ := openStore(t)
	in := Input{RequestID: "r", ConversationID: conv, Role: roles.General}
	m := newTestManager(t, testConfig(), st)
	turn(t, m, parse(t, body("system", sys, "user", "My cat is called Miso.")), in, streamChunks("Nice name."))
	sync_(t, m)
	_ = m.Close(context.Background())
	h := newHeldStore(st, conv, true, true)
	m = newHeldManager(t, h) // nothing cached: history is read from SQLite

	// Queued as the handler's tracker queues it, without this turn's own history read (which
	// would put the conversation in the fast path's cache).
	m.w.enqueue(exchangeJob(conv, "r2", "", ans("Noted."), "user", "She is three years old."))
	<-h.held
	req, _ := turn(t, m, parse(t, body("system", sys, "user", "How old is she?")), in, streamChunks("Three."))
	want := []rc{
		{"system", sys},
		{"user", "My cat is called Miso."}, {"assistant", "Nice name."},
		{"user", "She is three years old."}, {"assistant", "Noted."},
		{"user", "How old is she?"},
	}
	if d := cmp.Diff(want, roleContents(req.Messages)); d != "" {
		t.Errorf("request sent upstream (-want +got):\n%s", d)
	}
	sync_(t, m)
	checkStored(t, st, conv, []rc{
		{"user", "My cat is called Miso."}, {"assistant", "Nice name."},
		{"user", "She is three years old."}, {"assistant", "Noted."},
		{"user", "How old is she?"}, {"assistant", "Three."},
	})
}

// Thin clients that send each turn as soon as the previous answer is in, several at once,
// while the writer saves in the background at its own pace: every turn goes upstream with
// the whole conversation before it, whether its exchanges are stored, queued or being
// written, and the store ends with each turn once.
func TestRapidThinClients(t *testing.T) {
	t.Run("embedded store", func(t *testing.T) {
		st, _ := openStore(t)
		rapidThinClients(t, st, st)
	})
	// A store the proxy does not own (an MCP server): no cache, every history is read from the
	// store and waits out a save of the conversation that is being written.
	t.Run("store read every time", func(t *testing.T) {
		st, _ := openStore(t)
		rapidThinClients(t, foreignStore{st}, st)
	})
}

// foreignStore is the embedded store under another type: the manager treats it as a store
// it does not own (no history cache).
type foreignStore struct{ *SQLiteStore }

func rapidThinClients(t *testing.T, store Store, st *SQLiteStore) {
	cfg := testConfig()
	cfg.SimilarLimit = 0 // only the conversation's own history
	m := newTestManager(t, cfg, store)
	const clients, turns = 4, 10
	sys := "You are terse."
	q := func(c, i int) string { return fmt.Sprintf("client %d question %d", c, i) }
	a := func(c, i int) string { return fmt.Sprintf("client %d answer %d", c, i) }
	var wg sync.WaitGroup
	errs := make(chan string, clients*turns)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			in := Input{RequestID: "r", ConversationID: fmt.Sprintf("rapid-%d", c), Role: roles.General}
			for i := range turns {
				req := parse(t, body("system", sys, "user", q(c, i)))
				m.Enrich(context.Background(), req, in)
				want := []rc{{"system", sys}}
				for k := range i {
					want = append(want, rc{"user", q(c, k)}, rc{"assistant", a(c, k)})
				}
				want = append(want, rc{"user", q(c, i)})
				if d := cmp.Diff(want, roleContents(req.Messages)); d != "" {
					errs <- fmt.Sprintf("client %d turn %d sent upstream (-want +got):\n%s", c, i, d)
					return
				}
				tr := m.Track(req, in)
				for _, ch := range streamChunks(a(c, i)) {
					tr.Chunk(ch)
				}
				tr.Finish(true)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	sync_(t, m)
	for c := range clients {
		var want []rc
		for i := range turns {
			want = append(want, rc{"user", q(c, i)}, rc{"assistant", a(c, i)})
		}
		checkStored(t, st, fmt.Sprintf("rapid-%d", c), want)
	}
}
