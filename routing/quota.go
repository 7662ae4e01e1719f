package routing

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// QuotaConfig configures the NanoGPT subscription allowance.
type QuotaConfig struct {
	// Monthly is the allowance per calendar month (UTC); 0 turns quota tracking off.
	Monthly int64
	// Daily is an optional cap per UTC day; 0 means none (NanoGPT's own daily limit is
	// taken from the usage API when it reports one).
	Daily int64
	// Unit is "requests" (what the subscription counts; the default) or "tokens".
	Unit string
	// Threshold is the used fraction at which selection moves to non-subscription
	// candidates (default 0.95).
	Threshold float64
	// SubscriptionURL is NanoGPT's subscription API (…/api/subscription/v1); its /models
	// lists the covered models and its /usage corrects the local count. Empty: not asked.
	SubscriptionURL string
	// APIKey authenticates to the subscription API. Never logged.
	APIKey string
	// Models lists the covered models when the subscription API is unreachable; when it
	// is empty too, the rankings' "subscription": true flags decide.
	Models []string
	// Client is the HTTP client for the subscription API (nil: a client with a 15s timeout).
	Client *http.Client
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Quota levels, as selection sees them.
const (
	quotaOK = iota
	quotaNear
	quotaExhausted
)

// Quota counts use of the NanoGPT subscription per calendar month (and optionally per
// day) in UTC. Counters live in memory (selection reads them with atomic loads) and are
// written to SQLite by Flush, off the request path, so a restart loses at most what was
// counted since the last flush.
type Quota struct {
	cfg QuotaConfig
	db  *storage.DB
	log *slog.Logger

	mu        sync.Mutex // serialises counter updates, period rolls and flushes
	monthKey  atomic.Int64
	monthUsed atomic.Int64
	dayKey    atomic.Int64
	dayUsed   atomic.Int64
	monthLim  atomic.Int64
	dayLim    atomic.Int64
	pending   map[string]int64 // period -> absolute value not yet written
	// The current month's and day's period names (under mu): formatting them was two
	// time.Format calls per counted request.
	monthName, dayName periodName

	covered       atomic.Pointer[map[string]bool]
	coveredSource atomic.Pointer[string]
	onChange      func()

	syncAt, flushAt atomic.Int64
	syncErr         atomic.Pointer[string]
	flushErr        atomic.Pointer[string]
}

const quotaSchema = `CREATE TABLE IF NOT EXISTS quota_usage (
	period     TEXT    NOT NULL,
	unit       TEXT    NOT NULL,
	used       INTEGER NOT NULL,
	updated_at TEXT    NOT NULL,
	PRIMARY KEY (period, unit)
)`

// NewQuota returns a Quota that persists in db (nil: memory only) and loads the counts
// of the current month and day from it.
func NewQuota(ctx context.Context, cfg QuotaConfig, db *storage.DB, log *slog.Logger) (*Quota, error) {
	if cfg.Unit == "" {
		cfg.Unit = "requests"
	}
	if cfg.Threshold <= 0 || cfg.Threshold > 1 {
		cfg.Threshold = 0.95
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 15 * time.Second}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	q := &Quota{cfg: cfg, db: db, log: log, pending: map[string]int64{}}
	q.monthLim.Store(cfg.Monthly)
	q.dayLim.Store(cfg.Daily)
	if len(cfg.Models) > 0 {
		q.setCovered(cfg.Models, "config")
	}
	now := cfg.Now().UTC()
	q.monthKey.Store(monthIndex(now))
	q.dayKey.Store(dayIndex(now))
	if db != nil {
		if _, err := db.ExecContext(ctx, quotaSchema); err != nil {
			return nil, fmt.Errorf("routing: creating quota table: %w", err)
		}
		var err error
		var m, d int64
		if m, err = q.load(ctx, monthPeriod(now)); err != nil {
			return nil, err
		}
		if d, err = q.load(ctx, dayPeriod(now)); err != nil {
			return nil, err
		}
		q.monthUsed.Store(m)
		q.dayUsed.Store(d)
	}
	return q, nil
}

func (q *Quota) load(ctx context.Context, period string) (int64, error) {
	var n int64
	err := q.db.QueryRowContext(ctx, `SELECT used FROM quota_usage WHERE period = ? AND unit = ?`, period, q.cfg.Unit).Scan(&n)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("routing: reading quota: %w", err)
	}
	return n, nil
}

