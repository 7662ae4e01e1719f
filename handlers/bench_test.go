package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// cannedBackend answers every call in memory: the proxy's own CPU cost per request,
// without the network.
type cannedBackend struct {
	sse, json []byte
}

func (c *cannedBackend) Name() string { return "nanogpt" }

func (c *cannedBackend) ChatCompletion(ctx context.Context, call *backends.Call) (*backends.Response, error) {
	// What the NanoGPT backend sends: the parts, written one after the other (it hands them
	// to the transport as net.Buffers), not one joined body.
	for _, p := range call.Request.UpstreamParts(call.Model) {
		_, _ = io.Discard.Write(p)
	}
	if call.Request.Stream {
		return &backends.Response{Stream: backends.NewSSEReader(io.NopCloser(bytes.NewReader(c.sse)))}, nil
	}
	return &backends.Response{Body: c.json, Usage: &backends.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2}}, nil
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct {
	h     http.Header
	first time.Time // when the first byte of the answer was written
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) {
	if d.first.IsZero() {
		d.first = time.Now()
	}
	return len(p), nil
}
func (d *discardWriter) WriteHeader(int) {}
func (d *discardWriter) Flush()          {}

// padRoo pads a Roo Code request to about 60 KB (system prompt and tools), like
// backends' rooSizedBody.
func padRoo(tb testing.TB) []byte {
	var req map[string]json.RawMessage
	_ = json.Unmarshal(fixture(tb, "clients/roo-code-code-first-turn.json"), &req)
	var msgs []map[string]any
	_ = json.Unmarshal(req["messages"], &msgs)
	msgs[0]["content"] = msgs[0]["content"].(string) + strings.Repeat("\n\n- Use the provider-native tool-calling mechanism.", 600)
	req["messages"], _ = json.Marshal(msgs)
	var tools []any
	_ = json.Unmarshal(req["tools"], &tools)
	for len(tools) < 60 {
		tools = append(tools, tools[len(tools)%6])
	}
	req["tools"], _ = json.Marshal(tools)
	b, _ := json.Marshal(req)
	return b
}

// longRoo is the Roo-sized request 40 turns into its task: after the system prompt and
// the first user message, 20 assistant answers and 20 tool results of ~4 KB each (about
// 230 KB in all), the shape of a long agent conversation.
func longRoo(tb testing.TB) []byte {
	var req map[string]json.RawMessage
	_ = json.Unmarshal(padRoo(tb), &req)
	var msgs []map[string]any
	_ = json.Unmarshal(req["messages"], &msgs)
	for i := range 20 {
		msgs = append(msgs,
			map[string]any{"role": "assistant", "content": fmt.Sprintf("Step %d: reading the handler. ", i) + strings.Repeat("The handler reads the body, then validates it.\n", 80)},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": fmt.Sprintf("[read_file for 'handlers/h%d.go'] Result:\n", i) + strings.Repeat("func handle(w http.ResponseWriter, r *http.Request) {}\n", 70)}}})
	}
	req["messages"], _ = json.Marshal(msgs)
	b, _ := json.Marshal(req)
	return b
}

// BenchmarkChatPipeline is one chat request through handlers.New with the real stages
// and usage writer, an in-memory backend and writer: ns/op is the proxy's own cost.
func BenchmarkChatPipeline(b *testing.B) {
	defer handlers.ProductionBodies()()
	db, err := storage.Open(context.Background(), b.TempDir()+"/u.db")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	// The binary's request line, formatted by the text handler the binary uses by default;
	// only the write goes nowhere.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := storage.NewUsageWriter(db, log, 1<<16, 50e6)
	defer w.Close(context.Background())
	be := &cannedBackend{sse: fixture(b, "nanogpt/chat-stream-tool-call.sse"), json: fixture(b, "nanogpt/chat-completion.json")}
	router, _ := routing.New(routing.Config{Default: data.DefaultRouting}, log)
	prompt, ctxMgr := realStages(b, db, log)
	defer ctxMgr.Close(context.Background())
	h := handlers.New(handlers.Config{MaxBodyBytes: 32 << 20, DefaultProfile: "personal"}, handlers.Deps{
		Log: log, Prompt: prompt, Router: router, Context: ctxMgr,
		Backends: map[string]backends.Backend{"nanogpt": be}, Usage: w,
	})
	bodies := map[string][]byte{
		"small/json":     []byte(`{"model":"auto","messages":[{"role":"user","content":"Say hi"}]}`),
		"small/stream":   []byte(`{"model":"auto","messages":[{"role":"user","content":"Say hi"}],"stream":true}`),
		"roo60k/stream":  padRoo(b),
		"roolong/stream": longRoo(b),
		// The load benchmark's 60 KB request (bench/run.sh), answered with JSON as there.
		"bench60k/json": fixture(b, "bench/roo-code-60k.json"),
	}
	for _, name := range []string{"small/json", "small/stream", "roo60k/stream", "roolong/stream", "bench60k/json"} {
		body := bodies[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var toFirst time.Duration
			for b.Loop() {
				r, _ := http.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
				dw := &discardWriter{h: http.Header{}}
				start := time.Now()
				h.ServeHTTP(dw, r)
				toFirst += dw.first.Sub(start)
			}
			// The part of ns/op before the first byte of the answer went out.
			b.ReportMetric(float64(toFirst.Nanoseconds())/float64(b.N), "first-byte-ns/op")
		})
	}
}
