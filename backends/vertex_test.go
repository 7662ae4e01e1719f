package backends

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	openai "github.com/sashabaranov/go-openai"
	"google.golang.org/genai"
)

// The -update flag rewrites golden files. It is registered only if no other test file
// of the package has registered it already.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata/")
	}
}

func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// fakeVertex is an httptest Vertex AI endpoint speaking the REST paths
// /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:generateContent and
// :streamGenerateContent?alt=sse, with Google's error envelope.
type fakeVertex struct {
	srv *httptest.Server

	mu     sync.Mutex
	paths  []string
	bodies [][]byte

	// status and body answer every request when status != 0 (errors, unary answers).
	status int
	body   []byte
	// sse is the stream served with 200 to streamGenerateContent.
	sse []byte
	// hang makes the server wait until the client gives up.
	hang bool
	// stall keeps the stream open after sse until the client gives up.
	stall bool
}

var vertexPath = regexp.MustCompile(`^/v1/projects/proj-1/locations/us-central1/publishers/google/models/([^/:]+):(generateContent|streamGenerateContent)$`)

func newFakeVertex(t *testing.T) *fakeVertex {
	fv := &fakeVertex{}
	fv.srv = httptest.NewServer(http.HandlerFunc(fv.serve))
	t.Cleanup(fv.srv.Close)
	return fv
}

func googleError(w http.ResponseWriter, code int, status, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":{"code":%d,"message":%q,"status":%q}}`, code, msg, status)
}

func (fv *fakeVertex) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fv.mu.Lock()
	fv.paths = append(fv.paths, r.URL.Path+"?"+r.URL.RawQuery)
	fv.bodies = append(fv.bodies, body)
	status, payload, sse, hang, stall := fv.status, fv.body, fv.sse, fv.hang, fv.stall
	fv.mu.Unlock()
	m := vertexPath.FindStringSubmatch(r.URL.Path)
	switch {
	case r.Method != http.MethodPost || m == nil:
		googleError(w, 404, "NOT_FOUND", "The requested URL "+r.URL.Path+" was not found on this server.")
		return
	case m[2] == "streamGenerateContent" && r.URL.Query().Get("alt") != "sse":
		googleError(w, 400, "INVALID_ARGUMENT", "streaming needs alt=sse in this test server")
		return
	case !json.Valid(body):
		googleError(w, 400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
		return
	}
	if hang {
		<-r.Context().Done()
		return
	}
	if status != 0 {
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(status)
		_, _ = w.Write(payload)
		return
	}
	if m[2] == "generateContent" {
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		_, _ = w.Write(payload)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, ev := range bytes.SplitAfter(sse, []byte("\n\n")) {
		if len(ev) == 0 {
			continue
		}
		_, _ = w.Write(ev)
		_ = rc.Flush()
	}
	if stall {
		<-r.Context().Done()
	}
}

func (fv *fakeVertex) lastRequest(t *testing.T) (string, []byte) {
	t.Helper()
	fv.mu.Lock()
	defer fv.mu.Unlock()
	if len(fv.bodies) == 0 {
		t.Fatal("the Vertex server received no request")
	}
	return fv.paths[len(fv.paths)-1], fv.bodies[len(fv.bodies)-1]
}

// newTestVertex builds the real backend (genai client) against fv.
func newTestVertex(t *testing.T, fv *fakeVertex, mod func(*VertexConfig)) *Vertex {
	t.Helper()
	var n atomic.Int64
	cfg := VertexConfig{ProjectID: "proj-1", Location: "us-central1", BaseURL: fv.srv.URL,
		Now:   func() time.Time { return time.Unix(1763647392, 0) },
		NewID: func() string { return fmt.Sprintf("r%d", n.Add(1)) }}
	if mod != nil {
		mod(&cfg)
	}
	v, err := NewVertex(context.Background(), cfg, fv.srv.Client(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewVertex: %v", err)
	}
	return v
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if updating() {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func mustParse(t *testing.T, body []byte) *ChatRequest {
	t.Helper()
	req, err := ParseChatRequest(body)
	if err != nil {
		t.Fatalf("ParseChatRequest: %v", err)
	}
	return req
}

// drain reads a stream to its end and returns the bytes a client that asked for usage
// receives, and the usage seen.
func drain(t *testing.T, st EventStream) ([]byte, *Usage, error) {
	t.Helper()
	var out []byte
	var usage *Usage
	for {
		ev, err := st.Next()
		if errors.Is(err, io.EOF) {
			return out, usage, nil
		}
		if err != nil {
			return out, usage, err
		}
		if ev.Usage != nil {
			usage = ev.Usage
			if !ev.UsageOnly {
				t.Errorf("usage chunk not marked UsageOnly: %s", ev.Data)
			}
		}
		out = append(out, ev.Raw...)
	}
}

// assembled is what an OpenAI SDK client makes of a stream.
type assembled struct {
	Content   string
	Reasoning string
	ToolCalls []openai.ToolCall
	Finish    openai.FinishReason
	Usage     *openai.Usage
	Model     string
}

// assembleWithGoOpenAI serves sse to go-openai's streaming client and accumulates the
// deltas as a client does (tool call deltas keyed by index, id from the first).
func assembleWithGoOpenAI(t *testing.T, sse []byte) assembled {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(sse)
	}))
	defer srv.Close()
	cc := openai.DefaultConfig("test")
	cc.BaseURL = srv.URL + "/v1"
	client := openai.NewClientWithConfig(cc)
	st, err := client.CreateChatCompletionStream(context.Background(), openai.ChatCompletionRequest{
		Model: "gemini-2.5-pro", Stream: true, StreamOptions: &openai.StreamOptions{IncludeUsage: true},
		Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}})
	if err != nil {
		t.Fatalf("CreateChatCompletionStream: %v", err)
	}
	defer st.Close()
	var a assembled
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return a
		}
		if err != nil {
			t.Fatalf("stream Recv: %v", err)
		}
		a.Model = resp.Model
		if resp.Usage != nil {
			a.Usage = resp.Usage
		}
		for _, c := range resp.Choices {
			a.Content += c.Delta.Content
			a.Reasoning += c.Delta.ReasoningContent
			for _, tc := range c.Delta.ToolCalls {
				i := *tc.Index
				for len(a.ToolCalls) <= i {
					a.ToolCalls = append(a.ToolCalls, openai.ToolCall{})
				}
				if tc.ID != "" {
					a.ToolCalls[i].ID, a.ToolCalls[i].Type = tc.ID, tc.Type
				} else if a.ToolCalls[i].ID == "" {
					t.Errorf("tool call %d: first delta has no id (Roo Code drops such a call)", i)
				}
				a.ToolCalls[i].Function.Name += tc.Function.Name
				a.ToolCalls[i].Function.Arguments += tc.Function.Arguments
			}
			if c.FinishReason != "" {
				a.Finish = c.FinishReason
			}
		}
	}
}

