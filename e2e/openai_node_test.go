package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// needNode returns the node binary and the e2e directory's node_modules check; without
// them the test is skipped locally and fails in CI (CI=true), which installs both.
func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		if _, err = os.Stat(filepath.Join("node_modules", "openai", "package.json")); err != nil {
			err = &missingError{"the openai npm package (run: npm ci --prefix e2e)"}
		}
	} else {
		err = &missingError{"node (install Node.js 20+)"}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("end-to-end SDK tests need %v", err)
		}
		t.Skipf("skipping the openai npm SDK tests: %v", err)
	}
	return node
}

type missingError struct{ what string }

func (e *missingError) Error() string { return e.what }

// proxyHeaders are the proxy's response headers as the driver reports them.
type proxyHeaders struct {
	RequestID   string `json:"request_id"`
	Role        string `json:"role"`
	Model       string `json:"model"`
	Backend     string `json:"backend"`
	ContentType string `json:"content_type"`
}

type toolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Deltas    int    `json:"deltas,omitempty"`
}

type usage struct {
	PromptTokens            int `json:"prompt_tokens"`
	CompletionTokens        int `json:"completion_tokens"`
	TotalTokens             int `json:"total_tokens"`
	CompletionTokensDetails *struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details,omitempty"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details,omitempty"`
}

type streamResult struct {
	Headers          proxyHeaders      `json:"headers"`
	Chunks           []json.RawMessage `json:"chunks"`
	Content          string            `json:"content"`
	ReasoningContent string            `json:"reasoning_content"`
	ToolCalls        []toolCall        `json:"tool_calls"`
	FinishReason     string            `json:"finish_reason"`
	Usage            *usage            `json:"usage"`
}

type helperResult struct {
	ContentEvents string     `json:"content_events"`
	Content       string     `json:"content"`
	ToolCalls     []toolCall `json:"tool_calls"`
	FinishReason  string     `json:"finish_reason"`
	Usage         *usage     `json:"usage"`
	Model         string     `json:"model"`
}

type jsonResult struct {
	Headers    proxyHeaders    `json:"headers"`
	Completion json.RawMessage `json:"completion"`
}

type errorResult struct {
	IsAPIError bool   `json:"is_api_error"`
	Class      string `json:"class"`
	Status     int    `json:"status"`
	Message    string `json:"message"`
	Code       string `json:"code"`
	Type       string `json:"type"`
	RequestID  string `json:"request_id"`
	RetryAfter string `json:"retry_after"`
}

// runNode runs openai_sdk.mjs for one scenario with body and decodes its output into out.
func runNode(t *testing.T, node, scenario, baseURL string, body []byte, clientOptions string, out any) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "body.json")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"openai_sdk.mjs", scenario, baseURL, path}
	if clientOptions != "" {
		args = append(args, clientOptions)
	}
	cmd := exec.Command(node, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("node openai_sdk.mjs %s: %v\n%s", scenario, err, stderr.String())
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("node openai_sdk.mjs %s printed %.500s: %v", scenario, stdout, err)
	}
}

// wantChunks is what a client must receive for a NanoGPT stream: every data chunk as sent,
// with reasoning_content beside each reasoning delta.
func wantChunks(t *testing.T, sse []byte) []any {
	t.Helper()
	var out []any
	for _, c := range sseChunks(sse) {
		v := decodeJSON(t, c)
		for _, ch := range v.(map[string]any)["choices"].([]any) {
			d := ch.(map[string]any)["delta"].(map[string]any)
			if r, ok := d["reasoning"]; ok {
				d["reasoning_content"] = r
			}
		}
		out = append(out, v)
	}
	return out
}

// What chat-stream-tool-call.sse says, as a client assembles it.
var (
	wantToolCall = toolCall{ID: "call_a1b2c3", Name: "read_file", Arguments: `{"path":"src/orders/service.go"}`}
	wantUsage    = usage{PromptTokens: 5123, CompletionTokens: 61, TotalTokens: 5184}
)

// TestOpenAINodeSDK drives the real binary with the official openai npm SDK, configured the
// way Roo Code configures it, through a streamed tool call, the SDK's stream helper, a
// non-streamed answer, upstream errors and a request the proxy itself rejects.
func TestOpenAINodeSDK(t *testing.T) {
	node := needNode(t)
	mock := newUpstream(t)
	p := startProxy(t, mock, proxyOptions{})
	base := p.URL + "/v1"
	rooBody := readFixture(t, "clients/roo-code-code-first-turn.json")
	oneShot := readFixture(t, "clients/roo-code-one-shot.json")

	// Which request ids must have which usage row.
	type rowWant struct {
		model  string // from X-Proxy-Model; "" for errors (whatever was tried last)
		role   string
		stream bool
		status int
		tokens [3]int // prompt, completion, total (errors: not checked)
		errSub string
	}
	wantRows := map[string]rowWant{}
	cutRows := 0 // streams broken by the upstream: their rows are counted, not matched by id

	streams := []struct{ name, fixture string }{
		{"stream with tool calls: first turn", "clients/roo-code-code-first-turn.json"},
		{"stream with tool calls: turn with a tool result and an image", "clients/roo-code-code-tool-turn.json"},
	}
	for _, sc := range streams {
		t.Run(sc.name, func(t *testing.T) {
			testNodeStream(t, node, mock, base, readFixture(t, sc.fixture), func(h proxyHeaders) {
				wantRows[h.RequestID] = rowWant{model: h.Model, role: h.Role, stream: true, status: 200,
					tokens: [3]int{5123, 61, 5184}}
			})
		})
	}

	t.Run("stream helper finalChatCompletion", func(t *testing.T) {
		var got helperResult
		runNode(t, node, "helper", base, rooBody, "", &got)
		want := helperResult{
			ContentEvents: "Let me read the service first.",
			Content:       "Let me read the service first.",
			ToolCalls:     []toolCall{wantToolCall},
			FinishReason:  "tool_calls",
			Model:         "zai-org/glm-4.6", // the model that answered, as NanoGPT said
		}
		gotUsage := got.Usage
		got.Usage = nil
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("final chat completion (-want +got):\n%s", diff)
		}
		checkUsage(t, gotUsage, wantUsage)
	})

	t.Run("non-streaming", func(t *testing.T) {
		before := len(mock.requests())
		var got jsonResult
		runNode(t, node, "json", base, oneShot, "", &got)
		want := decodeJSON(t, readFixture(t, "nanogpt/chat-completion.json"))
		msg := want.(map[string]any)["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)
		msg["reasoning_content"] = msg["reasoning"]
		if diff := cmp.Diff(want, decodeJSON(t, got.Completion)); diff != "" {
			t.Errorf("completion differs from NanoGPT's (-want +got):\n%s", diff)
		}
		if got.Headers.Backend != "nanogpt" {
			t.Errorf("X-Proxy-Backend = %q, want nanogpt", got.Headers.Backend)
		}
		checkUpstreamRequests(t, mock.requests()[before:], oneShot, got.Headers.Model)
		wantRows[got.Headers.RequestID] = rowWant{model: got.Headers.Model, role: got.Headers.Role, status: 200,
			tokens: [3]int{812, 14, 826}}
	})

	errCases := []struct {
		name, marker, options string
		upstreamMsg           string
		want                  errorResult
	}{
		{name: "upstream 402", marker: markError402, upstreamMsg: "Insufficient balance", want: errorResult{IsAPIError: true, Class: "APIError", Status: 402,
			Message: "402 Insufficient balance", Code: "insufficient_balance", Type: "insufficient_quota"}},
		// maxRetries 0: the SDK would otherwise wait out Retry-After twice.
		{name: "upstream 429", marker: markError429, options: `{"maxRetries":0}`,
			upstreamMsg: "Daily request limit exceeded", want: errorResult{IsAPIError: true,
				Class: "RateLimitError", Status: 429, Message: "429 Daily request limit exceeded (1000/1000). Resets at midnight UTC.",
				Code: "daily_rpd_limit_exceeded", Type: "rate_limit_error", RetryAfter: "30"}},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			body := bytes.Replace(oneShot, []byte("fix the login bug"), []byte("fix the login bug "+tc.marker), 1)
			var got errorResult
			runNode(t, node, "error", base, body, tc.options, &got)
			if got.RequestID == "" {
				t.Errorf("the error response has no X-Request-Id")
			}
			id := got.RequestID
			got.RequestID = ""
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("SDK error (-want +got):\n%s", diff)
			}
			wantRows[id] = rowWant{status: tc.want.Status, errSub: tc.upstreamMsg}
		})
	}

	t.Run("upstream stream breaks after the first content", func(t *testing.T) {
		body := bytes.Replace(rooBody, []byte("update the tests."), []byte("update the tests. "+markCutStream), 1)
		var got errorResult
		runNode(t, node, "error", base, body, "", &got)
		// openai-node throws on an in-band error event: the user sees an error, not a short answer.
		// (Status 0: the error came in-band, after the 200 headers; APIConnectionError would
		// mean the stream merely ended.)
		if !got.IsAPIError || got.Class != "APIError" || got.Status != 0 || got.Code != "stream_interrupted" ||
			!strings.Contains(got.Message, "stream broke off") {
			t.Errorf("SDK error = %+v, want an in-band APIError stream_interrupted", got)
		}
		cutRows++
	})

	t.Run("proxy 400 for empty messages", func(t *testing.T) {
		before := len(mock.requests())
		var got errorResult
		runNode(t, node, "error", base, []byte(`{"model":"auto","messages":[]}`), "", &got)
		if !got.IsAPIError || got.Class != "BadRequestError" || got.Status != 400 || got.Type != "invalid_request_error" {
			t.Errorf("SDK error = %+v, want a BadRequestError 400 invalid_request_error", got)
		}
		if !strings.Contains(got.Message, "messages") {
			t.Errorf("message %q does not name the messages field", got.Message)
		}
		if n := len(mock.requests()) - before; n != 0 {
			t.Errorf("a rejected request reached the upstream %d times", n)
		}
	})

	p.stop()
	rows := p.usageRows()
	// The stream helper's row: the one successful streaming row not yet known. A broken
	// stream's row: a failed one.
	for id, r := range rows {
		if _, ok := wantRows[id]; ok || !r.Stream {
			continue
		}
		if r.StatusCode == 200 {
			wantRows[id] = rowWant{model: r.Model, role: r.Role, stream: true, status: 200, tokens: [3]int{5123, 61, 5184}}
		} else {
			cutRows--
			wantRows[id] = rowWant{model: r.Model, role: r.Role, stream: true, status: 502, errSub: "stream"}
		}
	}
	if want := len(streams) + 4 + 1; len(rows) != len(wantRows) || len(rows) != want || cutRows != 0 {
		t.Errorf("usage table has %d rows, want %d (streams, helper, JSON, two upstream errors, the broken stream; "+
			"none for the 400):\n%+v", len(rows), want, rows)
	}
	for id, w := range wantRows {
		checkRow(t, rows, id, w.model, w.role, w.stream, w.status, w.tokens, w.errSub)
	}
}

// testNodeStream streams body through the proxy with the npm SDK and checks what Roo Code
// would assemble, every chunk, and what reached the upstream; row gets the proxy's headers.
func testNodeStream(t *testing.T, node string, mock *upstream, base string, body []byte, row func(proxyHeaders)) {
	t.Helper()
	before := len(mock.requests())
	var got streamResult
	runNode(t, node, "stream", base, body, "", &got)
	if !strings.HasPrefix(got.Headers.ContentType, "text/event-stream") {
		t.Errorf("Content-Type = %q, want text/event-stream", got.Headers.ContentType)
	}
	if got.Content != "Let me read the service first." {
		t.Errorf("content = %q", got.Content)
	}
	if want := "The user wants pagination. I should read the file first."; got.ReasoningContent != want {
		t.Errorf("reasoning_content = %q, want %q", got.ReasoningContent, want)
	}
	wantCall := wantToolCall
	wantCall.Deltas = 4 // the first (id, name), "{\"path\":", the empty fragment, the rest
	if diff := cmp.Diff([]toolCall{wantCall}, got.ToolCalls); diff != "" {
		t.Errorf("tool calls (-want +got):\n%s", diff)
	}
	if got.FinishReason != "tool_calls" {
		t.Errorf("finish_reason = %q, want tool_calls", got.FinishReason)
	}
	checkUsage(t, got.Usage, wantUsage)
	var chunks []any
	for _, c := range got.Chunks {
		chunks = append(chunks, decodeJSON(t, c))
	}
	if diff := cmp.Diff(wantChunks(t, readFixture(t, "nanogpt/chat-stream-tool-call.sse")), chunks); diff != "" {
		t.Errorf("chunks differ from what NanoGPT sent (-want +got):\n%s", diff)
	}
	checkUpstreamRequests(t, mock.requests()[before:], body, got.Headers.Model)
	row(got.Headers)
}

// checkUsage compares the usage a client assembled with NanoGPT's.
func checkUsage(t *testing.T, got *usage, want usage) {
	t.Helper()
	if got == nil {
		t.Errorf("no usage reached the client")
		return
	}
	if got.PromptTokens != want.PromptTokens || got.CompletionTokens != want.CompletionTokens || got.TotalTokens != want.TotalTokens {
		t.Errorf("usage = %d/%d/%d, want %d/%d/%d", got.PromptTokens, got.CompletionTokens, got.TotalTokens,
			want.PromptTokens, want.CompletionTokens, want.TotalTokens)
	}
	if got.CompletionTokensDetails == nil || got.CompletionTokensDetails.ReasoningTokens != 17 ||
		got.PromptTokensDetails == nil || got.PromptTokensDetails.CachedTokens != 4096 {
		t.Errorf("usage details (reasoning_tokens 17, cached_tokens 4096) lost: %+v", got)
	}
}

// oneUpstreamRequest checks that one client request reached NanoGPT exactly once, with the
// client's X-Title. (Keys are checked for every request in proxy.cleanup.)
func oneUpstreamRequest(t *testing.T, reqs []recorded, title string) recorded {
	t.Helper()
	if len(reqs) != 1 {
		t.Fatalf("the upstream got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if got := r.Header.Get("X-Title"); got != title {
		t.Errorf("upstream X-Title = %q, want the client's %q", got, title)
	}
	return r
}

// checkUpstreamRequests checks what reached NanoGPT for one Roo Code request: see
// oneUpstreamRequest, plus Roo's HTTP-Referer, the routed model, and every other field of
// the client's body unchanged.
func checkUpstreamRequests(t *testing.T, reqs []recorded, clientBody []byte, model string) {
	t.Helper()
	r := oneUpstreamRequest(t, reqs, "Roo Code")
	if got := r.Header.Get("HTTP-Referer"); got != "https://github.com/RooVetGit/Roo-Cline" {
		t.Errorf("upstream HTTP-Referer = %q", got)
	}
	got := decodeJSON(t, r.Body).(map[string]any)
	want := decodeJSON(t, clientBody).(map[string]any)
	if got["model"] != model || model == "" || model == "auto" {
		t.Errorf("upstream model = %v, X-Proxy-Model = %q: want the same routed model", got["model"], model)
	}
	delete(got, "model")
	delete(want, "model")
	if want["stream"] == true {
		// The proxy always asks for usage; Roo Code asks too, so nothing else may differ.
		if diff := cmp.Diff(want["stream_options"], got["stream_options"]); diff != "" {
			t.Errorf("stream_options changed (-client +upstream):\n%s", diff)
		}
	}
	checkMessages(t, want["messages"], got["messages"])
	delete(got, "messages")
	delete(want, "messages")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upstream body differs from the client's (-client +upstream):\n%s", diff)
	}
}

// checkMessages checks the messages that reached the upstream: the proxy may add guidance
// and context only in the system area (appended to the client's system message, or as a
// system message of its own), so the client's system text starts one of the upstream's
// system messages and every other message arrives unchanged, in order.
func checkMessages(t *testing.T, client, upstream any) {
	t.Helper()
	split := func(msgs any) (system []string, rest []any) {
		list, _ := msgs.([]any)
		for _, m := range list {
			mm, _ := m.(map[string]any)
			if mm["role"] == "system" {
				s, _ := mm["content"].(string)
				system = append(system, s)
				continue
			}
			rest = append(rest, m)
		}
		return system, rest
	}
	cSys, cRest := split(client)
	uSys, uRest := split(upstream)
	for _, cs := range cSys {
		found := false
		for _, us := range uSys {
			found = found || strings.HasPrefix(us, cs)
		}
		if !found {
			t.Errorf("the client's system message (%.60q...) did not reach the upstream intact", cs)
		}
	}
	if diff := cmp.Diff(cRest, uRest); diff != "" {
		t.Errorf("non-system messages changed on the way upstream (-client +upstream):\n%s", diff)
	}
}

// checkRow checks the usage row of one request.
func checkRow(t *testing.T, rows map[string]usageRow, id, model, role string, stream bool, status int, tokens [3]int, errSub string) {
	t.Helper()
	r, ok := rows[id]
	if !ok {
		t.Errorf("no usage row for request %s", id)
		return
	}
	if r.Backend != "nanogpt" || r.StatusCode != status || r.Stream != stream {
		t.Errorf("row %s: backend %q status %d stream %v, want nanogpt %d %v", id, r.Backend, r.StatusCode, r.Stream, status, stream)
	}
	if r.Role == "" || (role != "" && r.Role != role) {
		t.Errorf("row %s: role %q, want %q (X-Proxy-Role)", id, r.Role, role)
	}
	if r.Model == "" || (model != "" && r.Model != model) {
		t.Errorf("row %s: model %q, want %q (X-Proxy-Model)", id, r.Model, model)
	}
	if r.Profile != "personal" {
		t.Errorf("row %s: profile %q, want the default personal", id, r.Profile)
	}
	if status == 200 {
		if got := [3]int{r.PromptTokens, r.CompletionTokens, r.TotalTokens}; got != tokens || r.TokensEstimated {
			t.Errorf("row %s: tokens %v estimated %v, want %v from the upstream's usage", id, got, r.TokensEstimated, tokens)
		}
		if r.Error != "" {
			t.Errorf("row %s: error %q on a success", id, r.Error)
		}
	} else if !strings.Contains(r.Error, errSub) {
		t.Errorf("row %s: error %q, want it to contain %q", id, r.Error, errSub)
	}
}
