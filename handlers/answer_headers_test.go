package handlers_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// headerBackend answers with JSON and hands back upstream headers, some of which describe
// the upstream's body rather than the proxy's answer.
type headerBackend struct{ body []byte }

func (b headerBackend) Name() string { return "nanogpt" }

func (b headerBackend) ChatCompletion(ctx context.Context, call *backends.Call) (*backends.Response, error) {
	return &backends.Response{Body: b.body, Header: http.Header{
		"Content-Type": {"text/plain"}, "Content-Length": {"3"}, "Retry-After": {"7"}}}, nil
}

// The headers a backend hands back reach the client, except where they would describe the
// answer's body: its Content-Type and Content-Length are the proxy's.
func TestAnswerHeadersProxyBodyHeadersWin(t *testing.T) {
	answer := fixture(t, "nanogpt/chat-completion.json")
	router, err := routing.New(routing.Config{Default: data.DefaultRouting}, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := storage.Open(context.Background(), t.TempDir()+"/u.db")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	prompt, ctxMgr := realStages(t, db, nil)
	defer ctxMgr.Close(context.Background())
	srv := httptest.NewServer(handlers.New(handlers.Config{MaxBodyBytes: 1 << 20, DefaultProfile: "personal"},
		handlers.Deps{Prompt: prompt, Router: router, Context: ctxMgr,
			Backends: map[string]backends.Backend{"nanogpt": headerBackend{answer}}}))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" ||
		resp.Header.Get("Content-Length") != strconv.Itoa(len(answer)) || resp.Header.Get("Retry-After") != "7" {
		t.Errorf("status %d, headers %v; want application/json, Content-Length %d, Retry-After 7", resp.StatusCode, resp.Header, len(answer))
	}
}