func usageOf(p, c, cached, reasoning int) *openai.Usage {
	return &openai.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c,
		PromptTokensDetails:     &openai.PromptTokensDetails{CachedTokens: cached},
		CompletionTokensDetails: &openai.CompletionTokensDetails{ReasoningTokens: reasoning}}
}

func toolCall(id, name, args string) openai.ToolCall {
	return openai.ToolCall{ID: id, Type: openai.ToolTypeFunction, Function: openai.FunctionCall{Name: name, Arguments: args}}
}

const streamReq = `{"model":"gemini-2.5-pro","stream":true,"messages":[{"role":"user","content":"hi"}]}`

// Gemini streams → OpenAI chunks, golden and re-assembled by go-openai.
func TestVertexStreamTranslation(t *testing.T) {
	tests := []struct {
		name  string
		want  assembled
		usage Usage
	}{
		{"text", assembled{Content: `Use <context.WithoutCancel> when work must "outlive" the request.`,
			Finish: "stop", Usage: usageOf(12, 11, 4, 0)}, Usage{12, 11, 23}},
		{"thoughts", assembled{Reasoning: "**Weighing options** The caller cancels; the write must survive.",
			Content: "Detach the context with context.WithoutCancel.", Finish: "stop", Usage: usageOf(30, 129, 0, 120)},
			Usage{30, 129, 159}},
		{"function-call", assembled{Reasoning: "**Planning the change** I need the current ListOrders code.",
			Content:   "I'll read the service file first.",
			ToolCalls: []openai.ToolCall{toolCall("call_r1_0_ts_CiQBVKhc7nq2", "read_file", `{"path":"src/orders/service.go"}`)},
			Finish:    "tool_calls", Usage: usageOf(5020, 64, 0, 23)}, Usage{5020, 64, 5084}},
		{"parallel-function-calls", assembled{Reasoning: "Reading both files.",
			ToolCalls: []openai.ToolCall{
				toolCall("call_r1_0_ts_CiQBVKhc7nq2", "read_file", `{"path":"src/orders/service.go"}`),
				toolCall("call_r1_1", "read_file", `{"path":"src/orders/service_test.go"}`),
				toolCall("call_r1_2", "execute_command", `{"command":"go test ./...","cwd":null}`)},
			Finish: "tool_calls", Usage: usageOf(5020, 70, 4096, 10)}, Usage{5020, 70, 5090}},
		{"safety", assembled{Content: "I can explain how", Finish: "content_filter", Usage: usageOf(15, 4, 0, 0)}, Usage{15, 4, 19}},
		{"max-tokens", assembled{Content: "The first step is to read", Finish: "length", Usage: usageOf(40, 5, 0, 0)}, Usage{40, 5, 45}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv := newFakeVertex(t)
			fv.sse = readFile(t, filepath.Join("testdata", "vertex", "streams", tt.name+".sse"))
			v := newTestVertex(t, fv, nil)
			resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
			if err != nil {
				t.Fatalf("ChatCompletion: %v", err)
			}
			defer resp.Close()
			if resp.Model != "gemini-2.5-pro" {
				t.Errorf("Response.Model = %q, want gemini-2.5-pro", resp.Model)
			}
			out, usage, err := drain(t, resp.Stream)
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			golden(t, filepath.Join("testdata", "vertex", "streams", tt.name+".openai.sse"), out)
			if usage == nil || *usage != tt.usage {
				t.Errorf("Event.Usage = %+v, want %+v", usage, tt.usage)
			}
			// The first chunk is role-only, the last is [DONE].
			first, _, _ := bytes.Cut(out, []byte("\n\n"))
			if !bytes.Contains(first, []byte(`"delta":{"role":"assistant","content":""}`)) {
				t.Errorf("first chunk is not role-only: %s", first)
			}
			if !bytes.HasSuffix(out, []byte("data: [DONE]\n\n")) {
				t.Errorf("stream does not end with [DONE]")
			}
			got := assembleWithGoOpenAI(t, out)
			tt.want.Model = "gemini-2.5-pro"
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("assembled by go-openai (-want +got):\n%s", diff)
			}
		})
	}
}

