package handlers_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestBadRequestsGet400AndStoreNothing: malformed or mistyped bodies get a 400 OpenAI
// envelope naming the parameter; nothing goes upstream and no usage row is written.
func TestBadRequestsGet400AndStoreNothing(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		hdr       map[string]string
		status    int
		wantParam string // "" means param must be null
		wantCode  string
		wantInMsg string
	}{
		{name: "malformed", body: `{"model":"auto","messages":[`, status: 400, wantInMsg: "parse the JSON body"},
		{name: "not-an-object", body: `["model"]`, status: 400, wantInMsg: "parse the JSON body"},
		{name: "empty-body", body: ``, status: 400, wantInMsg: "parse the JSON body"},
		{name: "trailing-garbage", body: `{"model":"auto","messages":[{"role":"user","content":"x"}]} {}`, status: 400, wantInMsg: "parse the JSON body"},
		{name: "invalid-utf8", body: "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}", status: 400, wantInMsg: "parse the JSON body"},
		{name: "missing-messages", body: `{"model":"auto"}`, status: 400, wantParam: "messages", wantInMsg: "messages"},
		{name: "empty-messages", body: `{"model":"auto","messages":[]}`, status: 400, wantParam: "messages", wantInMsg: "empty"},
		{name: "missing-model", body: `{"messages":[{"role":"user","content":"x"}]}`, status: 400, wantParam: "model"},
		{name: "model-number", body: `{"model":5,"messages":[{"role":"user","content":"x"}]}`, status: 400, wantParam: "model", wantInMsg: "a number"},
		{name: "messages-object", body: `{"model":"auto","messages":{"role":"user"}}`, status: 400, wantParam: "messages", wantInMsg: "an array"},
		{name: "stream-string", body: `{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":"true"}`, status: 400, wantParam: "stream", wantInMsg: "a boolean"},
		{name: "stream-options-array", body: `{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":[]}`, status: 400, wantParam: "stream_options"},
		{name: "include-usage-string", body: `{"model":"auto","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":"yes"}}`, status: 400, wantParam: "stream_options.include_usage"},
		{name: "message-role-missing", body: `{"model":"auto","messages":[{"role":"user","content":"x"},{"content":"y"}]}`, status: 400, wantParam: "messages.[1].role"},
		{name: "message-role-unknown", body: `{"model":"auto","messages":[{"role":"robot","content":"y"}]}`, status: 400, wantParam: "messages.[0].role"},
		{name: "message-not-object", body: `{"model":"auto","messages":["hi"]}`, status: 400, wantParam: "messages.[0]"},
		{name: "content-number", body: `{"model":"auto","messages":[{"role":"user","content":1}]}`, status: 400, wantParam: "messages.[0].content"},
		{name: "proxy-role-unknown", body: `{"model":"auto","role":"poet","messages":[{"role":"user","content":"x"}]}`, status: 400, wantParam: "role", wantCode: "invalid_role"},
		{name: "header-role-unknown", body: `{"model":"auto","messages":[{"role":"user","content":"x"}]}`, hdr: map[string]string{"X-Proxy-Role": "poet"}, status: 400, wantParam: "role", wantCode: "invalid_role"},
		{name: "profile-unknown", body: `{"model":"auto","messages":[{"role":"user","content":"x"}]}`, hdr: map[string]string{"X-Profile": "play"}, status: 400, wantCode: "invalid_profile"},
		{name: "alias-role-unknown", body: `{"model":"auto:poet","messages":[{"role":"user","content":"x"}]}`, status: 404, wantParam: "model", wantCode: "model_not_found"},
		{name: "model-unknown", body: `{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}`, status: 404, wantParam: "model", wantCode: "model_not_found"},
	}
	up := newFakeUpstream(t, nil)
	p := newTestProxy(t, up, proxyOptions{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := p.post(t, []byte(tc.body), tc.hdr)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			e := decodeError(t, b)
			if e.Error.Type != "invalid_request_error" {
				t.Errorf("type %q", e.Error.Type)
			}
			gotParam := ""
			if e.Error.Param != nil {
				gotParam = *e.Error.Param
			}
			if gotParam != tc.wantParam {
				t.Errorf("param %q, want %q (message %q)", gotParam, tc.wantParam, e.Error.Message)
			}
			if tc.wantCode != "" && (e.Error.Code == nil || *e.Error.Code != tc.wantCode) {
				t.Errorf("code %v, want %q", e.Error.Code, tc.wantCode)
			}
			if !strings.Contains(e.Error.Message, tc.wantInMsg) {
				t.Errorf("message %q does not mention %q", e.Error.Message, tc.wantInMsg)
			}
		})
	}
	if n := len(up.Requests()); n != 0 {
		t.Errorf("bad requests reached the upstream %d times", n)
	}
	if rows := p.UsageRows(t); len(rows) != 0 {
		t.Errorf("bad requests stored %d usage rows: %+v", len(rows), rows)
	}
}