// Enabled reports whether a monthly allowance is configured.
func (q *Quota) Enabled() bool { return q != nil && q.cfg.Monthly > 0 }

// Unit is "requests" or "tokens".
func (q *Quota) Unit() string { return q.cfg.Unit }

func monthIndex(t time.Time) int64 { return int64(t.Year())*12 + int64(t.Month()) - 1 }
func dayIndex(t time.Time) int64   { return t.Unix() / 86400 }
func monthPeriod(t time.Time) string {
	return t.UTC().Format("2006-01")
}
func dayPeriod(t time.Time) string { return t.UTC().Format("2006-01-02") }

// periodName is a period's name (monthPeriod, dayPeriod) with the index it was made for.
type periodName struct {
	index int64
	name  string
}

// get returns the name of the period with index at t, formatting it only when the period
// changed.
func (p *periodName) get(index int64, t time.Time, format func(time.Time) string) string {
	if p.name == "" || p.index != index {
		*p = periodName{index, format(t)}
	}
	return p.name
}
func monthReset(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}
func dayReset(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
}

// used returns the month's and the day's counts at now (a new period counts from 0).
func (q *Quota) used(now time.Time) (month, day int64) {
	if q.monthKey.Load() == monthIndex(now) {
		month = q.monthUsed.Load()
	}
	if q.dayKey.Load() == dayIndex(now) {
		day = q.dayUsed.Load()
	}
	return month, day
}

// level is what selection needs: OK, near the threshold, or exhausted. Lock- and
// allocation-free.
func (q *Quota) level(now time.Time) int {
	if !q.Enabled() {
		return quotaOK
	}
	m, d := q.used(now)
	ml, dl := q.monthLim.Load(), q.dayLim.Load()
	if (ml > 0 && m >= ml) || (dl > 0 && d >= dl) {
		return quotaExhausted
	}
	th := q.cfg.Threshold
	if (ml > 0 && float64(m) >= th*float64(ml)) || (dl > 0 && float64(d) >= th*float64(dl)) {
		return quotaNear
	}
	return quotaOK
}

// add counts n units at now, rolling over to a new month or day when the clock has
// moved on. Nothing touches the disk here.
func (q *Quota) add(n int64, now time.Time) {
	if !q.Enabled() || n <= 0 {
		return
	}
	now = now.UTC()
	q.mu.Lock()
	defer q.mu.Unlock()
	if mk := monthIndex(now); q.monthKey.Load() != mk {
		q.monthKey.Store(mk)
		q.monthUsed.Store(0)
	}
	if dk := dayIndex(now); q.dayKey.Load() != dk {
		q.dayKey.Store(dk)
		q.dayUsed.Store(0)
	}
	q.pending[q.monthName.get(monthIndex(now), now, monthPeriod)] = q.monthUsed.Add(n)
	q.pending[q.dayName.get(dayIndex(now), now, dayPeriod)] = q.dayUsed.Add(n)
}

// CountRequest counts one served request when the unit is requests.
func (q *Quota) CountRequest(now time.Time) {
	if q != nil && q.cfg.Unit == "requests" {
		q.add(1, now)
	}
}

// CountTokens counts tokens of a served request when the unit is tokens.
func (q *Quota) CountTokens(tokens int, now time.Time) {
	if q != nil && q.cfg.Unit == "tokens" {
		q.add(int64(tokens), now)
	}
}

// set replaces the counts of the current month and day (the upstream's numbers).
func (q *Quota) set(month, day int64, now time.Time) {
	now = now.UTC()
	q.mu.Lock()
	defer q.mu.Unlock()
	q.monthKey.Store(monthIndex(now))
	q.dayKey.Store(dayIndex(now))
	if month >= 0 {
		q.monthUsed.Store(month)
		q.pending[q.monthName.get(monthIndex(now), now, monthPeriod)] = month
	}
	if day >= 0 {
		q.dayUsed.Store(day)
		q.pending[q.dayName.get(dayIndex(now), now, dayPeriod)] = day
	}
}

// Flush writes the counts changed since the last flush. A failure keeps them pending.
func (q *Quota) Flush(ctx context.Context) error {
	if q == nil || q.db == nil {
		return nil
	}
	q.mu.Lock()
	batch := q.pending
	q.pending = make(map[string]int64, 2)
	q.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := q.write(ctx, batch)
	if err != nil {
		q.mu.Lock()
		for k, v := range batch {
			if _, newer := q.pending[k]; !newer {
				q.pending[k] = v
			}
		}
		q.mu.Unlock()
		msg := err.Error()
		q.flushErr.Store(&msg)
		return err
	}
	q.flushErr.Store(nil)
	q.flushAt.Store(q.cfg.Now().UnixNano())
	return nil
}