// Non-streaming: :generateContent → chat.completion, read by go-openai.
func TestVertexNonStreaming(t *testing.T) {
	fv := newFakeVertex(t)
	fv.body = readFile(t, "../testdata/vertex/generate-content.json")
	v := newTestVertex(t, fv, nil)
	req := mustParse(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"When do I detach a context?"}]}`))
	resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: req})
	if err != nil {
		t.Fatalf("ChatCompletion: %v", err)
	}
	if path, _ := fv.lastRequest(t); !strings.HasSuffix(path, "/gemini-2.5-pro:generateContent?") {
		t.Errorf("path = %s, want :generateContent", path)
	}
	if resp.Usage == nil || *resp.Usage != (Usage{12, 11, 23}) {
		t.Errorf("Response.Usage = %+v, want {12 11 23}", resp.Usage)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp.Body)
	}))
	defer srv.Close()
	cc := openai.DefaultConfig("test")
	cc.BaseURL = srv.URL + "/v1"
	got, err := openai.NewClientWithConfig(cc).CreateChatCompletion(context.Background(), openai.ChatCompletionRequest{
		Model: "gemini-2.5-pro", Messages: []openai.ChatCompletionMessage{{Role: "user", Content: "hi"}}})
	if err != nil {
		t.Fatalf("go-openai could not read the body: %v\n%s", err, resp.Body)
	}
	if got.Object != "chat.completion" || !strings.HasPrefix(got.ID, "chatcmpl-") || got.Model != "gemini-2.5-pro" {
		t.Errorf("envelope: object=%q id=%q model=%q", got.Object, got.ID, got.Model)
	}
	if len(got.Choices) != 1 || got.Choices[0].Message.Content != "Use context.WithoutCancel when work must outlive the request." ||
		got.Choices[0].FinishReason != "stop" || got.Choices[0].Message.Role != "assistant" {
		t.Errorf("choices = %+v", got.Choices)
	}
	if diff := cmp.Diff(*usageOf(12, 11, 0, 0), got.Usage); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
}

// Non-streaming tool calls: content null, ids, finish tool_calls.
func TestVertexNonStreamingToolCall(t *testing.T) {
	fv := newFakeVertex(t)
	fv.body = []byte(`{"modelVersion":"gemini-2.5-pro","candidates":[{"content":{"role":"model","parts":[
		{"text":"Checking.","thought":true},
		{"functionCall":{"name":"read_file","args":{"path":"a.go"}},"thoughtSignature":"CiQBVKhc7nq2"},
		{"functionCall":{"name":"read_file","args":{"path":"b.go"}}}]},"finishReason":"STOP"}],
		"usageMetadata":{"promptTokenCount":100,"candidatesTokenCount":20,"thoughtsTokenCount":7,"cachedContentTokenCount":64,"totalTokenCount":127}}`)
	v := newTestVertex(t, fv, nil)
	resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro",
		Request: mustParse(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"read a and b"}]}`))})
	if err != nil {
		t.Fatalf("ChatCompletion: %v", err)
	}
	var got openai.ChatCompletionResponse
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	msg := got.Choices[0].Message
	want := []openai.ToolCall{toolCall("call_r1_0_ts_CiQBVKhc7nq2", "read_file", `{"path":"a.go"}`),
		toolCall("call_r1_1", "read_file", `{"path":"b.go"}`)}
	if diff := cmp.Diff(want, msg.ToolCalls); diff != "" {
		t.Errorf("tool calls (-want +got):\n%s", diff)
	}
	if msg.ReasoningContent != "Checking." || got.Choices[0].FinishReason != "tool_calls" {
		t.Errorf("reasoning=%q finish=%q", msg.ReasoningContent, got.Choices[0].FinishReason)
	}
	if !bytes.Contains(resp.Body, []byte(`"content":null`)) {
		t.Errorf("content of a tool-call-only answer should be null: %s", resp.Body)
	}
	if diff := cmp.Diff(*usageOf(100, 27, 64, 7), got.Usage); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
}