// TestBodyOverLimitGets413: a body over MaxBodyBytes is refused with 413 and the limit.
func TestBodyOverLimitGets413(t *testing.T) {
	up := newFakeUpstream(t, nil)
	p := newTestProxy(t, up, proxyOptions{MaxBodyBytes: 4096})
	small := `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("a", 3000) + `"}]}`
	if resp, b := p.post(t, []byte(small), nil); resp.StatusCode != 200 {
		t.Fatalf("a body under the limit: status %d: %s", resp.StatusCode, b)
	}
	big := `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("a", 5000) + `"}]}`
	resp, b := p.post(t, []byte(big), nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413: %s", resp.StatusCode, b)
	}
	e := decodeError(t, b)
	if !strings.Contains(e.Error.Message, "4 KiB") {
		t.Errorf("message %q does not state the limit", e.Error.Message)
	}
	// The same without a Content-Length (chunked upload).
	for _, tc := range []struct {
		body   string
		status int
	}{{small, 200}, {big, 413}} {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/chat/completions", io.MultiReader(strings.NewReader(tc.body)))
		resp, err := p.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.ContentLength != 0 || resp.StatusCode != tc.status {
			t.Errorf("chunked body of %d bytes: status %d, want %d", len(tc.body), resp.StatusCode, tc.status)
		}
	}
	if n := len(up.Requests()); n != 2 {
		t.Errorf("upstream got %d requests, want only the two small ones", n)
	}
	if rows := p.UsageRows(t); len(rows) != 2 {
		t.Errorf("want 2 usage rows (the small requests), got %d", len(rows))
	}
}

// TestUpstreamHTTPErrorsKeepStatusAndMessage: NanoGPT's 402, 429 and 503 reach the client
// with the same status, NanoGPT's message, and Retry-After; a usage row records them.
func TestUpstreamHTTPErrorsKeepStatusAndMessage(t *testing.T) {
	tests := []struct {
		file       string
		status     int
		retryAfter string
		message    string
		code       string
	}{
		{"nanogpt/error-402-insufficient-balance.json", 402, "", "Insufficient balance", "insufficient_balance"},
		{"nanogpt/error-429-daily-limit.json", 429, "3600", "Daily request limit exceeded (1000/1000). Resets at midnight UTC.", "daily_rpd_limit_exceeded"},
		{"nanogpt/error-503-unavailable.json", 503, "", "Model is temporarily unavailable", "service_unavailable"},
	}
	for _, tc := range tests {
		for _, stream := range []bool{false, true} {
			name := tc.file[len("nanogpt/"):]
			if stream {
				name += "/stream"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				hdr := map[string]string{}
				if tc.retryAfter != "" {
					hdr["Retry-After"] = tc.retryAfter
				}
				up := newFakeUpstream(t, replayJSON(tc.status, fixture(t, tc.file), hdr))
				p := newTestProxy(t, up, proxyOptions{})
				body := `{"model":"auto","messages":[{"role":"user","content":"hi"}]`
				if stream {
					body += `,"stream":true`
				}
				resp, b := p.post(t, []byte(body+"}"), nil)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
				}
				if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
					t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
				}
				e := decodeError(t, b)
				if e.Error.Message != tc.message {
					t.Errorf("message %q, want the upstream's %q", e.Error.Message, tc.message)
				}
				if e.Error.Code == nil || *e.Error.Code != tc.code {
					t.Errorf("code %v, want %q", e.Error.Code, tc.code)
				}
				if len(up.Requests()) == 0 {
					t.Fatal("upstream never called")
				}
				rows := p.UsageRows(t)
				if len(rows) != 1 {
					t.Fatalf("want 1 usage row, got %d", len(rows))
				}
				if r := rows[0]; r.StatusCode != tc.status || r.Backend != "nanogpt" || r.Error != tc.message || r.TotalTokens != 0 {
					t.Errorf("usage row %+v", r)
				}
			})
		}
	}
}