func (q *Quota) write(ctx context.Context, batch map[string]int64) error {
	tx, err := q.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("routing: saving quota: %w", err)
	}
	defer tx.Rollback()
	now := q.cfg.Now().UTC().Format(time.RFC3339)
	for period, used := range batch {
		if _, err := tx.ExecContext(ctx, `INSERT INTO quota_usage(period, unit, used, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT(period, unit) DO UPDATE SET used = excluded.used, updated_at = excluded.updated_at`,
			period, q.cfg.Unit, used, now); err != nil {
			return fmt.Errorf("routing: saving quota: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("routing: saving quota: %w", err)
	}
	return nil
}

// Run flushes on every flush tick and asks the subscription API on every sync tick (and
// once at start) until ctx ends. The owner calls Flush once more at shutdown, before
// closing the database.
func (q *Quota) Run(ctx context.Context, flush, sync <-chan time.Time) {
	if q.cfg.SubscriptionURL != "" {
		q.syncLogged(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-flush:
			if err := q.Flush(ctx); err != nil {
				q.log.Warn("saving quota counts failed; kept in memory", "err", err)
			}
		case <-sync:
			q.syncLogged(ctx)
		}
	}
}

func (q *Quota) syncLogged(ctx context.Context) {
	if err := q.Sync(ctx); err != nil {
		q.log.Warn("NanoGPT subscription API unavailable; using local quota counts", "backend", "nanogpt", "err", err)
	}
}

// Sync asks NanoGPT's subscription API for the covered models and the usage so far; the
// upstream's numbers replace the local count (when counting requests, as NanoGPT does).
func (q *Quota) Sync(ctx context.Context) error {
	if q.cfg.SubscriptionURL == "" {
		return nil
	}
	var errs []error
	var models struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := q.get(ctx, "/models", &models); err != nil {
		errs = append(errs, err)
	} else if len(models.Data) > 0 {
		ids := make([]string, len(models.Data))
		for i, m := range models.Data {
			ids[i] = m.ID
		}
		q.setCovered(ids, "subscription API")
	}
	var u subscriptionUsage
	if err := q.get(ctx, "/usage", &u); err != nil {
		errs = append(errs, err)
	} else {
		q.applyUsage(u)
	}
	q.syncAt.Store(q.cfg.Now().UnixNano())
	if err := errors.Join(errs...); err != nil {
		msg := err.Error()
		q.syncErr.Store(&msg)
		return err
	}
	q.syncErr.Store(nil)
	return nil
}

// subscriptionUsage is GET /api/subscription/v1/usage.
type subscriptionUsage struct {
	Limits struct {
		Daily   int64 `json:"daily"`
		Monthly int64 `json:"monthly"`
	} `json:"limits"`
	EnforceDailyLimit bool `json:"enforceDailyLimit"`
	Daily             *struct {
		Used int64 `json:"used"`
	} `json:"daily"`
	Monthly *struct {
		Used int64 `json:"used"`
	} `json:"monthly"`
}

func (q *Quota) applyUsage(u subscriptionUsage) {
	// The tighter of the configured and the reported limit wins.
	tighter := func(cfg, remote int64) int64 {
		if remote > 0 && (cfg == 0 || remote < cfg) {
			return remote
		}
		return cfg
	}
	if q.cfg.Monthly > 0 {
		q.monthLim.Store(tighter(q.cfg.Monthly, u.Limits.Monthly))
	}
	if u.EnforceDailyLimit {
		q.dayLim.Store(tighter(q.cfg.Daily, u.Limits.Daily))
	}
	if q.cfg.Unit != "requests" {
		return
	}
	month, day := int64(-1), int64(-1)
	if u.Monthly != nil {
		month = u.Monthly.Used
	}
	if u.Daily != nil {
		day = u.Daily.Used
	}
	q.set(month, day, q.cfg.Now())
}

func (q *Quota) get(ctx context.Context, path string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	url := strings.TrimRight(q.cfg.SubscriptionURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("routing: subscription %s: %w", path, err)
	}
	if q.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+q.cfg.APIKey)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := q.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("routing: subscription %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("routing: subscription %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("routing: subscription %s: HTTP %d", path, resp.StatusCode)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("routing: subscription %s: %w", path, err)
	}
	return nil
}

