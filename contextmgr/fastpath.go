package contextmgr

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// ErrBusy is returned by a FastPath lookup when MaxLookups lookups are already running: the
// request goes on at once without that part of its context instead of queueing for it.
var ErrBusy = errors.New("contextmgr: store busy, lookup skipped")

// FastPathOptions configure a FastPath.
type FastPathOptions struct {
	// Exclusive says every write to the store goes through this FastPath (the embedded
	// store, written only by this process): a conversation it has not seen does not exist,
	// and cached history stays exact. Without it only the similar-interactions cache (with
	// its TTL) and the lookup limit apply.
	Exclusive bool
	// HistoryTurns is how many recent turns are kept per cached conversation (the manager's
	// history_turns).
	HistoryTurns int
	// MaxLookups caps concurrent History and Similar calls to the store; 0: no cap.
	MaxLookups int
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

const (
	// knownCap bounds the set of known conversation ids (8 bytes each). A store with more
	// conversations keeps every lookup (correct, just not faster).
	knownCap = 1 << 20
	// historyCacheSize is how many conversations keep their recent turns in memory, in at
	// most historyCacheBytes of text; a conversation whose recent turns are larger than
	// historyEntryBytes (an agent's file contents in tool results) is not kept.
	historyCacheSize  = 512
	historyCacheBytes = 16 << 20
	historyEntryBytes = 256 << 10
	// similarCacheSize and similarTTL bound the similar-interactions cache.
	similarCacheSize = 256
	similarTTL       = 10 * time.Second
	// knownLoadTimeout bounds the startup listing of conversation ids.
	knownLoadTimeout = 30 * time.Second
)

// FastPath decorates a Store for the request path: lookups that can be answered from
// memory are, and the rest are bounded.
//
//   - Known conversations (Exclusive only): the ids of every stored conversation, listed
//     once at startup and extended by Append, as 64-bit hashes. History of a conversation
//     not in the set is empty without a query, so the first turn of a task costs nothing.
//     A hash collision only costs the query the set would have saved.
//   - History cache (Exclusive only): the last HistoryTurns turns of recently used
//     conversations, kept current by Append and dropped by Delete.
//   - Similar cache: results by (query, exclude, profile, limit) for similarTTL. An Append to a
//     conversation other than exclude, and any Delete, drop the affected entries and any
//     lookup in flight, so a cached answer is what the store would say, up to the corpus
//     statistics (BM25 weights) moved by appends to the excluded conversation itself, and,
//     for a store written by others too (MCP), their writes for up to similarTTL.
//     Concurrent identical lookups share one store call.
//   - MaxLookups: past it a lookup fails at once with ErrBusy.
type FastPath struct {
	inner Store
	opt   FastPathOptions
	sem   chan struct{}
	seed  maphash.Seed

	mu         sync.Mutex
	known      map[uint64]struct{}
	knownReady bool          // the startup listing completed and fit in knownCap
	loaded     chan struct{} // closed when the startup listing has ended (or was not started)
	hist       map[string]histEntry
	histBytes  int        // sum of the cached entries' sizes
	histGen    [64]uint64 // bumped per conversation stripe by Append and Delete
	// histWriting counts the appends in progress per stripe: a load that ends while one is
	// may hold its turns, which appended is about to add to the entry.
	histWriting [64]int
	sims        map[simKey]*simLoad
	simPending  map[simKey]*simLoad

	unknownHits atomic.Int64
	histHits    atomic.Int64
	histMisses  atomic.Int64
	simHits     atomic.Int64
	simMisses   atomic.Int64
	busy        atomic.Int64
}

// FastPathStats are the decorator's counters, shown in /status under context.fast_path.
type FastPathStats struct {
	KnownConversations int   `json:"known_conversations"`
	KnownReady         bool  `json:"known_ready"`
	UnknownSkipped     int64 `json:"history_unknown_skipped"`
	HistoryHits        int64 `json:"history_cache_hits"`
	HistoryMisses      int64 `json:"history_cache_misses"`
	SimilarHits        int64 `json:"similar_cache_hits"`
	SimilarMisses      int64 `json:"similar_cache_misses"`
	Busy               int64 `json:"lookups_busy"`
}

// histEntry is a conversation's last turns; all says they are the whole conversation.
type histEntry struct {
	turns []Turn // never modified in place: appended turns go after them (see appended)
	all   bool
	size  int
	// through is the last queued exchange of the conversation the entry holds (0: not
	// known, an entry loaded from the store): the exchanges queued after it are not in it.
	through uint64
}

// turnsSize approximates the memory turns hold.
func turnsSize(turns []Turn) int {
	n := 0
	for _, t := range turns {
		n += 96 + len(t.Role) + len(t.Content) + len(t.ToolCalls) + len(t.ToolCallID)
	}
	return n
}

type simKey struct {
	query, exclude, profile string
	limit                   int
}

// simLoad is a similar-interactions lookup: in flight until done is closed, then a cache
// entry when it succeeded and nothing invalidated it meanwhile.
type simLoad struct {
	exclude string
	done    chan struct{}
	res     []Interaction
	err     error
	at      time.Time
	stale   bool
}

// conversationLister is the optional ability of a store to list its conversation ids, up
// to limit of them; complete is false when there were more.
type conversationLister interface {
	conversationIDs(ctx context.Context, limit int, fn func(id string)) (complete bool, err error)
}

// NewFastPath returns inner decorated; the result can delete when inner can. With
// Exclusive it starts listing inner's conversations in the background; until that is done
// History asks the store.
func NewFastPath(inner Store, opt FastPathOptions) Store {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	f := &FastPath{inner: inner, opt: opt, seed: maphash.MakeSeed(),
		hist: map[string]histEntry{}, sims: map[simKey]*simLoad{}, simPending: map[simKey]*simLoad{}, loaded: make(chan struct{})}
	if opt.MaxLookups > 0 {
		f.sem = make(chan struct{}, opt.MaxLookups)
	}
	if l, ok := inner.(conversationLister); ok && opt.Exclusive {
		f.known = map[uint64]struct{}{}
		go f.loadKnown(l)
	} else {
		close(f.loaded)
	}
	if _, ok := inner.(Deleter); ok {
		return fastDeleter{f}
	}
	return f
}

// writerStore is the store the background writer uses: a FastPath's caches without its
// lookup limit (a save must not be skipped because requests are busy), else store itself.
func writerStore(store Store) Store {
	switch f := store.(type) {
	case *FastPath:
		return unbounded{f}
	case fastDeleter:
		return unbounded{f.FastPath}
	}
	return store
}

// unbounded is a FastPath whose History ignores MaxLookups.
type unbounded struct{ *FastPath }

// History implements Store.
func (u unbounded) History(ctx context.Context, conversationID string, limit int) ([]Turn, error) {
	return u.history(ctx, conversationID, limit, false)
}

// CountStored counts which of hashes a conversation already holds: none for a
// conversation this process never stored (no query), else from the inner store, else from
// its history.
func (f *FastPath) CountStored(ctx context.Context, conversationID string, hashes []string) (map[string]int, error) {
	if f.opt.Exclusive {
		f.mu.Lock()
		_, ok := f.known[f.idHash(conversationID)]
		unknown := f.knownReady && !ok
		f.mu.Unlock()
		if unknown {
			f.unknownHits.Add(1)
			return map[string]int{}, nil
		}
	}
	if sc, ok := f.inner.(storedCounter); ok {
		return sc.CountStored(ctx, conversationID, hashes)
	}
	return countFromHistory(ctx, f.inner, conversationID, hashes)
}

// fastDeleter is a FastPath on a store that can delete.
type fastDeleter struct{ *FastPath }

// Delete implements Deleter: the conversation leaves the caches once the store removed it.
func (f fastDeleter) Delete(ctx context.Context, conversationID string) (int64, error) {
	n, err := f.inner.(Deleter).Delete(ctx, conversationID)
	f.mu.Lock()
	f.dropHist(conversationID)
	f.histGen[f.stripe(conversationID)]++
	f.invalidateSimilar(func(*simLoad) bool { return true })
	f.mu.Unlock()
	return n, err
}

func (f *FastPath) loadKnown(l conversationLister) {
	ctx, cancel := context.WithTimeout(context.Background(), knownLoadTimeout)
	defer cancel()
	var ids []uint64
	complete, err := l.conversationIDs(ctx, knownCap, func(id string) { ids = append(ids, f.idHash(id)) })
	f.mu.Lock()
	defer f.mu.Unlock()
	defer close(f.loaded)
	if err != nil || !complete {
		f.known = nil // History keeps asking the store
		return
	}
	for _, h := range ids {
		f.known[h] = struct{}{}
	}
	f.knownReady = true
}

func (f *FastPath) idHash(id string) uint64 { return maphash.String(f.seed, id) }

func (f *FastPath) stripe(id string) int { return int(f.idHash(id) % uint64(len(f.histGen))) }

// Stats returns the counters.
func (f *FastPath) Stats() FastPathStats {
	f.mu.Lock()
	s := FastPathStats{KnownConversations: len(f.known), KnownReady: f.knownReady}
	f.mu.Unlock()
	s.UnknownSkipped, s.HistoryHits, s.HistoryMisses = f.unknownHits.Load(), f.histHits.Load(), f.histMisses.Load()
	s.SimilarHits, s.SimilarMisses, s.Busy = f.simHits.Load(), f.simMisses.Load(), f.busy.Load()
	return s
}

// acquire takes a lookup slot without waiting.
func (f *FastPath) acquire() bool {
	if f.sem == nil {
		return true
	}
	select {
	case f.sem <- struct{}{}:
		return true
	default:
		f.busy.Add(1)
		return false
	}
}

func (f *FastPath) release() {
	if f.sem != nil {
		<-f.sem
	}
}

// tail returns the last limit turns (limit <= 0: all), capped so that appending to the
// result never writes into the cache.
func tail(turns []Turn, limit int) []Turn {
	if limit > 0 && len(turns) > limit {
		turns = turns[len(turns)-limit:]
	}
	return turns[:len(turns):len(turns)]
}

// History implements Store.
func (f *FastPath) History(ctx context.Context, conversationID string, limit int) ([]Turn, error) {
	return f.history(ctx, conversationID, limit, true)
}

// history answers from memory when it can; bounded lookups are subject to MaxLookups.
func (f *FastPath) history(ctx context.Context, conversationID string, limit int, bounded bool) ([]Turn, error) {
	st := f.stripe(conversationID)
	h, _, gen, ok := f.historyFromMemory(conversationID, limit, true)
	if ok {
		return h, nil
	}
	if bounded {
		if !f.acquire() {
			return nil, ErrBusy
		}
		defer f.release()
	}
	h, err := f.inner.History(ctx, conversationID, limit)
	if err != nil || !f.opt.Exclusive || f.opt.HistoryTurns <= 0 {
		return h, err
	}
	e := histEntry{turns: tail(h, f.opt.HistoryTurns), all: len(h) <= f.opt.HistoryTurns && (limit <= 0 || len(h) < limit)}
	f.mu.Lock()
	if f.histGen[st] == gen && f.histWriting[st] == 0 { // no Append or Delete raced with the load
		f.putHist(conversationID, e)
	}
	f.mu.Unlock()
	return h, nil
}

// historyFromMemory answers History from memory (ok), with the entry's through (see
// histEntry), else returns the generation of the conversation's stripe to load against.
func (f *FastPath) historyFromMemory(conversationID string, limit int, countMiss bool) (turns []Turn, through, gen uint64, ok bool) {
	if !f.opt.Exclusive {
		return nil, 0, 0, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, known := f.known[f.idHash(conversationID)]; f.knownReady && !known {
		f.unknownHits.Add(1)
		return nil, 0, 0, true
	}
	if e, cached := f.hist[conversationID]; cached && (e.all || (limit > 0 && limit <= len(e.turns))) {
		f.histHits.Add(1)
		return tail(e.turns, limit), e.through, 0, true
	}
	if countMiss {
		f.histMisses.Add(1)
	}
	return nil, 0, f.histGen[f.stripe(conversationID)], false
}

// cachedHistory is History when memory can answer it (ok), without touching the store: the
// request path asks it first and starts a bounded lookup only when it cannot. through is
// the last queued exchange of the conversation the answer holds (0: not known; none for a
// conversation that is not stored).
func (f *FastPath) cachedHistory(conversationID string, limit int) (turns []Turn, through uint64, ok bool) {
	turns, through, _, ok = f.historyFromMemory(conversationID, limit, false)
	return turns, through, ok
}

// cachedSimilar is Similar when a fresh cached result answers it (ok).
func (f *FastPath) cachedSimilar(query, exclude, profile string, limit int) ([]Interaction, bool) {
	k := simKey{query: query, exclude: exclude, profile: profile, limit: limit}
	now := f.opt.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.sims[k]; ok && now.Sub(l.at) < similarTTL {
		f.simHits.Add(1)
		return l.res[:len(l.res):len(l.res)], true
	}
	return nil, false
}

// putHist caches e (or drops conv's entry when e is too large), evicting arbitrary
// entries while the cache is full. Call with mu held.
func (f *FastPath) putHist(conv string, e histEntry) {
	f.dropHist(conv)
	e.size = turnsSize(e.turns)
	if e.size > historyEntryBytes {
		return
	}
	for k := range f.hist {
		if len(f.hist) < historyCacheSize && f.histBytes+e.size <= historyCacheBytes {
			break
		}
		f.dropHist(k)
	}
	f.hist[conv] = e
	f.histBytes += e.size
}

// dropHist removes conv's cached history. Call with mu held.
func (f *FastPath) dropHist(conv string) {
	if e, ok := f.hist[conv]; ok {
		f.histBytes -= e.size
		delete(f.hist, conv)
	}
}

// Append implements Store: after the store took the turns, the caches follow.
func (f *FastPath) Append(ctx context.Context, conversationID string, turns []Turn, meta Meta) error {
	f.writing(AppendItem{Conv: conversationID})
	err := f.inner.Append(ctx, conversationID, turns, meta)
	return f.appended(conversationID, turns, meta, err)
}

// AppendBatch saves several conversations in one call when the inner store can (else one
// Append each) and brings the caches up to date for each.
func (f *FastPath) AppendBatch(ctx context.Context, items []AppendItem) error {
	ba, ok := f.inner.(batchAppender)
	if !ok {
		var errs []error
		for _, it := range items {
			errs = append(errs, f.Append(ctx, it.Conv, it.Turns, it.Meta))
		}
		return errors.Join(errs...)
	}
	f.writing(items...)
	err := ba.AppendBatch(ctx, items)
	for _, it := range items {
		f.appended(it.Conv, it.Turns, it.Meta, err)
	}
	return err
}

// writing notes the items' appends in progress, each until appended.
func (f *FastPath) writing(items ...AppendItem) {
	f.mu.Lock()
	for _, it := range items {
		f.histWriting[f.stripe(it.Conv)]++
	}
	f.mu.Unlock()
}

// batchable reports whether AppendBatch saves in one transaction (the inner store batches).
func (f *FastPath) batchable() bool {
	_, ok := f.inner.(batchAppender)
	return ok
}

// appended updates the caches after turns were (err == nil) or may have been appended, by
// the exchange meta describes.
func (f *FastPath) appended(conversationID string, turns []Turn, meta Meta, err error) error {
	seq := meta.seq
	f.mu.Lock()
	defer f.mu.Unlock()
	f.histWriting[f.stripe(conversationID)]--
	if err == nil && len(turns) == 0 {
		// Nothing changed, but the cached history is current up to seq.
		if e, ok := f.hist[conversationID]; ok && seq > 0 {
			e.through = max(e.through, seq)
			f.hist[conversationID] = e
		}
		return nil
	}
	f.histGen[f.stripe(conversationID)]++
	f.invalidateSimilar(func(l *simLoad) bool { return err != nil || l.exclude != conversationID })
	if err != nil {
		f.dropHist(conversationID) // the store may or may not have it: ask next time
		return err
	}
	h := f.idHash(conversationID)
	_, wasKnown := f.known[h]
	if f.known != nil && len(f.known) < knownCap {
		f.known[h] = struct{}{}
	} else if f.known != nil {
		f.known, f.knownReady = nil, false // too many to track: History asks the store
	}
	if !f.opt.Exclusive || f.opt.HistoryTurns <= 0 {
		return nil
	}
	limit, at := f.opt.HistoryTurns, f.opt.Now()
	if e, ok := f.hist[conversationID]; ok {
		// The new turns go after the entry's, in its array's spare room: readers hold
		// views that end where the entry ended (tail caps them), so nothing they see is
		// written. When the room runs out, the last turns move to a new array with room
		// for as many again: a busy conversation's history is copied once every limit
		// turns, not on every save.
		all := e.turns
		if cap(all)-len(all) < len(turns) {
			all = append(make([]Turn, 0, len(all)+len(turns)+limit), all...)
		}
		all = appendNormalized(all, turns, at)
		kept := all
		if len(kept) > limit {
			kept = kept[len(kept)-limit:]
		}
		f.putHist(conversationID, histEntry{turns: kept, all: e.all && len(all) <= limit, through: seq})
	} else if f.knownReady && !wasKnown && meta.named {
		// A new conversation: these turns are all of it. (One whose key is derived from its
		// first messages is not kept: its history is never read.)
		all := appendNormalized(make([]Turn, 0, len(turns)+limit), turns, at)
		f.putHist(conversationID, histEntry{turns: all[max(len(all)-limit, 0):], all: len(all) <= limit, through: seq})
	}
	return nil
}

// appendNormalized appends turns to dst as the store returns them: no empty tool calls,
// the save time.
func appendNormalized(dst, turns []Turn, at time.Time) []Turn {
	at = at.UTC()
	for _, t := range turns {
		if len(t.ToolCalls) == 0 {
			t.ToolCalls = nil
		}
		t.At = at
		dst = append(dst, t)
	}
	return dst
}

// invalidateSimilar drops the cached and in-flight similar lookups drop selects. Call
// with mu held.
func (f *FastPath) invalidateSimilar(drop func(*simLoad) bool) {
	for k, l := range f.sims {
		if drop(l) {
			delete(f.sims, k)
		}
	}
	for _, l := range f.simPending {
		if drop(l) {
			l.stale = true
		}
	}
}

// Similar implements Store.
func (f *FastPath) Similar(ctx context.Context, query, exclude, profile string, limit int) ([]Interaction, error) {
	if res, ok := f.cachedSimilar(query, exclude, profile, limit); ok {
		return res, nil
	}
	k := simKey{query: query, exclude: exclude, profile: profile, limit: limit}
	now := f.opt.Now()
	f.mu.Lock()
	if l, ok := f.sims[k]; ok && now.Sub(l.at) >= similarTTL {
		delete(f.sims, k)
	}
	if l, ok := f.simPending[k]; ok && !l.stale {
		f.mu.Unlock()
		f.simHits.Add(1)
		select {
		case <-l.done:
			return l.res[:len(l.res):len(l.res)], l.err
		case <-ctx.Done():
			return nil, fmt.Errorf("contextmgr: waiting for a similar search: %w", ctx.Err())
		}
	}
	f.mu.Unlock()
	f.simMisses.Add(1)
	if !f.acquire() {
		return nil, ErrBusy
	}
	l := &simLoad{exclude: exclude, done: make(chan struct{}), at: now}
	f.mu.Lock()
	f.simPending[k] = l
	f.mu.Unlock()
	// The store call runs to its end even when this caller gives up, so that waiters
	// sharing it get its answer; ctx still bounds it.
	l.res, l.err = f.inner.Similar(ctx, query, exclude, profile, limit)
	f.release()
	f.mu.Lock()
	if f.simPending[k] == l {
		delete(f.simPending, k)
	}
	if l.err == nil && !l.stale {
		if len(f.sims) >= similarCacheSize {
			for kk := range f.sims {
				delete(f.sims, kk)
				break
			}
		}
		f.sims[k] = l
	}
	f.mu.Unlock()
	close(l.done)
	return l.res[:len(l.res):len(l.res)], l.err
}

// busyOnly reports whether every error in errs is ErrBusy.
func busyOnly(errs []error) bool {
	for _, err := range errs {
		if !errors.Is(err, ErrBusy) {
			return false
		}
	}
	return len(errs) > 0
}

// conversationIDs implements conversationLister: the most recently updated first.
func (s *SQLiteStore) conversationIDs(ctx context.Context, limit int, fn func(id string)) (bool, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM conversations ORDER BY updated_at DESC LIMIT ?`, limit+1)
	if err != nil {
		return false, fmt.Errorf("contextmgr: listing conversations: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return false, fmt.Errorf("contextmgr: listing conversations: %w", err)
		}
		if n++; n > limit {
			return false, nil
		}
		fn(id)
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("contextmgr: listing conversations: %w", err)
	}
	return true, nil
}

// fastPath wraps the manager's store in a FastPath and sets the embedded store's load
// deadline.
func (m *Manager) fastPath(store Store) Store {
	_, embedded := store.(*SQLiteStore)
	if embedded && m.cfg.EmbeddedLoadTimeout > 0 {
		m.cfg.LoadTimeout = m.cfg.EmbeddedLoadTimeout
	}
	return NewFastPath(store, FastPathOptions{Exclusive: embedded, HistoryTurns: m.cfg.HistoryTurns, MaxLookups: m.cfg.MaxLookups})
}

// fastPathStats returns the counters of store when it is a FastPath.
func fastPathStats(store Store) *FastPathStats {
	if f, ok := store.(interface{ Stats() FastPathStats }); ok {
		s := f.Stats()
		return &s
	}
	return nil
}
