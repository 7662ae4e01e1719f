package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	openai "github.com/sashabaranov/go-openai"
)

// titleTransport adds the attribution headers an application sets on its client.
type titleTransport struct{ base http.RoundTripper }

func (t titleTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Title", "go-openai e2e")
	return t.base.RoundTrip(r)
}

func goOpenAIClient(p *proxy) *openai.Client {
	cfg := openai.DefaultConfig(clientKey)
	cfg.BaseURL = p.URL + "/v1"
	cfg.HTTPClient = &http.Client{Transport: titleTransport{http.DefaultTransport}}
	return openai.NewClientWithConfig(cfg)
}

var readFileTool = openai.Tool{Type: openai.ToolTypeFunction, Function: &openai.FunctionDefinition{
	Name:        "read_file",
	Description: "Read the contents of one or more files.",
	Strict:      true,
	Parameters: json.RawMessage(`{"type":"object","properties":{"path":{"type":"string"}},` +
		`"required":["path"],"additionalProperties":false}`),
}}

func goOpenAIRequest(prompt string) openai.ChatCompletionRequest {
	return openai.ChatCompletionRequest{
		Model: "auto",
		Messages: []openai.ChatCompletionMessage{
			{Role: openai.ChatMessageRoleSystem, Content: "You are a careful Go engineer working in this repository."},
			{Role: openai.ChatMessageRoleUser, Content: prompt},
		},
		Tools:      []openai.Tool{readFileTool},
		ToolChoice: "auto",
	}
}

