package contextmgr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// countingStore is the real embedded store, counting the lookups that reach it.
type countingStore struct {
	*SQLiteStore
	history, similar atomic.Int64
}

func (c *countingStore) History(ctx context.Context, conv string, limit int) ([]Turn, error) {
	c.history.Add(1)
	return c.SQLiteStore.History(ctx, conv, limit)
}

func (c *countingStore) Similar(ctx context.Context, q, excl, profile string, limit int) ([]Interaction, error) {
	c.similar.Add(1)
	return c.SQLiteStore.Similar(ctx, q, excl, profile, limit)
}

// newFast decorates a counting embedded store the way New does, after the startup listing.
func newFast(t *testing.T, st *SQLiteStore) (*FastPath, *countingStore) {
	t.Helper()
	cs := &countingStore{SQLiteStore: st}
	s := NewFastPath(cs, FastPathOptions{Exclusive: true, HistoryTurns: 4, MaxLookups: 4})
	f := s.(fastDeleter).FastPath
	<-f.loaded
	return f, cs
}

func exchange(q, a string) []Turn {
	return []Turn{{Role: "user", Content: q}, {Role: "assistant", Content: a}}
}

// ignoreAt: the cache stamps turns with its own clock, the store with its own.
var ignoreAt = cmpopts.IgnoreFields(Turn{}, "At")

func TestFastPathUnknownConversationSkipsStore(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	if err := st.Append(ctx, "old", exchange("how do I rotate oauth tokens", "use a refresh token"), Meta{}); err != nil {
		t.Fatal(err)
	}
	f, cs := newFast(t, st)
	if s := f.Stats(); !s.KnownReady || s.KnownConversations != 1 {
		t.Fatalf("startup listing: %+v, want 1 known conversation", s)
	}
	// A first turn: nothing stored, nothing asked.
	got, err := f.History(ctx, "brand-new", 40)
	if err != nil || len(got) != 0 || cs.history.Load() != 0 {
		t.Fatalf("unknown conversation: %v, %v, %d store calls; want nothing and no call", got, err, cs.history.Load())
	}
	// A conversation stored before startup is asked once, then served from memory.
	for i := range 2 {
		got, err = f.History(ctx, "old", 40)
		if err != nil || len(got) != 2 || cs.history.Load() != 1 {
			t.Fatalf("known conversation, lookup %d: %d turns, %v, %d store calls; want 2 turns, 1 call", i, len(got), err, cs.history.Load())
		}
	}
}

