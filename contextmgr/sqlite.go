package contextmgr

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strings"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// SQLiteStore is the embedded store: the conversations and messages tables of the proxy's
// database, with an FTS4 index ranked by BM25 computed from matchinfo.
type SQLiteStore struct {
	db  *storage.DB
	now func() time.Time
	// MinScore is the share (0-1) of a query's IDF weight a past interaction must match.
	MinScore float64
}

var _ Store = (*SQLiteStore)(nil)

// NewSQLiteStore returns the embedded store on db; now is the clock (nil: time.Now).
func NewSQLiteStore(db *storage.DB, now func() time.Time) *SQLiteStore {
	if now == nil {
		now = time.Now
	}
	return &SQLiteStore{db: db, now: now}
}

// ftsBodyLimit caps the text indexed per message.
const ftsBodyLimit = 16 << 10

// History implements Store.
func (s *SQLiteStore) History(ctx context.Context, conversationID string, limit int) ([]Turn, error) {
	if limit <= 0 {
		limit = math.MaxInt32
	}
	rows, err := s.db.QueryContext(ctx, `SELECT role, content, tool_calls, tool_call_id, created_at FROM (
		SELECT seq, role, content, tool_calls, tool_call_id, created_at FROM messages
		WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?) ORDER BY seq`, conversationID, limit)
	if err != nil {
		return nil, fmt.Errorf("contextmgr: loading history: %w", err)
	}
	defer rows.Close()
	var out []Turn
	for rows.Next() {
		var t Turn
		var tc, at string
		if err := rows.Scan(&t.Role, &t.Content, &tc, &t.ToolCallID, &at); err != nil {
			return nil, fmt.Errorf("contextmgr: loading history: %w", err)
		}
		if tc != "" {
			t.ToolCalls = []byte(tc)
		}
		t.At, _ = time.Parse(time.RFC3339Nano, at)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("contextmgr: loading history: %w", err)
	}
	return out, nil
}

// CountStored says how many times each of hashes is stored for a conversation (hashes not
// stored are absent), through the (conversation_id, hash) index: a save costs the same
// however long the conversation has grown. The IN list is padded to a power of two by
// repeating a hash (IN is a set: a repeat changes no count), so that a handful of query
// texts serve every call and the connection's statement cache holds them prepared.
func (s *SQLiteStore) CountStored(ctx context.Context, conversationID string, hashes []string) (map[string]int, error) {
	out := make(map[string]int, len(hashes))
	const chunk = 1 << (len(countStoredQueries) - 1)
	for len(hashes) > 0 {
		n := min(len(hashes), chunk)
		lg := bits.Len(uint(n - 1)) // the IN list holds 1<<lg >= n hashes
		width := 1 << lg
		args := make([]any, 0, width+1)
		args = append(args, conversationID)
		for _, h := range hashes[:n] {
			args = append(args, h)
		}
		for len(args) < width+1 {
			args = append(args, hashes[n-1])
		}
		rows, err := s.db.QueryContext(ctx, countStoredQueries[lg], args...)
		if err != nil {
			return nil, fmt.Errorf("contextmgr: counting stored turns: %w", err)
		}
		for rows.Next() {
			var h string
			var c int
			if err := rows.Scan(&h, &c); err != nil {
				rows.Close()
				return nil, fmt.Errorf("contextmgr: counting stored turns: %w", err)
			}
			out[h] = c
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("contextmgr: counting stored turns: %w", err)
		}
		hashes = hashes[n:]
	}
	return out, nil
}

// countStoredQueries are CountStored's query texts, by log2 of the IN-list width.
var countStoredQueries = func() (qs [9]string) {
	for i := range qs {
		qs[i] = `SELECT hash, COUNT(*) FROM messages WHERE conversation_id = ? AND hash IN (?` +
			strings.Repeat(",?", 1<<i-1) + `) GROUP BY hash`
	}
	return qs
}()

// Append implements Store: one transaction adds the turns and their index entries.
func (s *SQLiteStore) Append(ctx context.Context, conversationID string, turns []Turn, meta Meta) error {
	return s.AppendBatch(ctx, []AppendItem{{Conv: conversationID, Turns: turns, Meta: meta}})
}