// Each coding-agent fixture → the Gemini request the Vertex server receives.
func TestVertexRequestTranslationGolden(t *testing.T) {
	files, err := filepath.Glob("../testdata/clients/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no client fixtures: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			fv := newFakeVertex(t)
			fv.sse = readFile(t, "testdata/vertex/streams/text.sse")
			fv.body = readFile(t, "../testdata/vertex/generate-content.json")
			v := newTestVertex(t, fv, nil)
			req := mustParse(t, readFile(t, f))
			resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: req})
			if err != nil {
				t.Fatalf("ChatCompletion: %v", err)
			}
			if resp.Stream != nil {
				if _, _, err := drain(t, resp.Stream); err != nil {
					t.Fatal(err)
				}
			}
			resp.Close()
			path, body := fv.lastRequest(t)
			wantSuffix := ":generateContent?"
			if req.Stream {
				wantSuffix = ":streamGenerateContent?alt=sse"
			}
			if !strings.HasSuffix(path, wantSuffix) {
				t.Errorf("path %s, want suffix %s", path, wantSuffix)
			}
			for _, banned := range []string{`"strict"`, `"additionalProperties"`, `"$schema"`, `"tool_choice"`, `"parallel_tool_calls"`, `"stream_options"`, `"messages"`} {
				if bytes.Contains(body, []byte(banned)) {
					t.Errorf("Gemini request contains %s", banned)
				}
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, body, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			golden(t, filepath.Join("testdata", "vertex", "requests", name+".json"), pretty.Bytes())
			checkRequestFacts(t, req, body)
		})
	}
}

