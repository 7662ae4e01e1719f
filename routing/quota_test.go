package routing

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

func openDB(t *testing.T, path string) *storage.DB {
	t.Helper()
	db, err := storage.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestQuotaMonthBoundary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db := openDB(t, path)
	defer db.Close()
	clk := newClock(time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC))
	q, err := NewQuota(t.Context(), QuotaConfig{Monthly: 10, Threshold: 0.8, Now: clk.Now}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		q.CountRequest(clk.Now())
	}
	if got := q.level(clk.Now()); got != quotaExhausted {
		t.Fatalf("after 10 of 10, level = %d", got)
	}
	st := q.Status()
	if st.State != "exhausted" || st.Month.Remaining != 0 || st.Month.ResetsAt != "2026-12-01T00:00:00Z" {
		t.Errorf("status = %+v", st)
	}
	// One minute later it is December: the allowance is fresh, without any write.
	clk.Add(2 * time.Minute)
	if got := q.level(clk.Now()); got != quotaOK {
		t.Fatalf("in the new month, level = %d", got)
	}
	if st := q.Status(); st.Month.Used != 0 || st.Month.Period != "2026-12" {
		t.Errorf("new month status = %+v", st.Month)
	}
	q.CountRequest(clk.Now())
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows := map[string]int64{}
	rs, err := db.QueryContext(t.Context(), `SELECT period, used FROM quota_usage WHERE unit = 'requests'`)
	if err != nil {
		t.Fatal(err)
	}
	for rs.Next() {
		var p string
		var n int64
		if err := rs.Scan(&p, &n); err != nil {
			t.Fatal(err)
		}
		rows[p] = n
	}
	rs.Close()
	want := map[string]int64{"2026-11": 10, "2026-11-30": 10, "2026-12": 1, "2026-12-01": 1}
	if d := cmp.Diff(want, rows); d != "" {
		t.Errorf("quota_usage rows (-want +got):\n%s", d)
	}
}

func TestQuotaSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	clk := newClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	cfg := QuotaConfig{Monthly: 100, Daily: 50, Now: clk.Now}

	db := openDB(t, path)
	q, err := NewQuota(t.Context(), cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 42 {
		q.CountRequest(clk.Now())
	}
	if err := q.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	// Restart the same day: month and day counts come back.
	db = openDB(t, path)
	q2, err := NewQuota(t.Context(), cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := q2.Status()
	if st.Month.Used != 42 || st.Day == nil || st.Day.Used != 42 {
		t.Fatalf("after restart: month %+v day %+v", st.Month, st.Day)
	}
	db.Close()

	// Restart the next day: the month count stays, the day starts over.
	clk.Add(24 * time.Hour)
	db = openDB(t, path)
	defer db.Close()
	q3, err := NewQuota(t.Context(), cfg, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st := q3.Status(); st.Month.Used != 42 || st.Day.Used != 0 {
		t.Fatalf("next day: month %+v day %+v", st.Month, st.Day)
	}
}

func TestQuotaDailyCap(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	q, _ := NewQuota(t.Context(), QuotaConfig{Monthly: 1000, Daily: 20, Now: clk.Now}, nil, nil)
	q.add(19, clk.Now())
	if got := q.level(clk.Now()); got != quotaNear {
		t.Fatalf("19/20 of the day: level %d", got)
	}
	q.add(1, clk.Now())
	if got := q.level(clk.Now()); got != quotaExhausted {
		t.Fatalf("20/20 of the day: level %d", got)
	}
	clk.Add(14 * time.Hour)
	if got := q.level(clk.Now()); got != quotaOK {
		t.Fatalf("next day: level %d", got)
	}
}

func TestQuotaTokensUnit(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	q, _ := NewQuota(t.Context(), QuotaConfig{Monthly: 1000, Unit: "tokens", Now: clk.Now}, nil, nil)
	q.CountRequest(clk.Now()) // ignored: the unit is tokens
	q.CountTokens(600, clk.Now())
	if st := q.Status(); st.Month.Used != 600 || st.Unit != "tokens" {
		t.Fatalf("status = %+v", st.Month)
	}
}

// subscriptionAPI serves the fixtures as NanoGPT's subscription API does, checking the key.
func subscriptionAPI(t *testing.T, down *atomic.Bool) *httptest.Server {
	t.Helper()
	models, err := os.ReadFile("../testdata/nanogpt/subscription-models.json")
	if err != nil {
		t.Fatal(err)
	}
	usage, err := os.ReadFile("../testdata/nanogpt/subscription-usage.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down != nil && down.Load() {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sk-test" {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/subscription/v1/models":
			w.Write(models)
		case "/api/subscription/v1/usage":
			w.Write(usage)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestQuotaSyncCorrectsCountAndSubscriptionList(t *testing.T) {
	var down atomic.Bool
	srv := subscriptionAPI(t, &down)
	clk := newClock(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	q, err := NewQuota(t.Context(), QuotaConfig{Monthly: 60000, Now: clk.Now, APIKey: "sk-test",
		SubscriptionURL: srv.URL + "/api/subscription/v1", Client: srv.Client()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The rankings say nothing is on the subscription; the API says which models are.
	rk := []byte(strings.ReplaceAll(string(rankingsJSON(t, 1, architectChain)), `"subscription":true`, `"subscription":false`))
	r, err := New(Config{Default: rk, Quota: q, Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	q.CountRequest(clk.Now())
	if got, _ := r.Select(Request{Model: "auto:architect"}); got[0].Subscription {
		t.Fatal("sub-a counted as subscription before any list said so")
	}
	if err := q.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := q.Status()
	if st.Month.Used != 18233 || st.Day == nil || st.Day.Used != 412 || st.Day.Limit != 5000 || st.ModelsSource != "subscription API" || st.SubscriptionModels != 4 {
		t.Fatalf("after sync: %+v, day %+v", st, st.Day)
	}
	// The fixture's models are now subscription models; the test's made-up ones are not.
	if got, err := r.Select(Request{Model: "zai-org/glm-4.6"}); err != nil || !got[0].Subscription || got[0].Backend != "nanogpt" {
		t.Fatalf("glm-4.6 after sync: %+v %v", got, err)
	}
	if got, _ := r.Select(Request{Model: "auto:architect"}); got[0].Subscription {
		t.Fatal("sub-a counted as subscription though the API does not list it")
	}

	// Unreachable: the error is reported, the local count carries on.
	down.Store(true)
	q.CountRequest(clk.Now())
	if err := q.Sync(t.Context()); err == nil {
		t.Fatal("Sync against a failing API returned nil")
	}
	if st := q.Status(); st.Month.Used != 18234 || st.SyncError == "" {
		t.Fatalf("after failed sync: used %d, error %q", st.Month.Used, st.SyncError)
	}
}