// AppendBatch appends several conversations' turns in one transaction: all or none. A
// conversation may come several times, in order; what is stored is what appending the
// items one by one stores, with one conversations upsert and one MAX(seq) per conversation.
func (s *SQLiteStore) AppendBatch(ctx context.Context, items []AppendItem) error {
	type convRow struct {
		created, updated, role, profile string
		seq                             int64
	}
	convs := map[string]*convRow{}
	var order []string
	now := make([]string, len(items))
	for i, it := range items {
		if len(it.Turns) == 0 {
			continue
		}
		now[i] = s.now().UTC().Format(time.RFC3339Nano)
		c, ok := convs[it.Conv]
		if !ok {
			c = &convRow{created: now[i], profile: it.Meta.Profile}
			convs[it.Conv] = c
			order = append(order, it.Conv)
		}
		// Upserting once with the last save time and role, and a profile that is '' unless
		// every item agrees, leaves the row as one upsert per item would.
		c.updated, c.role = now[i], it.Meta.Role
		if c.profile != it.Meta.Profile {
			c.profile = ""
		}
	}
	if len(order) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("contextmgr: saving: %w", err)
	}
	defer tx.Rollback()
	ctx = storage.StmtContext(ctx)
	for _, conv := range order {
		c := convs[conv]
		// A conversation continued under another profile belongs to neither: its profile
		// becomes '', which no profile's similar search reads.
		if _, err := tx.ExecContext(ctx, `INSERT INTO conversations (id, created_at, updated_at, role, profile) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at, role = excluded.role,
			profile = CASE WHEN conversations.profile = excluded.profile THEN conversations.profile ELSE '' END`,
			conv, c.created, c.updated, c.role, c.profile); err != nil {
			return fmt.Errorf("contextmgr: saving conversation: %w", err)
		}
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM messages WHERE conversation_id = ?`, conv).Scan(&c.seq); err != nil {
			return fmt.Errorf("contextmgr: saving: %w", err)
		}
	}
	for i, it := range items {
		if len(it.Turns) == 0 {
			continue
		}
		if err := s.appendTx(ctx, tx, it, &convs[it.Conv].seq, now[i]); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("contextmgr: saving: %w", err)
	}
	return nil
}

// appendTx adds one item's messages and their index entries inside tx, after *seq.
func (s *SQLiteStore) appendTx(ctx context.Context, tx *sql.Tx, it AppendItem, seq *int64, now string) error {
	for i, t := range it.Turns {
		*seq++
		h := ""
		if len(it.hashes) == len(it.Turns) {
			h = it.hashes[i]
		} else {
			h = t.hash()
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO messages (conversation_id, seq, created_at, request_id, role, content, tool_calls, tool_call_id, hash)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, it.Conv, *seq, now, it.Meta.RequestID, t.Role, t.Content, string(t.ToolCalls), t.ToolCallID, h)
		if err != nil {
			return fmt.Errorf("contextmgr: saving message: %w", err)
		}
		if t.Role != "user" && t.Role != "assistant" {
			continue // tool output and calls are kept, but not searched
		}
		body := cleanText(t.Content)
		if body == "" {
			continue
		}
		if len(body) > ftsBodyLimit {
			body = body[:ftsBodyLimit]
		}
		id, _ := res.LastInsertId()
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages_fts (docid, body) VALUES (?, ?)`, id, body); err != nil {
			return fmt.Errorf("contextmgr: indexing message: %w", err)
		}
	}
	return nil
}

