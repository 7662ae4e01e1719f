package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	openai "github.com/sashabaranov/go-openai"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/handlers"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

type usageChan chan storage.Usage

func (u usageChan) Record(row storage.Usage) bool { u <- row; return true }

// A Roo Code turn with tools, routed to Vertex, streams back through the whole pipeline
// as text, reasoning and a tool call that go-openai assembles, with usage recorded for
// backend vertex.
func TestRooCodeTurnOnVertex(t *testing.T) {
	sse, err := os.ReadFile("../testdata/vertex/stream-function-call.sse")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var gotPath string
	var gotBody []byte
	vertexSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		gotPath, gotBody = r.URL.Path+"?"+r.URL.RawQuery, b
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range bytes.SplitAfter(sse, []byte("\n\n")) {
			_, _ = w.Write(ev)
			w.(http.Flusher).Flush()
		}
	}))
	defer vertexSrv.Close()
	vx, err := backends.NewVertex(context.Background(), backends.VertexConfig{ProjectID: "proj-1", Location: "europe-west4",
		BaseURL: vertexSrv.URL}, vertexSrv.Client(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bes := map[string]backends.Backend{"vertex": vx}
	router, err := routing.New(routing.Config{RankingsPath: t.TempDir() + "/none.json", Default: data.DefaultRouting,
		Enabled: func(b string) bool { return bes[b] != nil }}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rows := make(usageChan, 4)
	proxy := httptest.NewServer(handlers.New(handlers.Config{MaxBodyBytes: 10 << 20, DefaultProfile: "personal"}, handlers.Deps{
		Prompt: mustPrompt(t), Router: router, Context: contextmgr.New(config.Default().Context, nil, nil), Backends: bes, Usage: rows}))
	defer proxy.Close()

	var req openai.ChatCompletionRequest
	b, err := os.ReadFile("../testdata/clients/roo-code-code-tool-turn.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &req); err != nil {
		t.Fatal(err)
	}
	req.Model = "vertex/gemini-2.5-pro"
	cc := openai.DefaultConfig("not-provided")
	cc.BaseURL = proxy.URL + "/v1"
	st, err := openai.NewClientWithConfig(cc).CreateChatCompletionStream(context.Background(), req)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	defer st.Close()
	var content, reasoning string
	var calls []openai.ToolCall
	var finish openai.FinishReason
	var usage *openai.Usage
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if resp.Usage != nil {
			usage = resp.Usage
		}
		for _, c := range resp.Choices {
			content += c.Delta.Content
			reasoning += c.Delta.ReasoningContent
			for _, tc := range c.Delta.ToolCalls {
				if tc.ID != "" {
					calls = append(calls, tc)
				} else {
					calls[*tc.Index].Function.Arguments += tc.Function.Arguments
				}
			}
			if c.FinishReason != "" {
				finish = c.FinishReason
			}
		}
	}
	if content != "I'll read the service file first." || reasoning != "**Planning the change** I need the current ListOrders code." {
		t.Errorf("content=%q reasoning=%q", content, reasoning)
	}
	if len(calls) != 1 || !strings.HasPrefix(calls[0].ID, "call_") || calls[0].Function.Name != "read_file" ||
		calls[0].Function.Arguments != `{"path":"src/orders/service.go"}` || finish != openai.FinishReasonToolCalls {
		t.Errorf("tool calls = %+v, finish = %q", calls, finish)
	}
	if usage == nil || usage.PromptTokens != 5020 || usage.CompletionTokens != 64 || usage.TotalTokens != 5084 {
		t.Errorf("usage = %+v, want 5020/64/5084", usage)
	}
	row := <-rows
	want := storage.Usage{Backend: "vertex", Model: "gemini-2.5-pro", PromptTokens: 5020, CompletionTokens: 64, TotalTokens: 5084,
		StatusCode: 200, Stream: true}
	got := storage.Usage{Backend: row.Backend, Model: row.Model, PromptTokens: row.PromptTokens, CompletionTokens: row.CompletionTokens,
		TotalTokens: row.TotalTokens, StatusCode: row.StatusCode, Stream: row.Stream}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("usage row (-want +got):\n%s", diff)
	}
	mu.Lock()
	defer mu.Unlock()
	if gotPath != "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse" {
		t.Errorf("Vertex path = %s", gotPath)
	}
	if !bytes.Contains(gotBody, []byte(`"functionResponse"`)) || !bytes.Contains(gotBody, []byte(`"inlineData"`)) {
		t.Errorf("the tool turn did not reach Gemini as functionResponse + inlineData: %.300s", gotBody)
	}
}

func mustPrompt(t *testing.T) *promptengineer.Engineer {
	t.Helper()
	eng, err := promptengineer.New(promptengineer.Config{Default: config.DefaultStrategies}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}