// geminiRequest is the part of the REST body the checks read.
type geminiRequest struct {
	Contents []struct {
		Role  string           `json:"role"`
		Parts []map[string]any `json:"parts"`
	} `json:"contents"`
	SystemInstruction *struct {
		Parts []struct {
			Text string `json:"text"`
		} `json:"parts"`
	} `json:"systemInstruction"`
	Tools []struct {
		FunctionDeclarations []struct {
			Name       string         `json:"name"`
			Parameters map[string]any `json:"parameters"`
		} `json:"functionDeclarations"`
	} `json:"tools"`
	ToolConfig *struct {
		FunctionCallingConfig struct {
			Mode                 string   `json:"mode"`
			AllowedFunctionNames []string `json:"allowedFunctionNames"`
		} `json:"functionCallingConfig"`
	} `json:"toolConfig"`
	GenerationConfig map[string]any `json:"generationConfig"`
}

// checkRequestFacts asserts what Gemini needs from any client request: the system
// prompt as systemInstruction, alternating roles, every tool declared, temperature kept.
func checkRequestFacts(t *testing.T, req *ChatRequest, body []byte) {
	t.Helper()
	var g geminiRequest
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatal(err)
	}
	hasSystem := false
	for _, m := range req.Messages {
		hasSystem = hasSystem || m.Role == "system"
	}
	if hasSystem != (g.SystemInstruction != nil) {
		t.Errorf("systemInstruction present = %v, want %v", g.SystemInstruction != nil, hasSystem)
	}
	if hasSystem && !strings.HasPrefix(g.SystemInstruction.Parts[0].Text, req.Messages[0].Text(40)) {
		t.Errorf("systemInstruction does not start with the system prompt")
	}
	for i := 1; i < len(g.Contents); i++ {
		if g.Contents[i].Role == g.Contents[i-1].Role {
			t.Errorf("contents[%d] and [%d] share role %s; Gemini needs them merged", i-1, i, g.Contents[i].Role)
		}
	}
	var tools []json.RawMessage
	if raw := req.Get("tools"); raw != nil {
		_ = json.Unmarshal(raw, &tools)
	}
	if len(tools) > 0 {
		if len(g.Tools) != 1 || len(g.Tools[0].FunctionDeclarations) != len(tools) {
			t.Errorf("declared %d functions, want %d", len(g.Tools[0].FunctionDeclarations), len(tools))
		}
		if g.ToolConfig == nil || g.ToolConfig.FunctionCallingConfig.Mode != "AUTO" {
			t.Errorf("tool_choice auto not mapped: %+v", g.ToolConfig)
		}
	}
	if req.Get("temperature") != nil && g.GenerationConfig["temperature"] != 0.0 {
		t.Errorf("temperature 0 not forwarded: %v", g.GenerationConfig)
	}
}

// The Roo Code tool turn: assistant tool_calls → functionCall, tool → functionResponse
// named by tool_call_id, image data URI → inlineData, roles merged.
func TestVertexToolTurnTranslation(t *testing.T) {
	fv := newFakeVertex(t)
	fv.sse = readFile(t, "testdata/vertex/streams/function-call.sse")
	v := newTestVertex(t, fv, nil)
	req := mustParse(t, readFile(t, "../testdata/clients/roo-code-code-tool-turn.json"))
	resp, err := v.ChatCompletion(context.Background(), &Call{Model: "google/gemini-2.5-pro", Request: req})
	if err != nil {
		t.Fatal(err)
	}
	resp.Close()
	_, body := fv.lastRequest(t)
	var g geminiRequest
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, c := range g.Contents {
		roles = append(roles, c.Role)
	}
	if diff := cmp.Diff([]string{"user", "model", "user"}, roles); diff != "" {
		t.Fatalf("roles (-want +got):\n%s", diff)
	}
	call := g.Contents[1].Parts[0]["functionCall"]
	if diff := cmp.Diff(map[string]any{"name": "read_file", "args": map[string]any{"path": "src/orders/service.go"}}, call); diff != "" {
		t.Errorf("functionCall (-want +got):\n%s", diff)
	}
	last := g.Contents[2].Parts
	fr, _ := last[0]["functionResponse"].(map[string]any)
	if fr["name"] != "read_file" || !strings.Contains(fmt.Sprint(fr["response"]), "ListOrders") {
		t.Errorf("functionResponse = %v", fr)
	}
	inline, _ := last[2]["inlineData"].(map[string]any)
	if inline["mimeType"] != "image/png" || !strings.HasPrefix(fmt.Sprint(inline["data"]), "iVBORw0KGgo") {
		t.Errorf("image part = %v", last[2])
	}
	if last[1]["text"] != "Here is the failing CI screenshot." {
		t.Errorf("text part = %v", last[1])
	}
	// execute_command's cwd is ["string","null"]: a nullable STRING, still required.
	var exec map[string]any
	for _, d := range g.Tools[0].FunctionDeclarations {
		if d.Name == "execute_command" {
			exec = d.Parameters
		}
	}
	want := map[string]any{"type": "OBJECT", "required": []any{"command", "cwd"}, "properties": map[string]any{
		"command": map[string]any{"type": "STRING"}, "cwd": map[string]any{"type": "STRING", "nullable": true}}}
	if diff := cmp.Diff(want, exec); diff != "" {
		t.Errorf("execute_command parameters (-want +got):\n%s", diff)
	}
}