// TestGoOpenAI drives the real binary with github.com/sashabaranov/go-openai: a streamed
// tool call, a non-streamed answer, and upstream errors on both paths.
func TestGoOpenAI(t *testing.T) {
	mock := newUpstream(t)
	p := startProxy(t, mock, proxyOptions{})
	client := goOpenAIClient(p)
	ctx := context.Background()
	type rowWant struct {
		model, role string
		stream      bool
		status      int
		tokens      [3]int
		errSub      string
	}
	wantRows := map[string]rowWant{}

	t.Run("stream with tool calls", func(t *testing.T) {
		before := len(mock.requests())
		req := goOpenAIRequest("Add pagination to ListOrders in src/orders/service.go.")
		req.Stream = true
		req.StreamOptions = &openai.StreamOptions{IncludeUsage: true}
		stream, err := client.CreateChatCompletionStream(ctx, req)
		if err != nil {
			t.Fatalf("CreateChatCompletionStream: %v", err)
		}
		defer stream.Close()
		var content, reasoning, finish string
		var calls []openai.ToolCall
		var u *openai.Usage
		chunks := 0
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Recv after %d chunks: %v", chunks, err)
			}
			chunks++
			if resp.Usage != nil {
				u = resp.Usage
			}
			if len(resp.Choices) == 0 {
				continue
			}
			c := resp.Choices[0]
			content += c.Delta.Content
			reasoning += c.Delta.ReasoningContent
			for _, tc := range c.Delta.ToolCalls {
				i := *tc.Index
				for len(calls) <= i {
					calls = append(calls, openai.ToolCall{})
				}
				if tc.ID != "" {
					calls[i].ID, calls[i].Type = tc.ID, tc.Type
				}
				if tc.Function.Name != "" {
					calls[i].Function.Name = tc.Function.Name
				}
				calls[i].Function.Arguments += tc.Function.Arguments
			}
			if c.FinishReason != "" {
				finish = string(c.FinishReason)
			}
		}
		if want := len(sseChunks(readFixture(t, "nanogpt/chat-stream-tool-call.sse"))); chunks != want {
			t.Errorf("got %d chunks, want %d (every chunk NanoGPT sent)", chunks, want)
		}
		if content != "Let me read the service first." {
			t.Errorf("content = %q", content)
		}
		if want := "The user wants pagination. I should read the file first."; reasoning != want {
			t.Errorf("reasoning_content = %q, want %q", reasoning, want)
		}
		want := []openai.ToolCall{{ID: "call_a1b2c3", Type: openai.ToolTypeFunction,
			Function: openai.FunctionCall{Name: "read_file", Arguments: `{"path":"src/orders/service.go"}`}}}
		if diff := cmp.Diff(want, calls); diff != "" {
			t.Errorf("tool calls (-want +got):\n%s", diff)
		}
		if finish != "tool_calls" {
			t.Errorf("finish_reason = %q, want tool_calls", finish)
		}
		if u == nil || u.PromptTokens != 5123 || u.CompletionTokens != 61 || u.TotalTokens != 5184 ||
			u.CompletionTokensDetails == nil || u.CompletionTokensDetails.ReasoningTokens != 17 ||
			u.PromptTokensDetails == nil || u.PromptTokensDetails.CachedTokens != 4096 {
			t.Errorf("usage = %+v, want NanoGPT's 5123/61/5184 with reasoning 17 and cached 4096", u)
		}
		h := stream.Header()
		checkGoUpstream(t, mock.requests()[before:], h.Get("X-Proxy-Model"), true)
		wantRows[h.Get("X-Request-Id")] = rowWant{model: h.Get("X-Proxy-Model"), role: h.Get("X-Proxy-Role"),
			stream: true, status: 200, tokens: [3]int{5123, 61, 5184}}
	})

	t.Run("non-streaming", func(t *testing.T) {
		before := len(mock.requests())
		resp, err := client.CreateChatCompletion(ctx, goOpenAIRequest("When should I use context.WithoutCancel?"))
		if err != nil {
			t.Fatalf("CreateChatCompletion: %v", err)
		}
		if len(resp.Choices) != 1 {
			t.Fatalf("got %d choices", len(resp.Choices))
		}
		m := resp.Choices[0].Message
		got := []string{resp.Model, m.Role, m.Content, m.ReasoningContent, string(resp.Choices[0].FinishReason)}
		want := []string{"zai-org/glm-4.6", "assistant", "Use context.WithoutCancel when work must outlive the request.",
			"Short answer is fine.", "stop"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("model, role, content, reasoning_content, finish_reason (-want +got):\n%s", diff)
		}
		if resp.Usage.PromptTokens != 812 || resp.Usage.CompletionTokens != 14 || resp.Usage.TotalTokens != 826 {
			t.Errorf("usage = %+v, want 812/14/826", resp.Usage)
		}
		h := resp.Header()
		checkGoUpstream(t, mock.requests()[before:], h.Get("X-Proxy-Model"), false)
		wantRows[h.Get("X-Request-Id")] = rowWant{model: h.Get("X-Proxy-Model"), role: h.Get("X-Proxy-Role"),
			status: 200, tokens: [3]int{812, 14, 826}}
	})

	t.Run("upstream stream breaks after the first content", func(t *testing.T) {
		req := goOpenAIRequest("Add pagination to ListOrders. " + markCutStream)
		req.Stream = true
		stream, err := client.CreateChatCompletionStream(ctx, req)
		if err != nil {
			t.Fatalf("CreateChatCompletionStream: %v", err)
		}
		defer stream.Close()
		var content string
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				t.Fatalf("the broken stream ended like a complete one (io.EOF) after %q", content)
			}
			if err != nil {
				// Any error will do: go-openai keeps every non-data line (the stream's
				// ": keep-alive" comment) in its error accumulator, so it cannot decode the
				// in-band error event after one and reports a JSON error instead. The npm SDK
				// test checks the event itself.
				break
			}
			if len(resp.Choices) > 0 {
				content += resp.Choices[0].Delta.Content
			}
		}
		if content != "Let me read the service first." {
			t.Errorf("content before the break = %q, want what the upstream sent", content)
		}
	})

	errCases := []struct {
		name          string
		marker        string
		stream        bool
		status        int
		message, code string
	}{
		{"402", markError402, false, 402, "Insufficient balance", "insufficient_balance"},
		{"402 on a stream request", markError402, true, 402, "Insufficient balance", "insufficient_balance"},
		{"429", markError429, false, 429, "Daily request limit exceeded (1000/1000). Resets at midnight UTC.", "daily_rpd_limit_exceeded"},
	}
	for _, tc := range errCases {
		t.Run("upstream "+tc.name, func(t *testing.T) {
			req := goOpenAIRequest("Fix the login bug. " + tc.marker)
			var err error
			if tc.stream {
				req.Stream = true
				var s *openai.ChatCompletionStream
				s, err = client.CreateChatCompletionStream(ctx, req)
				if err == nil {
					s.Close()
				}
			} else {
				_, err = client.CreateChatCompletion(ctx, req)
			}
			var ae *openai.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("error = %v (%T), want *openai.APIError", err, err)
			}
			if ae.HTTPStatusCode != tc.status || ae.Message != tc.message || ae.Code != tc.code {
				t.Errorf("APIError = status %d message %q code %v, want %d %q %q", ae.HTTPStatusCode, ae.Message, ae.Code,
					tc.status, tc.message, tc.code)
			}
		})
	}

	p.stop()
	rows := p.usageRows()
	// Error rows carry no request id the client saw through go-openai; count them by status.
	byStatus := map[int]int{}
	messages := map[int]string{}
	for _, tc := range errCases {
		messages[tc.status] = tc.message
	}
	for id, r := range rows {
		if _, ok := wantRows[id]; !ok {
			byStatus[r.StatusCode]++
			checkRow(t, rows, id, "", "", r.Stream, r.StatusCode, [3]int{}, messages[r.StatusCode])
		}
	}
	messages[502] = "stream broke off"
	if diff := cmp.Diff(map[int]int{402: 2, 429: 1, 502: 1}, byStatus); diff != "" {
		t.Errorf("error rows by status (-want +got):\n%s", diff)
	}
	for id, w := range wantRows {
		checkRow(t, rows, id, w.model, w.role, w.stream, w.status, w.tokens, w.errSub)
	}
	checkRequestLog(t, p.Log.String(), rows)
}

