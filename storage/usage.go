package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Usage is one row of the public usage table.
type Usage struct {
	CreatedAt        time.Time
	RequestID        string
	Backend          string
	Model            string
	Role             string
	ConversationID   string
	Profile          string
	Stream           bool
	StatusCode       int
	PromptTokens     int
	CompletionTokens int
	TotalTokens      int
	TokensEstimated  bool
	LatencyMS        int64
	TTFTMS           int64
	Error            string
	Attempts         int
}

// UsageWriter writes usage rows in batches on a background goroutine. Record never blocks:
// when the queue is full the row is dropped and counted. Close flushes what is queued.
type UsageWriter struct {
	db       *DB
	log      *slog.Logger
	queue    *Queue[Usage]
	interval time.Duration

	written  atomic.Int64
	dropped  atomic.Int64
	failed   atomic.Int64
	lastErr  atomic.Value // string
	onCommit []func([]Usage)
}

// UsageStats are the writer's counters, shown in /status.
type UsageStats struct {
	Queued    int    `json:"queued"`
	Capacity  int    `json:"capacity"`
	Written   int64  `json:"written"`
	Dropped   int64  `json:"dropped"`
	Failed    int64  `json:"failed"`
	LastError string `json:"last_error,omitempty"`
}

// NewUsageWriter starts a writer with a queue of size rows, flushing at least every interval.
func NewUsageWriter(db *DB, log *slog.Logger, size int, interval time.Duration) *UsageWriter {
	w := &UsageWriter{db: db, log: log, queue: NewQueue[Usage](size), interval: interval}
	go w.run()
	return w
}

// OnCommit registers f to be called (on the writer goroutine) with every batch after it is
// committed. It must be called before the first Record.
func (w *UsageWriter) OnCommit(f func([]Usage)) { w.onCommit = append(w.onCommit, f) }

// Record queues a row. It never blocks; it reports false when the row was dropped.
func (w *UsageWriter) Record(u Usage) bool {
	if w.queue.Offer(u) {
		return true
	}
	n := w.dropped.Add(1)
	if n == 1 || n%100 == 0 {
		w.log.Warn("usage queue full or closed, row dropped", "request_id", u.RequestID, "dropped_total", n)
	}
	return false
}

// Stats returns the writer's counters.
func (w *UsageWriter) Stats() UsageStats {
	s := UsageStats{Queued: w.queue.Len(), Capacity: w.queue.Cap(), Written: w.written.Load(), Dropped: w.dropped.Load(), Failed: w.failed.Load()}
	s.LastError, _ = w.lastErr.Load().(string)
	return s
}

// Close stops accepting rows, writes everything queued and waits (up to ctx) for it.
func (w *UsageWriter) Close(ctx context.Context) error {
	if err := w.queue.Close(ctx); err != nil {
		return fmt.Errorf("storage: flushing usage: %w", err)
	}
	return nil
}

const maxBatch = 256

func (w *UsageWriter) run() {
	defer w.queue.Finish()
	batch := make([]Usage, 0, maxBatch)
	ticker := time.NewTicker(w.interval)
	defer ticker.Stop()
	// The writer wakes on its ticker, or early when the queue is half full or closed, and
	// takes what is queued: a request's Record never wakes it (one goroutine switch less
	// per request), and a row still waits at most one interval.
	for {
		select {
		case <-ticker.C:
		case <-w.queue.Ready():
		}
		for taking := true; taking; {
			select {
			case u, ok := <-w.queue.Items():
				if !ok {
					w.flush(batch)
					return
				}
				batch = append(batch, u)
				if len(batch) >= maxBatch {
					w.flush(batch)
					batch = batch[:0]
				}
			default:
				taking = false
			}
		}
		if len(batch) > 0 {
			w.flush(batch)
			batch = batch[:0]
		}
	}
}

const insertUsage = `INSERT INTO usage (created_at, request_id, backend, model, role, conversation_id, profile, stream,
	status_code, prompt_tokens, completion_tokens, total_tokens, tokens_estimated, latency_ms, ttft_ms, error, attempts)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// flush writes a batch in one transaction, retrying once on failure; rows that still fail
// are counted, never silently lost.
func (w *UsageWriter) flush(batch []Usage) {
	if len(batch) == 0 {
		return
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if err = w.insert(batch); err == nil {
			w.written.Add(int64(len(batch)))
			for _, f := range w.onCommit {
				f(batch)
			}
			return
		}
		time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
	}
	w.failed.Add(int64(len(batch)))
	w.lastErr.Store(err.Error())
	w.log.Error("writing usage rows failed", "rows", len(batch), "err", err)
}

func (w *UsageWriter) insert(batch []Usage) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: begin: %w", err)
	}
	defer tx.Rollback()
	ctx = StmtContext(ctx)
	stmt, err := tx.PrepareContext(ctx, insertUsage)
	if err != nil {
		return fmt.Errorf("storage: prepare: %w", err)
	}
	defer stmt.Close()
	for _, u := range batch {
		attempts := u.Attempts
		if attempts == 0 {
			attempts = 1
		}
		if _, err := stmt.ExecContext(ctx, u.CreatedAt.UTC().Format(time.RFC3339Nano), u.RequestID, u.Backend, u.Model, u.Role,
			u.ConversationID, u.Profile, boolInt(u.Stream), u.StatusCode, u.PromptTokens, u.CompletionTokens, u.TotalTokens,
			boolInt(u.TokensEstimated), u.LatencyMS, u.TTFTMS, u.Error, attempts); err != nil {
			return fmt.Errorf("storage: insert usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("storage: commit usage: %w", err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