// A tool call made by Vertex comes back in the client's next turn; its thoughtSignature
// must reach Gemini again on the functionCall part.
func TestVertexThoughtSignatureRoundTrip(t *testing.T) {
	fv := newFakeVertex(t)
	fv.sse = readFile(t, "testdata/vertex/streams/function-call.sse")
	v := newTestVertex(t, fv, nil)
	resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := drain(t, resp.Stream)
	resp.Close()
	if err != nil {
		t.Fatal(err)
	}
	a := assembleWithGoOpenAI(t, out)
	if len(a.ToolCalls) != 1 {
		t.Fatalf("tool calls = %+v", a.ToolCalls)
	}
	// The client's next turn, built by go-openai as Roo Code would.
	next := openai.ChatCompletionRequest{Model: "auto", Stream: true, Messages: []openai.ChatCompletionMessage{
		{Role: "user", Content: "Fix ListOrders."},
		{Role: "assistant", Content: a.Content, ToolCalls: a.ToolCalls},
		{Role: "tool", ToolCallID: a.ToolCalls[0].ID, Content: "package orders"},
	}}
	body, _ := json.Marshal(next)
	fv.sse = readFile(t, "testdata/vertex/streams/text.sse")
	resp, err = v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, body)})
	if err != nil {
		t.Fatal(err)
	}
	resp.Close()
	_, sent := fv.lastRequest(t)
	var g geminiRequest
	if err := json.Unmarshal(sent, &g); err != nil {
		t.Fatal(err)
	}
	var sig any
	var fnName any
	for _, c := range g.Contents {
		for _, p := range c.Parts {
			if p["functionCall"] != nil {
				sig = p["thoughtSignature"]
			}
			if fr, ok := p["functionResponse"].(map[string]any); ok {
				fnName = fr["name"]
			}
		}
	}
	if sig != "CiQBVKhc7nq2" {
		t.Errorf("thoughtSignature sent back = %v, want CiQBVKhc7nq2\n%s", sig, sent)
	}
	if fnName != "read_file" {
		t.Errorf("functionResponse name = %v, want read_file", fnName)
	}
}

