// Package storage owns the proxy's SQLite database: the schema (the public usage table
// and the proxy's own tables), WAL mode, and the background batch writer that keeps disk
// off the request path.
package storage

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver "sqlite3"
)

// DB is the proxy's SQLite database.
type DB struct {
	*sql.DB
	Path string
}

// Open opens (creating directories and file as needed) the database at path in WAL mode
// and brings the schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("storage: creating %s: %w", dir, err)
		}
	}
	// The path is percent-encoded: in a file: URI a '?', '#' or '%' in it would
	// otherwise cut the path short or drop the parameters (WAL, busy timeout).
	// _stmt_cache_size keeps each connection's recently used statements prepared: the
	// background writers run the same few statements for every request. _cache_size is
	// each connection's page cache, 512 KiB instead of SQLite's 2 MiB: the writers append
	// at the right edge of each B-tree, and a search reads the FTS index from the OS page
	// cache either way (the same speed over 40,000 messages); four connections filled their
	// caches under load and held ~4 MiB more resident (bench/ab.sh, both bodies).
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?_journal_mode=WAL&_busy_timeout=5000&_synchronous=NORMAL&_foreign_keys=on&_txlock=immediate&_stmt_cache_size=64&_cache_size=" + strconv.Itoa(-pageCacheKiB)
	sqldb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("storage: opening %s: %w", path, err)
	}
	sqldb.SetMaxOpenConns(4)
	db := &DB{DB: sqldb, Path: path}
	if err := db.migrate(ctx); err != nil {
		sqldb.Close()
		return nil, err
	}
	return db, nil
}

// pageCacheKiB is each connection's SQLite page cache.
const pageCacheKiB = 512

// StmtContext is the context for the statements of a transaction begun with ctx. go-sqlite3
// runs a statement given a cancellable context on a goroutine of its own (so that it can
// interrupt it): a goroutine and two handoffs for every row the background writers insert,
// three per proxied request. The transaction does not need them: with _txlock=immediate it
// holds the write lock from BEGIN, which ctx bounds, so its statements never wait on
// another writer; they run on the caller's goroutine with ctx's values and no deadline.
func StmtContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// migrations run in order; each runs once, recorded in schema_migrations.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS usage (
		id                INTEGER PRIMARY KEY AUTOINCREMENT,
		created_at        TEXT    NOT NULL,
		request_id        TEXT    NOT NULL,
		backend           TEXT    NOT NULL DEFAULT '',
		model             TEXT    NOT NULL DEFAULT '',
		role              TEXT    NOT NULL DEFAULT '',
		conversation_id   TEXT    NOT NULL DEFAULT '',
		profile           TEXT    NOT NULL DEFAULT '',
		stream            INTEGER NOT NULL DEFAULT 0,
		status_code       INTEGER NOT NULL DEFAULT 0,
		prompt_tokens     INTEGER NOT NULL DEFAULT 0,
		completion_tokens INTEGER NOT NULL DEFAULT 0,
		total_tokens      INTEGER NOT NULL DEFAULT 0,
		tokens_estimated  INTEGER NOT NULL DEFAULT 0,
		latency_ms        INTEGER NOT NULL DEFAULT 0,
		ttft_ms           INTEGER NOT NULL DEFAULT 0,
		error             TEXT    NOT NULL DEFAULT '',
		attempts          INTEGER NOT NULL DEFAULT 1
	);
	CREATE INDEX IF NOT EXISTS usage_created_at ON usage(created_at);
	CREATE INDEX IF NOT EXISTS usage_backend_created ON usage(backend, created_at);`,
	// 2: the context manager's embedded store: conversations, their messages, and a full-text
	// index over the messages' text (FTS4, compiled into go-sqlite3 without a build tag;
	// docid = messages.id).
	`CREATE TABLE IF NOT EXISTS conversations (
		id         TEXT PRIMARY KEY,
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL,
		role       TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX IF NOT EXISTS conversations_updated ON conversations(updated_at);
	CREATE TABLE IF NOT EXISTS messages (
		id              INTEGER PRIMARY KEY AUTOINCREMENT,
		conversation_id TEXT    NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
		seq             INTEGER NOT NULL,
		created_at      TEXT    NOT NULL,
		request_id      TEXT    NOT NULL DEFAULT '',
		role            TEXT    NOT NULL,
		content         TEXT    NOT NULL DEFAULT '',
		tool_calls      TEXT    NOT NULL DEFAULT '',
		tool_call_id    TEXT    NOT NULL DEFAULT '',
		hash            TEXT    NOT NULL,
		UNIQUE (conversation_id, seq)
	);
	CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts4(body, tokenize=porter);`,
	// 3: the profile a conversation was served under, so that similar past interactions
	// stay within their profile. Existing conversations take the profile of their latest
	// usage row; one without any keeps '' and is offered to no profile.
	`ALTER TABLE conversations ADD COLUMN profile TEXT NOT NULL DEFAULT '';
	UPDATE conversations SET profile = u.profile
		FROM (SELECT conversation_id, profile, MAX(id) FROM usage WHERE conversation_id != '' GROUP BY conversation_id) AS u
		WHERE u.conversation_id = conversations.id;`,
	// 4: the background save asks which turn hashes a conversation already holds.
	`CREATE INDEX IF NOT EXISTS messages_conversation_hash ON messages(conversation_id, hash);`,
}

func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("storage: migrating %s: %w", db.Path, err)
	}
	var have int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("storage: migrating %s: %w", db.Path, err)
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("storage: migrating %s: %w", db.Path, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("storage: migration %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied_at) VALUES (?, ?)`, v, time.Now().UTC().Format(time.RFC3339)); err != nil {
			tx.Rollback()
			return fmt.Errorf("storage: migration %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("storage: migration %d: %w", v, err)
		}
	}
	return nil
}
