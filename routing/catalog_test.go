package routing

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

func TestFetchModelsFeedsCatalog(t *testing.T) {
	body, err := os.ReadFile("../testdata/nanogpt/models-detailed.json")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/models" || r.Header.Get("Authorization") != "Bearer sk-test" {
			http.Error(w, "no", 401)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	ids, err := FetchModels(t.Context(), srv.Client(), srv.URL+"/api/v1", "sk-test")
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) < 5 {
		t.Fatalf("ids = %v", ids)
	}
	f := newFixture(t, nil)
	f.r.SetCatalog("nanogpt", ids)
	got, err := f.r.Select(Request{Model: "openai/gpt-5"})
	if err != nil || !cmp.Equal(names(got), []string{"nanogpt/openai/gpt-5"}) {
		t.Errorf("Select(openai/gpt-5) = %v, %v", names(got), err)
	}
	if _, err := FetchModels(t.Context(), srv.Client(), srv.URL+"/api/v1", "wrong"); err == nil {
		t.Error("a 401 gave no error")
	}
}

func TestCountUsageInTokens(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	q, _ := NewQuota(t.Context(), QuotaConfig{Monthly: 1000, Unit: "tokens", Now: clk.Now}, nil, nil)
	r, err := New(Config{Default: rankingsJSON(t, 1, architectChain), Quota: q, Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.CountUsage([]storage.Usage{
		{Backend: "nanogpt", Model: "sub-a", StatusCode: 200, TotalTokens: 300},
		{Backend: "nanogpt", Model: "paid-x", StatusCode: 200, TotalTokens: 5000}, // not on the subscription
		{Backend: "vertex", Model: "gem-pro", StatusCode: 200, TotalTokens: 7000},
		{Backend: "nanogpt", Model: "sub-b", StatusCode: 502, TotalTokens: 40}, // failed
		{Backend: "nanogpt", Model: "SUB-FREE", StatusCode: 200, TotalTokens: 650},
	})
	if st := q.Status(); st.Month.Used != 950 || st.State != "near_limit" {
		t.Errorf("tokens counted: %+v", st.Month)
	}
}