// gemini-2.5-pro, google/gemini-2.5-pro and vertex/gemini-2.5-pro address the same model.
func TestVertexModelIDs(t *testing.T) {
	for _, id := range []string{"gemini-2.5-pro", "google/gemini-2.5-pro", "vertex/gemini-2.5-pro"} {
		t.Run(id, func(t *testing.T) {
			fv := newFakeVertex(t)
			fv.body = readFile(t, "../testdata/vertex/generate-content.json")
			v := newTestVertex(t, fv, nil)
			_, err := v.ChatCompletion(context.Background(), &Call{Model: id,
				Request: mustParse(t, []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`))})
			if err != nil {
				t.Fatal(err)
			}
			path, _ := fv.lastRequest(t)
			want := "/v1/projects/proj-1/locations/us-central1/publishers/google/models/gemini-2.5-pro:generateContent?"
			if path != want {
				t.Errorf("path = %s, want %s", path, want)
			}
		})
	}
}

// Google errors → the OpenAI envelope with the right status and type, Google's text kept.
func TestVertexErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		wantCode int
		wantType string
		wantMsg  string
	}{
		{"400 invalid argument", 400, string(readFile(t, "../testdata/vertex/error-400-schema.json")), 400, "invalid_request_error",
			"Unable to submit request because one or more function parameters didn't specify the schema type field."},
		{"400 context length", 400, `{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}`,
			400, "invalid_request_error", "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576). (context length exceeded)"},
		{"401 unauthenticated", 401, `{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}`,
			401, "authentication_error", "Request had invalid authentication credentials."},
		{"403 permission denied", 403, `{"error":{"code":403,"message":"Permission 'aiplatform.endpoints.predict' denied on resource.","status":"PERMISSION_DENIED"}}`,
			403, "permission_error", "Permission 'aiplatform.endpoints.predict' denied on resource."},
		{"404 model", 404, `{"error":{"code":404,"message":"Publisher Model gemini-9 was not found.","status":"NOT_FOUND"}}`,
			404, "not_found_error", "Publisher Model gemini-9 was not found."},
		{"429 resource exhausted", 429, string(readFile(t, "../testdata/vertex/error-429.json")), 429, "rate_limit_error",
			"Resource exhausted. Please try again later."},
		{"500 internal", 500, `{"error":{"code":500,"message":"Internal error encountered.","status":"INTERNAL"}}`,
			502, "upstream_error", "Internal error encountered."},
		{"503 unavailable", 503, `{"error":{"code":503,"message":"The service is currently unavailable.","status":"UNAVAILABLE"}}`,
			503, "server_error", "The service is currently unavailable."},
		{"504 deadline", 504, `{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}`,
			504, "timeout_error", "Deadline expired before operation could complete."},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/stream=%v", tt.name, stream), func(t *testing.T) {
				fv := newFakeVertex(t)
				fv.status, fv.body = tt.status, []byte(tt.body)
				v := newTestVertex(t, fv, nil)
				body := fmt.Sprintf(`{"model":"x","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
				_, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(body))})
				checkAPIError(t, err, tt.wantCode, tt.wantType, tt.wantMsg)
			})
		}
	}
}

func checkAPIError(t *testing.T, err error, code int, typ, msg string) {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	if ae.Status != code || ae.Type != typ || ae.Backend != "vertex" || (msg != "" && ae.Message != msg) {
		t.Errorf("got status=%d type=%q backend=%q message=%q; want %d %q vertex %q", ae.Status, ae.Type, ae.Backend, ae.Message, code, typ, msg)
	}
	env, _ := json.Marshal(ae)
	if !bytes.HasPrefix(env, []byte(`{"error":{"message":`)) {
		t.Errorf("envelope = %s", env)
	}
}

// A Vertex that never answers: 504 after the first-byte timeout, for both modes; and
// an error record in the middle of a stream reaches the client as an APIError.
func TestVertexTimeoutAndStreamError(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprintf("first byte timeout/stream=%v", stream), func(t *testing.T) {
			fv := newFakeVertex(t)
			fv.hang = true
			v := newTestVertex(t, fv, func(c *VertexConfig) { c.FirstByteTimeout = 50 * time.Millisecond })
			body := fmt.Sprintf(`{"model":"x","stream":%v,"messages":[{"role":"user","content":"hi"}]}`, stream)
			_, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(body))})
			checkAPIError(t, err, 504, "timeout_error", "")
		})
	}
	t.Run("client deadline", func(t *testing.T) {
		fv := newFakeVertex(t)
		fv.hang = true
		v := newTestVertex(t, fv, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := v.ChatCompletion(ctx, &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
		checkAPIError(t, err, 504, "timeout_error", "")
	})
	t.Run("error record mid-stream", func(t *testing.T) {
		fv := newFakeVertex(t)
		fv.sse = []byte(`data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}` + "\n\n" +
			`data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}` + "\n\n")
		v := newTestVertex(t, fv, nil)
		resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Close()
		out, _, err := drain(t, resp.Stream)
		if !bytes.Contains(out, []byte(`"content":"Hel"`)) {
			t.Errorf("text before the error is lost: %s", out)
		}
		checkAPIError(t, err, 503, "server_error", "The model is overloaded.")
	})
	t.Run("stream stalls past the idle timeout", func(t *testing.T) {
		fv := newFakeVertex(t)
		fv.sse = []byte(`data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}` + "\n\n")
		fv.stall = true
		v := newTestVertex(t, fv, func(c *VertexConfig) { c.IdleTimeout = 50 * time.Millisecond })
		resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Close()
		_, _, err = drain(t, resp.Stream)
		checkAPIError(t, err, 504, "timeout_error", "")
	})
	t.Run("unreachable", func(t *testing.T) {
		fv := newFakeVertex(t)
		v := newTestVertex(t, fv, nil)
		fv.srv.Close()
		_, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
		if err == nil || !Retryable(err) {
			t.Fatalf("err = %v, want a retryable transport error", err)
		}
		if ae := AsAPIError("vertex", err); ae.Status != 502 {
			t.Errorf("client sees %d, want 502", ae.Status)
		}
	})
	t.Run("stream cut without finish", func(t *testing.T) {
		fv := newFakeVertex(t)
		fv.sse = []byte(`data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}]}` + "\n\n")
		v := newTestVertex(t, fv, nil)
		resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(streamReq))})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Close()
		out, _, err := drain(t, resp.Stream)
		if !errors.Is(err, ErrStreamCut) || bytes.Contains(out, []byte("[DONE]")) {
			t.Errorf("a cut stream must not end clean: err=%v", err)
		}
	})
}