// Delete removes a conversation, its messages and their index entries; it reports how many
// messages were removed and ErrNotFound when there was no such conversation.
func (s *SQLiteStore) Delete(ctx context.Context, conversationID string) (int64, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("contextmgr: deleting: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM messages_fts WHERE docid IN (SELECT id FROM messages WHERE conversation_id = ?)`, conversationID); err != nil {
		return 0, fmt.Errorf("contextmgr: deleting index entries: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE conversation_id = ?`, conversationID)
	if err != nil {
		return 0, fmt.Errorf("contextmgr: deleting messages: %w", err)
	}
	n, _ := res.RowsAffected()
	cres, err := tx.ExecContext(ctx, `DELETE FROM conversations WHERE id = ?`, conversationID)
	if err != nil {
		return 0, fmt.Errorf("contextmgr: deleting conversation: %w", err)
	}
	if c, _ := cres.RowsAffected(); c == 0 {
		return 0, ErrNotFound
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("contextmgr: deleting: %w", err)
	}
	return n, nil
}

// ErrNotFound reports a conversation the store does not have.
var ErrNotFound = errors.New("contextmgr: conversation not found")

// BM25 parameters (the usual defaults).
const (
	bm25K1 = 1.2
	bm25B  = 0.75
	// maxCandidates caps the matching rows ranked per query (the most recent ones).
	maxCandidates = 2000
)

// Similar implements Store: BM25 over the full-text index, the best message per
// conversation of the profile, kept when its Match reaches MinScore, with the exchange
// around it. Conversations without a profile (”: saved before profiles were stored and
// without a usage row, or continued under two profiles) are offered only to requests
// without one, which the proxy's handler never makes.
func (s *SQLiteStore) Similar(ctx context.Context, query, exclude, profile string, limit int) ([]Interaction, error) {
	minMatch := s.MinScore
	terms := queryTerms(cleanText(query), 32)
	if len(terms) == 0 || limit <= 0 {
		return nil, nil
	}
	quoted := make([]string, len(terms))
	for i, t := range terms {
		quoted[i] = `"` + t + `"`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.id, m.conversation_id, m.seq, m.role, m.created_at, matchinfo(messages_fts, 'pcnalx')
		FROM messages_fts JOIN messages m ON m.id = messages_fts.docid JOIN conversations c ON c.id = m.conversation_id
		WHERE messages_fts MATCH ? AND m.conversation_id != ? AND c.profile = ?
		ORDER BY messages_fts.docid DESC LIMIT ?`, strings.Join(quoted, " OR "), exclude, profile, maxCandidates)
	if err != nil {
		return nil, fmt.Errorf("contextmgr: searching: %w", err)
	}
	type hit struct {
		conv         string
		seq          int64
		role, at     string
		score, match float64
	}
	best := map[string]hit{}
	for rows.Next() {
		var h hit
		var id int64
		var mi []byte
		if err := rows.Scan(&id, &h.conv, &h.seq, &h.role, &h.at, &mi); err != nil {
			rows.Close()
			return nil, fmt.Errorf("contextmgr: searching: %w", err)
		}
		h.score, h.match = bm25(mi)
		if h.match < minMatch {
			continue
		}
		if b, ok := best[h.conv]; !ok || h.score > b.score {
			best[h.conv] = h
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("contextmgr: searching: %w", err)
	}
	hits := make([]hit, 0, len(best))
	for _, h := range best {
		hits = append(hits, h)
	}
	sort.Slice(hits, func(i, j int) bool {
		if hits[i].score != hits[j].score {
			return hits[i].score > hits[j].score
		}
		return hits[i].at > hits[j].at
	})
	out := make([]Interaction, 0, limit)
	for i, h := range hits {
		if len(out) == limit || i == 4*limit {
			break
		}
		// The exchange around the hit: the question and the answer that followed it.
		lo, hi := h.seq, h.seq+3
		if h.role == "assistant" {
			lo, hi = h.seq-3, h.seq
		}
		turns, err := s.exchange(ctx, h.conv, lo, hi, h.seq, h.role)
		if err != nil {
			return nil, err
		}
		if len(turns) == 0 || turns[len(turns)-1].Role != "assistant" {
			continue // a question that was never answered is no past interaction
		}
		at, _ := time.Parse(time.RFC3339Nano, h.at)
		out = append(out, Interaction{ConversationID: h.conv, At: at, Score: h.score, Match: h.match, Turns: turns})
	}
	return out, nil
}

// exchange returns the user question and the assistant answer around the hit at seq.
func (s *SQLiteStore) exchange(ctx context.Context, conv string, lo, hi, seq int64, role string) ([]Turn, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, role, content FROM messages
		WHERE conversation_id = ? AND seq BETWEEN ? AND ? AND role IN ('user', 'assistant') AND content != '' ORDER BY seq`, conv, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("contextmgr: loading exchange: %w", err)
	}
	defer rows.Close()
	var all []struct {
		seq int64
		t   Turn
	}
	for rows.Next() {
		var e struct {
			seq int64
			t   Turn
		}
		if err := rows.Scan(&e.seq, &e.t.Role, &e.t.Content); err != nil {
			return nil, fmt.Errorf("contextmgr: loading exchange: %w", err)
		}
		all = append(all, e)
	}
	var user, answer *Turn
	for i := range all {
		e := &all[i]
		switch {
		case role == "user" && e.seq == seq:
			user = &e.t
		case role == "user" && e.seq > seq && e.t.Role == "assistant" && answer == nil:
			answer = &e.t
		case role == "assistant" && e.seq == seq:
			answer = &e.t
		case role == "assistant" && e.seq < seq && e.t.Role == "user":
			user = &e.t // the last question before the answer
		}
	}
	var out []Turn
	if user != nil {
		out = append(out, Turn{Role: "user", Content: cleanText(user.Content)})
	}
	if answer != nil {
		out = append(out, Turn{Role: "assistant", Content: answer.Content})
	}
	return out, rows.Err()
}

// bm25 computes a row's Okapi BM25 score from matchinfo 'pcnalx' (one column), and the
// share of the query's IDF weight the row matches (0-1).
func bm25(mi []byte) (score, match float64) {
	if len(mi) < 5*4 {
		return 0, 0
	}
	u := func(i int) float64 { return float64(binary.NativeEndian.Uint32(mi[4*i:])) }
	p := int(u(0))
	n, avg, dl := u(2), u(3), u(4)
	if avg <= 0 {
		avg = 1
	}
	var total float64
	for i := 0; i < p && 5+3*i+2 < len(mi)/4; i++ {
		tf, df := u(5+3*i), u(5+3*i+2)
		idf := math.Log(1 + (n-df+0.5)/(df+0.5))
		total += idf
		if tf > 0 {
			score += idf * tf * (bm25K1 + 1) / (tf + bm25K1*(1-bm25B+bm25B*dl/avg))
			match += idf
		}
	}
	if total > 0 {
		match /= total
	}
	return score, match
}