func TestFastPathHistoryFollowsAppend(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	f, cs := newFast(t, st)
	// Three appends: the new conversation (named by its client) is cached from the first,
	// the later ones extend it past HistoryTurns (4), so the cache keeps the last four. A
	// conversation whose key is derived from its first messages is not cached: its
	// history is never read.
	for i := range 3 {
		if err := f.Append(ctx, "c", exchange(fmt.Sprintf("question %d", i), fmt.Sprintf("answer %d", i)), Meta{named: true}); err != nil {
			t.Fatal(err)
		}
		if err := f.Append(ctx, "derived", exchange(fmt.Sprintf("question %d", i), fmt.Sprintf("answer %d", i)), Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	_, cachedDerived := f.hist["derived"]
	f.mu.Unlock()
	if cachedDerived {
		t.Error("a conversation with a derived key is cached")
	}
	for _, limit := range []int{1, 3, 4} {
		got, err := f.History(ctx, "c", limit)
		want, _ := st.History(ctx, "c", limit)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got, ignoreAt); d != "" {
			t.Errorf("History(limit %d) from cache differs from the store (-store +cache):\n%s", limit, d)
		}
	}
	if n := cs.history.Load(); n != 0 {
		t.Errorf("%d store calls; the cache should have answered", n)
	}
	// More than the cache holds goes to the store and is still right.
	got, _ := f.History(ctx, "c", 0)
	if len(got) != 6 || cs.history.Load() != 1 {
		t.Errorf("History(all): %d turns, %d store calls; want 6 turns from 1 call", len(got), cs.history.Load())
	}
}

// A history the cache handed out stays as it was while the conversation goes on: the
// cache appends new turns after the entry's in the same array, never into what a reader
// holds, and a reader appending to its history does not write into the cache (run with
// -race: readers walk their histories while the saves go on).
func TestFastPathHistoryHandedOutStaysPut(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	f, _ := newFast(t, st)
	if err := f.Append(ctx, "c", exchange("question 0", "answer 0"), Meta{}); err != nil {
		t.Fatal(err)
	}
	type held struct {
		turns []Turn
		want  []string
	}
	contents := func(ts []Turn) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Content)
		}
		return out
	}
	var kept []held
	done := make(chan struct{})
	go func() { // a reader walking its histories while the saves go on
		defer close(done)
		for range 200 {
			h, _ := f.History(ctx, "c", 3)
			_ = contents(h)
			_ = append(h, Turn{Role: "user", Content: "the reader's own turn"})
		}
	}()
	for i := 1; i <= 12; i++ {
		h, err := f.History(ctx, "c", 3)
		if err != nil {
			t.Fatal(err)
		}
		kept = append(kept, held{h, contents(h)})
		_ = append(h, Turn{Role: "user", Content: "the reader's own turn"})
		if err := f.Append(ctx, "c", exchange(fmt.Sprintf("question %d", i), fmt.Sprintf("answer %d", i)), Meta{}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	for i, h := range kept {
		if d := cmp.Diff(h.want, contents(h.turns)); d != "" {
			t.Errorf("history %d changed after it was handed out (-then +now):\n%s", i, d)
		}
	}
	got, _ := f.History(ctx, "c", 4)
	want, _ := st.History(ctx, "c", 4)
	if d := cmp.Diff(want, got, ignoreAt); d != "" {
		t.Errorf("History after the saves differs from the store (-store +cache):\n%s", d)
	}
}

// TestFastPathSameAnswers runs one sequence of appends, lookups and a deletion against the
// decorated and the plain store: every answer must be the same.
func TestFastPathSameAnswers(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	f, cs := newFast(t, st)
	fd := fastDeleter{f}
	type step struct {
		op, conv, text string
		limit          int
	}
	steps := []step{
		{"append", "a", "how to paginate sqlite queries with keyset pagination", 0},
		{"similar", "me", "keyset pagination sqlite", 3},
		{"similar", "me", "keyset pagination sqlite", 3}, // cached
		{"append", "b", "sqlite keyset pagination for the orders listing", 0},
		{"similar", "me", "keyset pagination sqlite", 3}, // b is new: not the cached answer
		{"history", "a", "", 4},
		{"history", "b", "", 1},
		{"append", "a", "and keyset pagination backwards", 0},
		{"history", "a", "", 3},
		{"history", "a", "", 0},
		{"delete", "b", "", 0},
		{"similar", "me", "keyset pagination sqlite", 3}, // b is gone
		{"history", "b", "", 4},
		{"append", "b", "kubernetes ingress timeouts", 0}, // b again, after its deletion
		{"history", "b", "", 4},
		{"similar", "a", "kubernetes ingress", 3},
		{"history", "nobody", "", 4},
	}
	for i, s := range steps {
		var want, got any
		var err error
		switch s.op {
		case "append":
			if err := f.Append(ctx, s.conv, exchange(s.text, "answer: "+s.text), Meta{}); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			continue
		case "delete":
			if _, err := fd.Delete(ctx, s.conv); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			continue
		case "history":
			want, _ = st.History(ctx, s.conv, s.limit)
			got, err = f.History(ctx, s.conv, s.limit)
		case "similar":
			want, _ = st.Similar(ctx, s.text, s.conv, "", s.limit)
			got, err = f.Similar(ctx, s.text, s.conv, "", s.limit)
		}
		if err != nil {
			t.Fatalf("step %d %v: %v", i, s, err)
		}
		if d := cmp.Diff(want, got, ignoreAt, cmpopts.EquateEmpty()); d != "" {
			t.Errorf("step %d %v: decorated answer differs (-store +decorated):\n%s", i, s, d)
		}
	}
	st1 := f.Stats()
	if st1.SimilarHits == 0 || st1.HistoryHits == 0 || st1.UnknownSkipped == 0 {
		t.Errorf("no step was answered from memory: %+v", st1)
	}
	if n := cs.similar.Load(); n != 4 {
		t.Errorf("%d similar searches reached the store for 5 lookups; want 4 (the repeat cached, the rest invalidated)", n)
	}
}

// gateStore holds every lookup until released and says when one has started.
type gateStore struct {
	entered chan struct{}
	release chan struct{}
}

func (g gateStore) History(ctx context.Context, _ string, _ int) ([]Turn, error) {
	g.entered <- struct{}{}
	<-g.release
	return nil, nil
}
func (g gateStore) Append(context.Context, string, []Turn, Meta) error { return nil }
func (g gateStore) Similar(ctx context.Context, _, _, _ string, _ int) ([]Interaction, error) {
	g.entered <- struct{}{}
	<-g.release
	return nil, nil
}

func TestFastPathSaturatedSkipsAtOnce(t *testing.T) {
	g := gateStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	cfg := testConfig()
	cfg.LoadTimeout = time.Hour // only the lookup limit can make Enrich return
	cfg.MaxLookups = 1
	m := New(cfg, g, nil)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	held := make(chan error, 1)
	go func() {
		_, err := m.store.History(context.Background(), "other", 40)
		held <- err
	}()
	<-g.entered // the one slot is taken
	req := parse(t, body("user", "how do I rotate oauth tokens"))
	res := m.Enrich(context.Background(), req, Input{ConversationID: "c", Role: roles.General})
	if !errors.Is(res.Err, ErrBusy) || res.HistoryMessages != 0 || len(req.Messages) != 1 {
		t.Errorf("result %+v, %d messages: want ErrBusy and an unchanged request", res, len(req.Messages))
	}
	s := m.Stats()
	if s.SkippedBusy != 1 || s.LoadFailures != 0 || s.FastPath == nil || s.FastPath.Busy != 2 {
		t.Errorf("stats %+v (fast path %+v): want 1 request skipped_busy (2 lookups), no load failure", s, s.FastPath)
	}
	close(g.release)
	if err := <-held; err != nil {
		t.Errorf("the lookup holding the slot: %v", err)
	}
}

func TestFastPathLargeHistoryNotCached(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	f, cs := newFast(t, st)
	big := strings.Repeat("file contents ", historyEntryBytes/10)
	if err := f.Append(ctx, "agent", exchange("read the whole repository", big), Meta{named: true}); err != nil {
		t.Fatal(err)
	}
	if err := f.Append(ctx, "small", exchange("hi", "hello"), Meta{named: true}); err != nil {
		t.Fatal(err)
	}
	got, err := f.History(ctx, "agent", 40)
	if err != nil || len(got) != 2 || got[1].Content != big || cs.history.Load() != 1 {
		t.Errorf("large conversation: %d turns, %v, %d store calls; want both turns from the store", len(got), err, cs.history.Load())
	}
	f.mu.Lock()
	_, cachedBig := f.hist["agent"]
	_, cachedSmall := f.hist["small"]
	bytes := f.histBytes
	f.mu.Unlock()
	if cachedBig || !cachedSmall || bytes <= 0 || bytes > historyEntryBytes {
		t.Errorf("cache holds agent=%v small=%v in %d bytes; want only the small conversation", cachedBig, cachedSmall, bytes)
	}
}

func TestFastPathSimilarSharesOneSearch(t *testing.T) {
	g := gateStore{entered: make(chan struct{}, 2), release: make(chan struct{})}
	f := NewFastPath(g, FastPathOptions{MaxLookups: 4}).(*FastPath)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := f.Similar(ctx, "oauth token rotation", "me", "", 3)
		first <- err
	}()
	<-g.entered // the first search is at the store
	second := make(chan error, 1)
	go func() {
		_, err := f.Similar(ctx, "oauth token rotation", "me", "", 3)
		second <- err
	}()
	for f.simHits.Load() == 0 && len(g.entered) == 0 { // the second waits for the first, or asked the store
		runtime.Gosched()
	}
	close(g.release)
	if err := errors.Join(<-first, <-second); err != nil {
		t.Fatal(err)
	}
	if n := len(g.entered); n != 0 {
		t.Errorf("%d more searches reached the store; the identical one should have waited for the first", n)
	}
}