func (q *Quota) setCovered(ids []string, source string) {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[strings.ToLower(id)] = true
	}
	if old := q.covered.Load(); old != nil && sameSet(*old, m) {
		return
	}
	q.covered.Store(&m)
	q.coveredSource.Store(&source)
	if q.onChange != nil {
		q.onChange()
	}
}

func sameSet(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// coveredSet returns the subscription-covered models (lower case), or nil when neither
// the subscription API nor the config named any.
func (q *Quota) coveredSet() map[string]bool {
	if q == nil {
		return nil
	}
	if p := q.covered.Load(); p != nil {
		return *p
	}
	return nil
}

// QuotaPeriod is one period's numbers in /status.
type QuotaPeriod struct {
	Period    string  `json:"period"`
	Used      int64   `json:"used"`
	Limit     int64   `json:"limit"`
	Remaining int64   `json:"remaining"`
	Percent   float64 `json:"percent_used"`
	ResetsAt  string  `json:"resets_at"`
}

// QuotaStatus is the quota as /status shows it.
type QuotaStatus struct {
	Enabled            bool         `json:"enabled"`
	Unit               string       `json:"unit"`
	State              string       `json:"state"`
	Threshold          float64      `json:"threshold"`
	Month              QuotaPeriod  `json:"month"`
	Day                *QuotaPeriod `json:"day,omitempty"`
	SubscriptionModels int          `json:"subscription_models"`
	ModelsSource       string       `json:"subscription_models_source"`
	LastSync           string       `json:"last_sync,omitempty"`
	SyncError          string       `json:"sync_error,omitempty"`
	LastFlush          string       `json:"last_saved,omitempty"`
	FlushError         string       `json:"save_error,omitempty"`
}

// Status reports the quota at the clock's now.
func (q *Quota) Status() QuotaStatus {
	now := q.cfg.Now().UTC()
	m, d := q.used(now)
	st := QuotaStatus{Enabled: q.Enabled(), Unit: q.cfg.Unit, Threshold: q.cfg.Threshold, ModelsSource: "rankings (\"subscription\": true)"}
	st.State = [...]string{"ok", "near_limit", "exhausted"}[q.level(now)]
	st.Month = period(monthPeriod(now), m, q.monthLim.Load(), monthReset(now))
	if dl := q.dayLim.Load(); dl > 0 {
		p := period(dayPeriod(now), d, dl, dayReset(now))
		st.Day = &p
	}
	if c := q.coveredSet(); c != nil {
		st.SubscriptionModels = len(c)
		st.ModelsSource = *q.coveredSource.Load()
	}
	if t := q.syncAt.Load(); t != 0 {
		st.LastSync = time.Unix(0, t).UTC().Format(time.RFC3339)
	}
	if e := q.syncErr.Load(); e != nil {
		st.SyncError = *e
	}
	if t := q.flushAt.Load(); t != 0 {
		st.LastFlush = time.Unix(0, t).UTC().Format(time.RFC3339)
	}
	if e := q.flushErr.Load(); e != nil {
		st.FlushError = *e
	}
	return st
}

func period(name string, used, limit int64, reset time.Time) QuotaPeriod {
	p := QuotaPeriod{Period: name, Used: used, Limit: limit, ResetsAt: reset.Format(time.RFC3339)}
	if limit > 0 {
		p.Remaining = max(0, limit-used)
		p.Percent = math.Round(float64(used)/float64(limit)*10000) / 100
	}
	return p
}

// exhaustedMessage says which quota ran out and when it resets.
func (q *Quota) exhaustedMessage(now time.Time) (string, time.Time) {
	now = now.UTC()
	m, d := q.used(now)
	if dl := q.dayLim.Load(); dl > 0 && d >= dl && !(q.monthLim.Load() > 0 && m >= q.monthLim.Load()) {
		r := dayReset(now)
		return fmt.Sprintf("the NanoGPT subscription's daily quota is used up (%d of %d %s today); it resets at %s", d, dl, q.cfg.Unit, r.Format(time.RFC3339)), r
	}
	r := monthReset(now)
	return fmt.Sprintf("the NanoGPT subscription's monthly quota is used up (%d of %d %s in %s); it resets at %s", m, q.monthLim.Load(), q.cfg.Unit, monthPeriod(now), r.Format(time.RFC3339)), r
}
