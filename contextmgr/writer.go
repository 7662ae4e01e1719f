package contextmgr

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// job is one unit of the background writer: an exchange to save, or a deletion.
type job struct {
	conv   string
	meta   Meta
	msgs   []backends.Message
	answer Turn
	// fresh says every one of msgs is a new turn (a thin request in a conversation the
	// client named, not Input.DerivedConversation): saved even when the conversation holds
	// the same words already. Otherwise msgs are the client's view of the conversation,
	// and only the turns the store lacks are saved.
	fresh bool
	del   chan error // set for deletions: the result goes here
	flush chan error // set for flushes: nil is sent when the writer reaches it
	seq   uint64     // an exchange's place in the queue (1, 2, ...; 0 for the rest)
}

// writer saves exchanges on one goroutine, in arrival order, off the request path. The
// queue is bounded: when it is full an exchange is dropped and counted.
type writer struct {
	store   Store
	deleter func(ctx context.Context, conv string) (int64, error)
	log     *slog.Logger
	timeout time.Duration
	linger  time.Duration // saveLinger; 0: never wait for more
	queue   *storage.Queue[job]

	// rawHashes remembers each message's turn hash by the message's exact bytes, across
	// batches (only the writer's goroutine uses it): an agent resends its whole
	// conversation every turn, and decoding and hashing every earlier message again was
	// most of a long conversation's save. Messages the validation cache keeps have the
	// hash as a memo instead (turnHashSlot). rawBytes is what its keys hold.
	rawHashes map[string]string
	rawBytes  int

	// What is queued and not yet saved, by conversation, so that a thin client's next turn
	// sees its previous exchange before the writer got to it (queuedTurns). Exchanges get
	// their seq under pmu as they are queued: seq order is queue order.
	pmu      sync.Mutex
	lastSeq  uint64
	pending  map[string][]*pendingSave
	started  uint64        // the last seq whose save has begun
	landed   atomic.Uint64 // every seq up to it has been handled (saved, or failed); set under pmu
	landedCh chan struct{} // closed when landed moves

	saved    atomic.Int64 // exchanges saved
	messages atomic.Int64 // messages appended
	dropped  atomic.Int64
	failed   atomic.Int64
	lastErr  atomic.Value // string
}

func newWriter(store Store, size int, timeout time.Duration, log *slog.Logger) *writer {
	w := &writer{store: store, log: log, timeout: timeout, linger: saveLinger, queue: storage.NewQueue[job](size)}
	go w.run()
	return w
}

// pendingSave is a queued exchange as queuedTurns reads it.
type pendingSave struct {
	seq     uint64
	msgs    []backends.Message // the job's (detached) messages
	answer  Turn
	turns   []Turn // what its save adds after what is stored: decoded on first use
	decoded bool
}

// enqueue queues an exchange without blocking; false means it was dropped.
func (w *writer) enqueue(j job) bool {
	w.pmu.Lock()
	w.lastSeq++
	j.seq = w.lastSeq
	j.meta.seq = j.seq
	queued := w.queue.Offer(j)
	if queued && j.meta.named { // only a named conversation's history is read
		if w.pending == nil {
			w.pending = map[string][]*pendingSave{}
		}
		w.pending[j.conv] = append(w.pending[j.conv], &pendingSave{seq: j.seq, msgs: j.msgs, answer: j.answer})
	}
	w.pmu.Unlock()
	if queued {
		return true
	}
	n := w.dropped.Add(1)
	if n == 1 || n%100 == 0 {
		w.log.Warn("context store queue full, exchange not saved", "request_id", j.meta.RequestID, "dropped_total", n)
	}
	return false
}

// delete runs a deletion after every save queued before it, waiting up to ctx.
func (w *writer) delete(ctx context.Context, conv string) error {
	res := make(chan error, 1)
	queued, err := w.queue.Send(ctx, job{conv: conv, del: res})
	switch {
	case err != nil:
		return fmt.Errorf("contextmgr: deleting %s: %w", conv, err)
	case !queued: // closed: nothing is saved any more, delete directly
		return w.doDelete(ctx, conv)
	}
	select {
	case err := <-res:
		return err
	case <-ctx.Done():
		return fmt.Errorf("contextmgr: deleting %s: %w", conv, ctx.Err())
	}
}