// checkRequestLog: the log has exactly one line per request (the request_id,
// role, model, backend, status, latency and tokens), agreeing with its usage row. Run
// after stop: shutdown writes the lines still gathered in memory.
func checkRequestLog(t *testing.T, log string, rows map[string]usageRow) {
	t.Helper()
	lines := map[string]map[string]string{}
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, " msg=request ") {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(l) {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = strings.Trim(v, `"`)
			}
		}
		id := kv["request_id"]
		if _, dup := lines[id]; dup {
			t.Errorf("two request lines for %s", id)
		}
		lines[id] = kv
	}
	if len(lines) != len(rows) {
		t.Errorf("%d request lines for %d usage rows\nlog:\n%s", len(lines), len(rows), log)
	}
	for id, r := range rows {
		kv, ok := lines[id]
		if !ok {
			t.Errorf("no request line for %s", id)
			continue
		}
		for k, want := range map[string]string{"role": r.Role, "model": r.Model, "backend": r.Backend,
			"status": strconv.Itoa(r.StatusCode), "prompt_tokens": strconv.Itoa(r.PromptTokens),
			"completion_tokens": strconv.Itoa(r.CompletionTokens), "stream": strconv.FormatBool(r.Stream)} {
			if kv[k] != want {
				t.Errorf("request %s: log %s=%q, usage row has %q", id, k, kv[k], want)
			}
		}
		if _, err := strconv.Atoi(kv["latency_ms"]); err != nil {
			t.Errorf("request %s: latency_ms=%q is not a number", id, kv["latency_ms"])
		}
	}
}

// TestUpstreamUnreachable: with nothing listening at NANOGPT_BASE_URL the client gets a
// 502 in the OpenAI envelope, and the failure is recorded.
func TestUpstreamUnreachable(t *testing.T) {
	port, err := freePort() // closed again at once: nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, newUpstream(t), proxyOptions{env: []string{
		"NANOGPT_BASE_URL=http://127.0.0.1:" + strconv.Itoa(port) + "/api/v1"}})
	_, err = goOpenAIClient(p).CreateChatCompletion(context.Background(), goOpenAIRequest("Is anybody there?"))
	var ae *openai.APIError
	if !errors.As(err, &ae) || ae.HTTPStatusCode != http.StatusBadGateway || ae.Message == "" {
		t.Fatalf("error = %v (%T), want *openai.APIError with status 502 and a message", err, err)
	}
	p.stop()
	byStatus := map[int]int{}
	for _, r := range p.usageRows() {
		byStatus[r.StatusCode]++
	}
	if diff := cmp.Diff(map[int]int{502: 1}, byStatus); diff != "" {
		t.Errorf("usage rows by status (-want +got):\n%s", diff)
	}
}

// checkGoUpstream checks what reached NanoGPT for one go-openai request.
func checkGoUpstream(t *testing.T, reqs []recorded, model string, stream bool) {
	t.Helper()
	r := oneUpstreamRequest(t, reqs, "go-openai e2e")
	var body struct {
		Model         string          `json:"model"`
		Stream        bool            `json:"stream"`
		Tools         json.RawMessage `json:"tools"`
		ToolChoice    string          `json:"tool_choice"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("upstream body: %v", err)
	}
	if body.Model != model || model == "" || strings.HasPrefix(model, "auto") {
		t.Errorf("upstream model %q, X-Proxy-Model %q: want the same routed model", body.Model, model)
	}
	sent, _ := json.Marshal([]openai.Tool{readFileTool})
	if diff := cmp.Diff(decodeJSON(t, sent), decodeJSON(t, body.Tools)); diff != "" {
		t.Errorf("tools changed on the way upstream (-client +upstream):\n%s", diff)
	}
	if body.ToolChoice != "auto" || body.Stream != stream {
		t.Errorf("upstream tool_choice %q stream %v, want auto %v", body.ToolChoice, body.Stream, stream)
	}
	if stream && (body.StreamOptions == nil || !body.StreamOptions.IncludeUsage) {
		t.Errorf("upstream stream_options = %+v, want include_usage", body.StreamOptions)
	}
}