// TestUpstreamUnreachableAndTimeouts: a closed port is 502, an upstream that never
// answers is 504 after the first-byte timeout, no key is 503 naming NANOGPT_API_KEY.
func TestUpstreamUnreachableAndTimeouts(t *testing.T) {
	silent := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
	tests := []struct {
		name    string
		handler http.HandlerFunc
		opts    func(o *proxyOptions)
		status  int
		inMsg   string
	}{
		{name: "closed-port", opts: func(o *proxyOptions) { o.BaseURL = closedURL(t) }, status: 502, inMsg: "unreachable"},
		{name: "no-first-byte", handler: silent, opts: func(o *proxyOptions) { o.FirstByteTimeout = 50 * time.Millisecond }, status: 504, inMsg: "no response"},
		{name: "no-key", opts: func(o *proxyOptions) { o.NoKey = true }, status: 503, inMsg: "NANOGPT_API_KEY"},
		{name: "json-body-stalls", handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = io.WriteString(w, `{"id":"chatcmpl-1","choices":[`)
			_ = http.NewResponseController(w).Flush()
			<-r.Context().Done()
		}, opts: func(o *proxyOptions) { o.IdleTimeout = 100 * time.Millisecond }, status: 504, inMsg: "stalled"},
	}
	for _, tc := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{true: "/stream", false: ""}[stream], func(t *testing.T) {
				t.Parallel()
				up := newFakeUpstream(t, tc.handler)
				var o proxyOptions
				tc.opts(&o)
				p := newTestProxy(t, up, o)
				body := `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":` + map[bool]string{true: "true", false: "false"}[stream] + `}`
				resp, b := p.post(t, []byte(body), nil)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, b)
				}
				e := decodeError(t, b)
				if !strings.Contains(e.Error.Message, tc.inMsg) {
					t.Errorf("message %q does not say %q", e.Error.Message, tc.inMsg)
				}
				if strings.Contains(string(b), proxyKey) {
					t.Error("the proxy's key leaked into the response")
				}
			})
		}
	}
}