// sync waits until every exchange queued before it has been handled.
func (w *writer) sync(ctx context.Context) error {
	res := make(chan error, 1)
	if queued, err := w.queue.Send(ctx, job{flush: res}); err != nil || !queued {
		return err
	}
	select {
	case <-res:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *writer) doDelete(ctx context.Context, conv string) error {
	if w.deleter == nil {
		return ErrNoLocalStore
	}
	_, err := w.deleter(ctx, conv)
	return err
}

// close stops accepting exchanges and waits (up to ctx) for the queued ones to be saved.
func (w *writer) close(ctx context.Context) error {
	if err := w.queue.Close(ctx); err != nil {
		return fmt.Errorf("contextmgr: flushing saves: %w", err)
	}
	return nil
}

// maxSaveBatch caps how many queued exchanges one transaction saves.
const maxSaveBatch = 64

// saveLinger is how long a batch stays open for more exchanges while they come in quickly
// (the previous one was taken less than saveLinger before): under load one commit then
// serves several exchanges instead of each paying its own. An exchange after a quiet spell
// is saved at once, and a flush or a deletion closes the batch at once. A history read
// does not wait for the linger: what is queued is read from memory (queuedTurns). At 500
// exchanges a second, 50 ms against 10 ms saves ~11 % of the CPU per request (bench/ab.sh,
// roo-60k), 10 ms against 2 ms ~17 % more.
const saveLinger = 50 * time.Millisecond

func (w *writer) run() {
	defer w.queue.Finish()
	batching := w.batching()
	var next *job
	var lastTaken time.Time // when the writer last took an exchange
	var buf []job           // the batches' array, reused
	for {
		var j job
		if next != nil {
			j, next = *next, nil
		} else {
			var ok bool
			if j, ok = <-w.queue.Items(); !ok {
				return
			}
		}
		if j.flush != nil {
			j.flush <- nil
			continue
		}
		if j.del != nil {
			ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
			j.del <- w.doDelete(ctx, j.conv)
			cancel()
			continue
		}
		now := time.Now()
		busy := w.linger > 0 && now.Sub(lastTaken) < w.linger
		lastTaken = now
		// Take what else is queued (up to a flush or a deletion, which keep their place)
		// into one transaction, in arrival order; exchanges of one conversation are planned
		// in that order, each counting what the earlier ones add.
		batch := append(buf, j)
		if batching {
			var wait <-chan time.Time
			var timer *time.Timer
			if busy {
				timer = time.NewTimer(w.linger)
				wait = timer.C
			}
			for len(batch) < maxSaveBatch {
				k, open, got := w.take(wait)
				if !open || !got {
					break
				}
				if k.flush != nil || k.del != nil {
					next = &k
					break
				}
				lastTaken = time.Now()
				batch = append(batch, k)
			}
			if timer != nil {
				timer.Stop()
			}
		}
		w.begin(batch)
		if len(batch) == 1 || !w.saveBatch(batch) {
			for _, b := range batch {
				w.saveOne(b)
			}
		}
		w.land(batch)
		clear(batch) // holds nothing of the saved exchanges while idle
		buf = batch[:0]
	}
}

// begin notes that the batch's saves begin: from here a history read may or may not see
// them.
func (w *writer) begin(batch []job) {
	w.pmu.Lock()
	w.started = max(w.started, batch[len(batch)-1].seq)
	w.pmu.Unlock()
}

// land notes that the batch's saves have ended (the store and the fast path hold them, or
// they failed): they leave pending, and readers waiting on them go on.
func (w *writer) land(batch []job) {
	w.pmu.Lock()
	defer w.pmu.Unlock()
	for _, j := range batch {
		if j.seq == 0 {
			continue
		}
		w.landed.Store(max(w.landed.Load(), j.seq))
		list := w.pending[j.conv]
		for len(list) > 0 && list[0].seq <= j.seq { // queue order: j is the first
			list[0] = nil
			list = list[1:]
		}
		if len(list) == 0 {
			delete(w.pending, j.conv)
		} else {
			w.pending[j.conv] = list
		}
	}
	if w.landedCh != nil {
		close(w.landedCh)
		w.landedCh = nil
	}
}

// handled reports the last seq up to which every queued exchange has been handled: a
// history read after it sees every one of them that was saved.
func (w *writer) handled() uint64 { return w.landed.Load() }

// closedCh is a wait that is over at once.
var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// queuedTurns completes hist, a history read of conv once everything queued up to from was
// handled, with the turns its queued saves will add, keeping the last limit. after is the
// last exchange of conv the read is known to hold (a fast path entry's through), or 0 when
// that is not known (a read from the store): then from stands for it. When the read cannot
// be completed, wait is non-nil: read again once it is closed (an exchange was being
// written during the read, which may or may not hold it; or exchanges were handled since
// from, which may have left the queue unseen by the read).
func (w *writer) queuedTurns(conv string, hist []Turn, after, from uint64, limit int) (turns []Turn, wait <-chan struct{}) {
	w.pmu.Lock()
	defer w.pmu.Unlock()
	if w.landed.Load() != from {
		return hist, closedCh
	}
	list := w.pending[conv]
	if after == 0 {
		after = from
		for _, p := range list {
			if p.seq > from && p.seq <= w.started {
				if w.landedCh == nil {
					w.landedCh = make(chan struct{})
				}
				return hist, w.landedCh
			}
		}
	}
	// Newest first, up to limit turns.
	n, oldest := 0, len(list)
	for oldest > 0 && (limit <= 0 || n < limit) && list[oldest-1].seq > after {
		oldest--
		n += len(list[oldest].added())
	}
	if n == 0 {
		return hist, nil
	}
	total := len(hist) + n
	keep := total
	if limit > 0 {
		keep = min(total, limit)
	}
	out := make([]Turn, 0, keep)
	skip := total - keep
	if skip < len(hist) {
		out = append(out, hist[skip:]...)
	}
	skip = max(skip-len(hist), 0)
	for _, p := range list[oldest:] {
		ts := p.turns
		d := min(skip, len(ts))
		out, skip = append(out, ts[d:]...), skip-d
	}
	return out, nil
}

// newTurns is where the request's new turn starts in p.msgs: after the last answer.
func (p *pendingSave) newTurns() int {
	at := len(p.msgs)
	for at > 0 && p.msgs[at-1].Role != "assistant" {
		at--
	}
	return at
}

// added is what saving p appends after what the store holds: the messages after the last
// answer in the request (the new turn) and the answer. Call with pmu held.
func (p *pendingSave) added() []Turn {
	if p.decoded {
		return p.turns
	}
	p.decoded = true
	for i := p.newTurns(); i < len(p.msgs); i++ {
		p.turns = append(p.turns, turnOf(&p.msgs[i]))
	}
	if p.answer.Role != "" {
		p.turns = append(p.turns, p.answer)
	}
	return p.turns
}

// take takes the next queued item: at once when wait is nil, else waiting until wait
// fires. got is false when there was none; open is false when the queue is closed.
func (w *writer) take(wait <-chan time.Time) (k job, open, got bool) {
	if wait == nil {
		select {
		case k, open = <-w.queue.Items():
			return k, open, true
		default:
			return job{}, true, false
		}
	}
	select {
	case k, open = <-w.queue.Items():
		return k, open, true
	case <-wait:
		return job{}, true, false
	}
}

// batching reports whether the store saves several conversations in one transaction.
func (w *writer) batching() bool {
	if b, ok := w.store.(interface{ batchable() bool }); ok {
		return b.batchable()
	}
	_, ok := w.store.(batchAppender)
	return ok
}

// saveBatch saves a batch of exchanges in one transaction. On any failure nothing of it is
// stored and it reports false: the caller saves them one by one, with retries, re-planning
// each from what is stored.
func (w *writer) saveBatch(batch []job) bool {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	defer cancel()
	items, err := w.planBatch(ctx, batch)
	if err != nil {
		return false
	}
	if err := w.store.(batchAppender).AppendBatch(ctx, items); err != nil {
		return false
	}
	for _, it := range items {
		w.saved.Add(1)
		w.messages.Add(int64(len(it.Turns)))
	}
	return true
}

// saveOne saves one exchange; a store that is briefly away (SQLite busy, an MCP server
// reconnecting) gets two more tries; save re-reads what is stored, so a retry never
// duplicates.
func (w *writer) saveOne(j job) {
	ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
	n, err := w.save(ctx, j)
	cancel()
	for attempt := 1; err != nil && attempt < 3; attempt++ {
		time.Sleep(time.Duration(attempt) * 250 * time.Millisecond)
		ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
		n, err = w.save(ctx, j)
		cancel()
	}
	if err != nil {
		n := w.failed.Add(1)
		if prev, _ := w.lastErr.Swap(err.Error()).(string); n == 1 || n%100 == 0 || prev != err.Error() {
			w.log.Error("saving exchange failed", "request_id", j.meta.RequestID, "failed_total", n, "err", err)
		}
		return
	}
	w.saved.Add(1)
	w.messages.Add(int64(n))
}

// countFromHistory counts which of hashes a store's history of the conversation holds
// (for stores that cannot count by themselves).
func countFromHistory(ctx context.Context, store Store, conv string, hashes []string) (map[string]int, error) {
	stored, err := store.History(ctx, conv, 0)
	if err != nil {
		return nil, err
	}
	want := make(map[string]bool, len(hashes))
	for _, h := range hashes {
		want[h] = true
	}
	have := make(map[string]int, len(hashes))
	for _, t := range stored {
		if h := t.hash(); want[h] {
			have[h]++
		}
	}
	return have, nil
}

// save appends what the store does not have yet, then the answer. A turn the store already
// holds is skipped wherever it is in the request, not only in a leading run: a
// full-history client resends the whole conversation every turn, a thin client's
// prepended history is among the turns, and one turn that differs from what was stored
// (a message the client edited, or one stored in another form) must not make every turn
// after it a duplicate. Turns are counted, so a short answer given again ("yes") is new
// once the request holds it more often than the store.
func (w *writer) save(ctx context.Context, j job) (int, error) {
	add, err := w.plan(ctx, j)
	if err != nil {
		return 0, err
	}
	return len(add), w.store.Append(ctx, j.conv, add, j.meta)
}

// plan returns what save appends for j: the turns the store does not hold yet, then the
// answer.
func (w *writer) plan(ctx context.Context, j job) ([]Turn, error) {
	items, err := w.planBatch(ctx, []job{j})
	if err != nil {
		return nil, err
	}
	return items[0].Turns, nil
}

// convPlan is what planBatch knows of one conversation of a batch: the distinct hashes its
// exchanges carry, how often the store holds each, and how often the batch's earlier
// exchanges add each.
type convPlan struct {
	hashes  []string
	seen    map[string]bool
	stored  map[string]int
	pending map[string]int
}

// planBatch plans a batch of exchanges, in order, exactly as saving them one by one would:
// the store is asked once per conversation, and an exchange counts what the batch's earlier
// exchanges of its conversation append as already stored. A turn sent again by every
// request of a conversation is hashed once per batch.
func (w *writer) planBatch(ctx context.Context, batch []job) ([]AppendItem, error) {
	msgs := make([][]*backends.Message, len(batch)) // the conversation's (non-system) messages
	turns := make([][]Turn, len(batch))             // their turns, made only when needed
	hashes := make([][]string, len(batch))
	memo := turnHashes{}
	convs := map[string]*convPlan{}
	var order []string
	for i, j := range batch {
		for k := range j.msgs {
			if !isSystem(j.msgs[k].Role) {
				msgs[i] = append(msgs[i], &j.msgs[k])
			}
		}
		turns[i] = make([]Turn, len(msgs[i]))
		hashes[i] = make([]string, len(msgs[i]))
		c := convs[j.conv]
		if c == nil {
			c = &convPlan{seen: map[string]bool{}, pending: map[string]int{}}
			convs[j.conv] = c
			order = append(order, j.conv)
		}
		for k, m := range msgs[i] {
			h, ok := m.Memo(turnHashSlot).(string)
			if !ok {
				remembered := false
				if m.Raw != nil {
					h, remembered = w.rawHashes[string(m.Raw)]
				}
				if !remembered {
					turns[i][k] = turnOf(m)
					h = memo.hash(turns[i][k])
				}
				if !m.SetMemo(turnHashSlot, h) && !remembered {
					w.rememberHash(m.Raw, h)
				}
			}
			hashes[i][k] = h
			if !c.seen[h] {
				c.seen[h] = true
				c.hashes = append(c.hashes, h)
			}
		}
	}
	for _, conv := range order {
		c := convs[conv]
		var err error
		if c.stored, err = w.countStored(ctx, conv, c.hashes); err != nil {
			return nil, err
		}
	}
	items := make([]AppendItem, len(batch))
	for i, j := range batch {
		c := convs[j.conv]
		have := make(map[string]int, len(hashes[i]))
		for _, h := range hashes[i] {
			have[h] = c.stored[h] + c.pending[h]
		}
		add, addHashes := make([]Turn, 0, 2), make([]string, 0, 2)
		for k, h := range hashes[i] {
			if have[h] > 0 && !j.fresh {
				have[h]--
				continue
			}
			t := turns[i][k]
			if t.Role == "" { // its hash came from rawHashes
				t = turnOf(msgs[i][k])
			}
			add, addHashes = append(add, t), append(addHashes, h)
		}
		if j.answer.Role != "" {
			add, addHashes = append(add, j.answer), append(addHashes, memo.hash(j.answer))
		}
		for _, h := range addHashes {
			c.pending[h]++
		}
		items[i] = AppendItem{Conv: j.conv, Turns: add, Meta: j.meta, hashes: addHashes}
	}
	return items, nil
}

// turnHashSlot holds a message's turn hash as a memo of its bytes: for a message the
// validation cache keeps, which is most of a long conversation, no lookup by its bytes.
var turnHashSlot = backends.NewMemoSlot()

// maxRawHashes bounds the bytes rawHashes keeps (then it starts over): a long conversation
// of a few hundred KB, several at once.
const maxRawHashes = 4 << 20

// rememberHash notes the turn hash of the message with the exact bytes raw (nil: a message
// the proxy made or changed, not remembered).
func (w *writer) rememberHash(raw []byte, h string) {
	if raw == nil || len(raw) > maxRawHashes/8 {
		return
	}
	if w.rawHashes == nil || w.rawBytes+len(raw) > maxRawHashes {
		w.rawHashes, w.rawBytes = map[string]string{}, 0
	}
	w.rawHashes[string(raw)] = h
	w.rawBytes += len(raw)
}

// countStored counts how often the store holds each of hashes for conv.
func (w *writer) countStored(ctx context.Context, conv string, hashes []string) (map[string]int, error) {
	if sc, ok := w.store.(storedCounter); ok {
		return sc.CountStored(ctx, conv, hashes)
	}
	return countFromHistory(ctx, w.store, conv, hashes)
}

// turnHashes memoizes Turn.hash within a batch: the exchanges of one conversation resend
// the same turns (a full-history client sends all of them every time), and hashing a map
// key is much cheaper than SHA-256.
type turnHashes map[turnHashKey]string

type turnHashKey struct{ role, content, toolCalls, toolCallID string }

func (m turnHashes) hash(t Turn) string {
	k := turnHashKey{t.Role, t.Content, string(t.ToolCalls), t.ToolCallID}
	if h, ok := m[k]; ok {
		return h
	}
	h := t.hash()
	m[k] = h
	return h
}