// TestTurnHashReads: a turn's hash, by which the writer tells stored turns from new ones,
// reads the role, the trimmed text, tool call ids and function names, and not the
// arguments' text.
func TestTurnHashReads(t *testing.T) {
	call := func(id, name, args string) json.RawMessage {
		return json.RawMessage(`[{"id":"` + id + `","type":"function","function":{"name":"` + name + `","arguments":"` + args + `"}}]`)
	}
	stored := []Turn{
		{Role: "user", Content: "list the files"},
		{Role: "assistant", Content: "", ToolCalls: call("call_1", "list_files", "{}")},
		{Role: "tool", Content: "a.go b.go", ToolCallID: "call_1"},
		{Role: "assistant", Content: "two files"},
	}
	set := map[string]bool{}
	for _, s := range stored {
		set[s.hash()] = true
	}
	for _, tc := range []struct {
		asked  Turn
		stored bool
		why    string
	}{
		{Turn{Role: "user", Content: "  list the files\n"}, true, "same after trimming"},
		{Turn{Role: "user", Content: "list the file"}, false, "different text"},
		{Turn{Role: "assistant", Content: "list the files"}, false, "different role"},
		{Turn{Role: "assistant", ToolCalls: call("call_1", "list_files", `{\"x\":1}`)}, true, "arguments are not hashed"},
		{Turn{Role: "assistant", ToolCalls: call("call_2", "list_files", "{}")}, false, "another call id"},
		{Turn{Role: "assistant", ToolCalls: call("call_1", "read_file", "{}")}, false, "another function"},
		{Turn{Role: "tool", Content: "a.go b.go", ToolCallID: "call_2"}, false, "answers another call"},
		{Turn{Role: "tool", Content: "a.go b.go", ToolCallID: "call_1"}, true, "the stored result"},
		{Turn{Role: "assistant", Content: "two files", ToolCalls: call("call_9", "x", "{}")}, false, "text alike, calls not"},
	} {
		if got := set[tc.asked.hash()]; got != tc.stored {
			t.Errorf("%+v (%s): hashes like a stored turn = %v, want %v", tc.asked, tc.why, got, tc.stored)
		}
	}
}