// TestStreamFailureAfterFirstByteIsOneErrorEvent: once output has reached the client, a
// cut connection, a malformed chunk, an upstream that ends without [DONE], or a stall past
// the idle timeout becomes exactly one data: {"error":...} event and never a [DONE].
func TestStreamFailureAfterFirstByteIsOneErrorEvent(t *testing.T) {
	head := `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n" +
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}` + "\n\n"
	send := func(w http.ResponseWriter, s string) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, s)
		_ = http.NewResponseController(w).Flush()
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		idle    time.Duration
		status  int
		inMsg   string
	}{
		{name: "connection-cut", handler: func(w http.ResponseWriter, r *http.Request) {
			send(w, head)
			panic(http.ErrAbortHandler) // drops the connection mid-body
		}, status: 502, inMsg: "broke off"},
		{name: "ends-without-done", handler: func(w http.ResponseWriter, r *http.Request) {
			send(w, head)
		}, status: 502, inMsg: "before [DONE]"},
		{name: "malformed-chunk", handler: func(w http.ResponseWriter, r *http.Request) {
			send(w, head+"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}\n\ndata: [DONE]\n\n")
		}, status: 502, inMsg: "malformed"},
		{name: "stall-past-idle", handler: func(w http.ResponseWriter, r *http.Request) {
			send(w, head)
			<-r.Context().Done()
		}, idle: 100 * time.Millisecond, status: 504, inMsg: "stalled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newFakeUpstream(t, tc.handler)
			p := newTestProxy(t, up, proxyOptions{IdleTimeout: tc.idle})
			resp, b := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`), nil)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d (the stream had already started): %s", resp.StatusCode, b)
			}
			if !bytes.HasPrefix(b, []byte(head)) {
				t.Errorf("client did not get the events before the failure byte for byte: %q", b)
			}
			events := splitEvents(t, b[len(head):])
			if len(events) != 1 {
				t.Fatalf("want exactly one event after the output, got %d: %q", len(events), b[len(head):])
			}
			data, ok := bytes.CutPrefix(events[0], []byte("data: "))
			if !ok {
				t.Fatalf("not a data event: %q", events[0])
			}
			e := decodeError(t, bytes.TrimSpace(data))
			if !strings.Contains(e.Error.Message, tc.inMsg) || strings.Contains(e.Error.Message, "<nil>") {
				t.Errorf("error message %q does not say %q", e.Error.Message, tc.inMsg)
			}
			if bytes.Contains(b, []byte("data: [DONE]")) {
				t.Error("a failed stream ended with [DONE]")
			}
			rows := p.UsageRows(t)
			if len(rows) != 1 || rows[0].StatusCode != tc.status || rows[0].Error == "" {
				t.Errorf("usage rows %+v, want one with status %d and an error", rows, tc.status)
			}
		})
	}
}

// TestClientDisconnectCancelsUpstream: when the client goes away mid-stream the upstream
// request is cancelled (the fake upstream sees its request context end).
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	cancelled := make(chan struct{})
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}`+"\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(testTimeout):
		}
	})
	p := newTestProxy(t, up, proxyOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := p.do(ctx, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readEvent(bufio.NewReader(resp.Body)); err != nil {
		t.Fatalf("first event: %v", err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, cancelled, "the upstream request was not cancelled after the client disconnected")
	rows := p.UsageRows(t)
	if len(rows) != 1 || rows[0].StatusCode != 499 {
		t.Errorf("usage rows %+v, want one with status 499", rows)
	}
}

// TestUsageRowsRecordTokens: the usage row holds backend, model, role, profile, stream,
// status and the upstream's tokens; without upstream usage the tokens are estimated and
// flagged. A client that did not ask for usage still gets its tokens counted.
func TestUsageRowsRecordTokens(t *testing.T) {
	noUsage := func(b []byte) []byte {
		var out []byte
		for _, ev := range splitEvents(t, b) {
			if !isUsageOnly(ev) {
				out = append(out, ev...)
			}
		}
		return out
	}
	var plain map[string]json.RawMessage
	_ = json.Unmarshal(fixture(t, "nanogpt/chat-completion.json"), &plain)
	delete(plain, "usage")
	plainNoUsage, _ := json.Marshal(plain)

	tests := []struct {
		name      string
		handler   http.HandlerFunc
		body      string
		hdr       map[string]string
		want      usageRow
		estimated bool
	}{
		{name: "stream-usage-withheld-from-client", handler: replaySSE(fixture(t, "nanogpt/chat-stream-text.sse")),
			body: `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true,"conversation_id":"conv-7"}`,
			hdr:  map[string]string{"X-Profile": "work"},
			want: usageRow{Backend: "nanogpt", Role: "general", ConversationID: "conv-7", Profile: "work", Stream: 1, StatusCode: 200, PromptTokens: 812, CompletionTokens: 9, TotalTokens: 821}},
		{name: "stream-usage-on-finish-chunk", handler: replaySSE(fixture(t, "nanogpt/chat-stream-tool-call.sse")),
			body: `{"model":"auto:architect","messages":[{"role":"user","content":"hi"}],"stream":true}`,
			want: usageRow{Backend: "nanogpt", Model: "zai-org/glm-4.6", Role: "architect", Profile: "personal", Stream: 1, StatusCode: 200, PromptTokens: 5123, CompletionTokens: 61, TotalTokens: 5184}},
		{name: "json", handler: replayJSON(200, fixture(t, "nanogpt/chat-completion.json"), nil),
			body: `{"model":"auto","role":"documentation","messages":[{"role":"user","content":"hi"}]}`,
			want: usageRow{Backend: "nanogpt", Role: "documentation", Profile: "personal", StatusCode: 200, PromptTokens: 812, CompletionTokens: 14, TotalTokens: 826}},
		{name: "stream-without-usage", handler: replaySSE(noUsage(fixture(t, "nanogpt/chat-stream-text.sse"))),
			body:      `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("word ", 400) + `"}],"stream":true}`,
			want:      usageRow{Backend: "nanogpt", Role: "general", Profile: "personal", Stream: 1, StatusCode: 200},
			estimated: true},
		{name: "json-without-usage", handler: replayJSON(200, plainNoUsage, nil),
			body:      `{"model":"auto","messages":[{"role":"user","content":"` + strings.Repeat("word ", 400) + `"}]}`,
			want:      usageRow{Backend: "nanogpt", Role: "general", Profile: "personal", StatusCode: 200},
			estimated: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newFakeUpstream(t, tc.handler)
			p := newTestProxy(t, up, proxyOptions{})
			resp, b := p.post(t, []byte(tc.body), tc.hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			if tc.name == "stream-usage-withheld-from-client" && bytes.Contains(b, []byte(`"usage"`)) {
				t.Error("a client that did not ask for usage got a usage chunk")
			}
			rows := p.UsageRows(t)
			if len(rows) != 1 {
				t.Fatalf("want 1 usage row, got %d", len(rows))
			}
			got := rows[0]
			if got.RequestID != resp.Header.Get("X-Request-Id") || got.RequestID == "" {
				t.Errorf("request_id %q, response X-Request-Id %q", got.RequestID, resp.Header.Get("X-Request-Id"))
			}
			if got.Model != resp.Header.Get("X-Proxy-Model") {
				t.Errorf("model %q, X-Proxy-Model %q", got.Model, resp.Header.Get("X-Proxy-Model"))
			}
			if tc.want.ConversationID == "" && !strings.HasPrefix(got.ConversationID, "h-") {
				t.Errorf("conversation_id %q, want a derived id", got.ConversationID)
			}
			if tc.estimated {
				if got.TokensEstimated != 1 || got.PromptTokens < 100 || got.CompletionTokens < 1 ||
					got.TotalTokens != got.PromptTokens+got.CompletionTokens {
					t.Errorf("estimated row %+v: want tokens_estimated=1, a prompt estimate for a 2 KB prompt and a completion estimate", got)
				}
				return
			}
			tc.want.RequestID, tc.want.ConversationID = got.RequestID, got.ConversationID
			if tc.want.Model == "" {
				tc.want.Model = got.Model
			}
			if got != tc.want {
				t.Errorf("usage row\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// failingWriter is a ResponseWriter whose connection breaks after the first write, while
// the request context stays alive (the server has not noticed the client is gone yet).
type failingWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	writes int
}

func (f *failingWriter) Header() http.Header { return f.header }
func (f *failingWriter) WriteHeader(s int)   { f.status = s }
func (f *failingWriter) Write(p []byte) (int, error) {
	f.writes++
	if f.writes > 1 {
		return 0, errors.New("write tcp 127.0.0.1:8090: broken pipe")
	}
	return f.body.Write(p)
}
func (f *failingWriter) Flush() {}

// TestClientWriteFailureIsAClientDisconnect: when writing to the client fails, the proxy
// stops, cancels the upstream, records 499 (not an upstream failure) and does not log the
// upstream as broken.
func TestClientWriteFailureIsAClientDisconnect(t *testing.T) {
	cancelled := make(chan struct{})
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			if _, err := io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}`+"\n\n"); err != nil {
				break
			}
			_ = rc.Flush()
			if i == 3 {
				<-r.Context().Done()
				break
			}
		}
		close(cancelled)
	})
	p := newTestProxy(t, up, proxyOptions{})
	req := httptest.NewRequestWithContext(context.Background(), http.MethodPost, "/v1/chat/completions",
		strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`))
	fw := &failingWriter{header: http.Header{}}
	p.Handler.ServeHTTP(fw, req)
	waitFor(t, cancelled, "the upstream was not cancelled after the client write failed")
	if fw.status != 200 || fw.writes != 2 {
		t.Errorf("status %d after %d writes, want 200 and a stop after the failed write", fw.status, fw.writes)
	}
	rows := p.UsageRows(t)
	if len(rows) != 1 || rows[0].StatusCode != 499 {
		t.Errorf("usage rows %+v, want one with status 499", rows)
	}
	if strings.Contains(p.Log.String(), "stream failed after first byte") {
		t.Errorf("a client write failure was logged as an upstream failure:\n%s", p.Log.String())
	}
}
