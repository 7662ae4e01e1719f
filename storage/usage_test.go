package storage_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

const testTimeout = 15 * time.Second

func openDB(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return db
}

func closeWriter(t *testing.T, w *storage.UsageWriter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func requestIDs(t *testing.T, db *storage.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT request_id FROM usage ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func row(i int) storage.Usage {
	return storage.Usage{CreatedAt: time.Date(2026, 11, 28, 8, 0, i, 0, time.UTC), RequestID: fmt.Sprintf("req_%03d", i),
		Backend: "nanogpt", Model: "zai-org/glm-4.6", Role: "architect", ConversationID: "c", Profile: "work", Stream: true,
		StatusCode: 200, PromptTokens: 10, CompletionTokens: 5, TotalTokens: 15, LatencyMS: 12, TTFTMS: 3}
}

// TestOpenCreatesDirectoriesWALAndPublicSchema: Open makes missing folders, uses WAL, and
// the usage table has exactly the public columns users query with sqlite3.
func TestOpenCreatesDirectoriesWALAndPublicSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "usage.db")
	db := openDB(t, path)
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q (%v), want wal", mode, err)
	}
	// A small page cache per connection: SQLite's default 2 MiB, four times over, held ~4 MiB
	// more of the proxy's resident memory under load.
	var cache int
	if err := db.QueryRow(`PRAGMA cache_size`).Scan(&cache); err != nil || cache != -512 {
		t.Errorf("cache_size %d (%v), want -512 (KiB)", cache, err)
	}
	rows, err := db.Query(`SELECT name FROM pragma_table_info('usage') ORDER BY cid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		_ = rows.Scan(&c)
		cols = append(cols, c)
	}
	want := []string{"id", "created_at", "request_id", "backend", "model", "role", "conversation_id", "profile", "stream",
		"status_code", "prompt_tokens", "completion_tokens", "total_tokens", "tokens_estimated", "latency_ms", "ttft_ms", "error"}
	if len(cols) < len(want) || !cmp.Equal(want, cols[:len(want)]) {
		t.Errorf("usage columns %v, want the public ones %v first", cols, want)
	}
}

// TestUsageWriterWritesEveryFieldAndSurvivesReopen: Close flushes rows that are still
// queued (the flush interval is an hour), every field lands in its column, and the rows
// are there after reopening the file; the schema migration is not re-run.
func TestUsageWriterWritesEveryFieldAndSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db := openDB(t, path)
	w := storage.NewUsageWriter(db, slog.New(slog.DiscardHandler), 100, time.Hour)
	want := row(1)
	want.TokensEstimated, want.Error, want.Attempts = true, "upstream 429", 3
	if !w.Record(want) {
		t.Fatal("Record dropped a row on an empty queue")
	}
	for i := 2; i <= 5; i++ {
		w.Record(row(i))
	}
	closeWriter(t, w)
	if w.Record(row(99)) {
		t.Error("Record after Close reported success")
	}
	if s := w.Stats(); s.Written != 5 || s.Dropped != 1 || s.Failed != 0 {
		t.Errorf("stats %+v, want 5 written, 1 dropped (after close)", s)
	}
	var applied int
	_ = db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&applied)
	db.Close()

	db = openDB(t, path) // reopen: migrations must not fail or duplicate
	defer db.Close()
	var got storage.Usage
	var created string
	var stream, est int
	err := db.QueryRow(`SELECT created_at, request_id, backend, model, role, conversation_id, profile, stream, status_code,
		prompt_tokens, completion_tokens, total_tokens, tokens_estimated, latency_ms, ttft_ms, error, attempts FROM usage WHERE request_id = 'req_001'`).
		Scan(&created, &got.RequestID, &got.Backend, &got.Model, &got.Role, &got.ConversationID, &got.Profile, &stream, &got.StatusCode,
			&got.PromptTokens, &got.CompletionTokens, &got.TotalTokens, &est, &got.LatencyMS, &got.TTFTMS, &got.Error, &got.Attempts)
	if err != nil {
		t.Fatal(err)
	}
	got.CreatedAt, _ = time.Parse(time.RFC3339Nano, created)
	got.Stream, got.TokensEstimated = stream == 1, est == 1
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("stored row (-want +got):\n%s", d)
	}
	if ids := requestIDs(t, db); len(ids) != 5 {
		t.Errorf("after reopen %d rows, want 5", len(ids))
	}
	var migrations int
	_ = db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&migrations)
	if migrations != applied || applied == 0 {
		t.Errorf("schema_migrations has %d rows after reopen, had %d before", migrations, applied)
	}
	// The reopened database takes new rows.
	w2 := storage.NewUsageWriter(db, slog.New(slog.DiscardHandler), 10, time.Hour)
	w2.Record(row(6))
	closeWriter(t, w2)
	if ids := requestIDs(t, db); len(ids) != 6 || ids[5] != "req_006" {
		t.Errorf("rows after second writer: %v", ids)
	}
}

// TestUsageWriterDropsWhenFullWithoutBlocking: with the writer stuck (its commit hook
// holds it), Record fills the queue, then drops and counts instead of blocking; once the
// writer moves again, Close writes everything that was queued.
func TestUsageWriterDropsWhenFullWithoutBlocking(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "usage.db"))
	defer db.Close()
	const size = 4
	w := storage.NewUsageWriter(db, slog.New(slog.DiscardHandler), size, time.Millisecond)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	w.OnCommit(func([]storage.Usage) {
		if first {
			first = false
			close(entered)
			<-release
		}
	})
	w.Record(row(0))
	select {
	case <-entered: // the writer committed row 0 and is now stuck in the hook
	case <-time.After(testTimeout):
		t.Fatal("writer never committed the first row")
	}
	results := make(chan []bool, 1)
	go func() {
		var ok []bool
		for i := 1; i <= size+3; i++ {
			ok = append(ok, w.Record(row(i)))
		}
		results <- ok
	}()
	var ok []bool
	select {
	case ok = <-results:
	case <-time.After(testTimeout):
		t.Fatal("Record blocked on a full queue")
	}
	want := []bool{true, true, true, true, false, false, false}
	if !cmp.Equal(want, ok) {
		t.Errorf("Record results %v, want %v", ok, want)
	}
	if s := w.Stats(); s.Dropped != 3 || s.Queued != size || s.Capacity != size {
		t.Errorf("stats while stuck %+v, want 3 dropped, %d queued", s, size)
	}
	close(release)
	closeWriter(t, w)
	if ids := requestIDs(t, db); !cmp.Equal(ids, []string{"req_000", "req_001", "req_002", "req_003", "req_004"}) {
		t.Errorf("stored %v, want row 0 and the 4 queued rows", ids)
	}
	if s := w.Stats(); s.Written != 5 || s.Dropped != 3 {
		t.Errorf("final stats %+v", s)
	}
}

// TestUsageWriterCountsFailedRows: rows that cannot be written (the database is gone)
// are counted as failed with the error, not silently lost, and Close still returns.
func TestUsageWriterCountsFailedRows(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "usage.db"))
	if _, err := db.Exec(`DROP TABLE usage`); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	w := storage.NewUsageWriter(db, slog.New(slog.DiscardHandler), 10, time.Hour)
	w.Record(row(1))
	w.Record(row(2))
	closeWriter(t, w)
	if s := w.Stats(); s.Failed != 2 || s.Written != 0 || s.LastError == "" {
		t.Errorf("stats %+v, want 2 failed with the last error", s)
	}
}

// TestOpenOddPaths: DB_PATH may contain spaces, '#', '?' or '%' (a home folder
// "/Users/Jane Doe"); the database is created at exactly that path and in WAL mode.
func TestOpenOddPaths(t *testing.T) {
	for _, dir := range []string{"with space", "with#hash", "with?query=1", "pct%20x", "colon:x", "ünï"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), dir, "usage.db")
			db := openDB(t, path)
			defer db.Close()
			var mode string
			if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode %q (%v), want wal", mode, err)
			}
			var file string
			if err := db.QueryRow(`SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil || file != path {
				t.Errorf("database file %q (%v), want %q", file, err, path)
			}
		})
	}
}

// goroutinesCreated is how many goroutines the process has started so far.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestUsageWriterNoGoroutinePerRow: the writer runs its inserts on its own goroutine.
// go-sqlite3 starts a goroutine for every statement given a cancellable context, which
// cost CPU on every proxied request (bench/ab.sh) until storage.StmtContext.
func TestUsageWriterNoGoroutinePerRow(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "usage.db"))
	defer db.Close()
	const rows = 200
	w := storage.NewUsageWriter(db, slog.New(slog.DiscardHandler), rows, time.Hour)
	before := goroutinesCreated()
	for i := range rows {
		if !w.Record(row(i)) {
			t.Fatalf("row %d dropped", i)
		}
	}
	closeWriter(t, w)
	created := goroutinesCreated() - before
	if n := len(requestIDs(t, db)); n != rows {
		t.Fatalf("%d rows stored, want %d", n, rows)
	}
	if created >= rows/4 {
		t.Errorf("writing %d rows started %d goroutines, want a few per transaction", rows, created)
	}
}