// Without a base URL override, a project and no Google credentials, construction fails
// (main leaves the backend disabled and /status says why); without a project it is disabled.
func TestNewVertexNeedsProject(t *testing.T) {
	if _, err := NewVertex(context.Background(), VertexConfig{}, nil, nil); err == nil ||
		!strings.Contains(err.Error(), "VERTEX_PROJECT_ID") {
		t.Errorf("NewVertex without project: %v", err)
	}
}

// BenchmarkVertexTranslateRequest measures the per-request cost of turning Roo Code's
// tool turn (7 tools, image, tool result) into the Gemini request.
func BenchmarkVertexTranslateRequest(b *testing.B) {
	body, err := os.ReadFile("../testdata/clients/roo-code-code-tool-turn.json")
	if err != nil {
		b.Fatal(err)
	}
	req, err := ParseChatRequest(body)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	for _, bc := range []struct {
		name  string
		cache *declCache
	}{{"uncached", nil}, {"cached-tools", &declCache{}}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := translateRequest(context.Background(), log, bc.cache, req, "gemini-2.5-pro"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVertexStreamRecord measures translating one Gemini text record to a chunk.
func BenchmarkVertexStreamRecord(b *testing.B) {
	var rec genai.GenerateContentResponse
	if err := json.Unmarshal([]byte(`{"modelVersion":"gemini-2.5-pro","candidates":[{"content":{"role":"model","parts":[{"text":"Use context.WithoutCancel when work must outlive the request."}]}}]}`), &rec); err != nil {
		b.Fatal(err)
	}
	tr := &translator{id: "r1", created: 1, model: "gemini-2.5-pro"}
	b.ReportAllocs()
	for b.Loop() {
		if evs := tr.record(&rec); len(evs) != 1 {
			b.Fatal("want one chunk")
		}
	}
}

// Concurrent Roo Code turns share the cached tool declarations; every request still
// carries all of them (run with -race: the SDK must only read them).
func TestVertexConcurrentSharedTools(t *testing.T) {
	fv := newFakeVertex(t)
	fv.sse = readFile(t, "testdata/vertex/streams/text.sse")
	v := newTestVertex(t, fv, nil)
	body := readFile(t, "../testdata/clients/roo-code-code-tool-turn.json")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, err := ParseChatRequest(body)
			if err != nil {
				errs <- err
				return
			}
			resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: req})
			if err != nil {
				errs <- err
				return
			}
			defer resp.Close()
			for {
				if _, err := resp.Stream.Next(); err != nil {
					if !errors.Is(err, io.EOF) {
						errs <- err
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	fv.mu.Lock()
	defer fv.mu.Unlock()
	for i, b := range fv.bodies {
		var g geminiRequest
		if err := json.Unmarshal(b, &g); err != nil || len(g.Tools) != 1 || len(g.Tools[0].FunctionDeclarations) != 7 {
			t.Errorf("request %d: tools = %+v (%v)", i, g.Tools, err)
		}
	}
}
