package backends_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// TestParseErrorBody: the client sees the upstream's own message whatever shape its
// error body has, and a readable one when the body is HTML or empty.
func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   backends.APIError
	}{
		{"fixture 402", 402, string(readFixture(t, "nanogpt/error-402-insufficient-balance.json")),
			backends.APIError{Status: 402, Type: "insufficient_quota", Code: "insufficient_balance", Message: "Insufficient balance"}},
		{"fixture 429", 429, string(readFixture(t, "nanogpt/error-429-daily-limit.json")),
			backends.APIError{Status: 429, Type: "rate_limit_error", Code: "daily_rpd_limit_exceeded", Message: "Daily request limit exceeded (1000/1000). Resets at midnight UTC."}},
		{"error string", 400, `{"error":"model is required"}`,
			backends.APIError{Status: 400, Type: "invalid_request_error", Message: "model is required"}},
		{"top-level message", 500, `{"message":"boom"}`,
			backends.APIError{Status: 500, Type: "server_error", Message: "boom"}},
		{"numeric code and param", 400, `{"error":{"message":"too long","code":400,"param":"messages"}}`,
			backends.APIError{Status: 400, Type: "invalid_request_error", Code: "400", Param: "messages", Message: "too long"}},
		{"html", 502, `<html><body>Bad gateway</body></html>`,
			backends.APIError{Status: 502, Type: "server_error", Message: "upstream returned HTTP 502"}},
		{"plain text", 503, "overloaded\n",
			backends.APIError{Status: 503, Type: "server_error", Message: "upstream returned HTTP 503: overloaded"}},
		{"empty", 401, ``,
			backends.APIError{Status: 401, Type: "authentication_error", Message: "upstream returned HTTP 401"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := backends.ParseErrorBody(tc.status, []byte(tc.body))
			if d := cmp.Diff(tc.want, *got, cmpopts.IgnoreFields(backends.APIError{}, "Err")); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
}

// TestAsAPIErrorAndRetryable: what the client sees for each failure class, and whether
// another candidate may be tried.
func TestAsAPIErrorAndRetryable(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		status    int
		code      string
		retryable bool
	}{
		{"refused", fmt.Errorf("nanogpt: sending request: %w", errors.New("connect: connection refused")), 502, "upstream_unreachable", true},
		{"first byte", fmt.Errorf("nanogpt: sending request: %w", backends.ErrFirstByteTimeout), 504, "upstream_timeout", true},
		{"idle", fmt.Errorf("reading stream: %w", backends.ErrIdleTimeout), 504, "upstream_timeout", true},
		{"canceled", context.Canceled, 502, "upstream_unreachable", false},
		{"429", &backends.APIError{Status: 429, Backend: "nanogpt", Message: "slow down"}, 429, "", true},
		{"upstream rejects the proxy's key", &backends.APIError{Status: 401, Backend: "vertex", Message: "bad credentials"}, 401, "", true},
		{"upstream forbids the project", &backends.APIError{Status: 403, Backend: "vertex", Message: "permission denied"}, 403, "", true},
		{"400 from upstream", &backends.APIError{Status: 400, Backend: "nanogpt", Message: "bad"}, 400, "", false},
		{"proxy's own 503", &backends.APIError{Status: 503, Message: "no key"}, 503, "", false},
	}
	for _, tc := range tests {
		ae := backends.AsAPIError("nanogpt", tc.err)
		if ae.Status != tc.status || ae.Code != tc.code {
			t.Errorf("%s: AsAPIError = %d %q, want %d %q", tc.name, ae.Status, ae.Code, tc.status, tc.code)
		}
		if got := backends.Retryable(tc.err); got != tc.retryable {
			t.Errorf("%s: Retryable = %v, want %v", tc.name, got, tc.retryable)
		}
	}
}

// TestRetryAfter parses both forms of the header.
func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false}, {"120", 2 * time.Minute, true}, {"-1", 0, false}, {"soon", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range tests {
		got, ok := backends.RetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("RetryAfter(%q) = %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// TestNanoGPTAnswerAndUsage: what the backend reads in its one pass over a JSON answer (the
// first choice's content and tool calls, the usage) is what reading the body it returns
// gives, including after the reasoning_content insertion, with the first choice not
// first, and with usage counts that are null, escaped or not numbers.
func TestNanoGPTAnswerAndUsage(t *testing.T) {
	tests := []struct {
		name, body     string
		content, calls string
		usage          *backends.Usage
	}{
		{"fixture with reasoning", string(readFixture(t, "nanogpt/chat-completion.json")),
			`"Use context.WithoutCancel when work must outlive the request."`, `null`,
			&backends.Usage{PromptTokens: 812, CompletionTokens: 14, TotalTokens: 826}},
		{"tool call, second choice first",
			`{"choices":[{"index":1,"message":{"content":"no"}},{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{}"}}]}}],` +
				`"usage":{"prompt\u005ftokens":5,"completion_tokens":null,"total_tokens":5}}`,
			`null`, `[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{}"}}]`,
			&backends.Usage{PromptTokens: 5, TotalTokens: 5}},
		{"usage not numbers", `{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":"7","total_tokens":7}}`,
			`"hi"`, ``, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := newJSONUpstream(t, tc.body)
			ng := backends.NewNanoGPT(backends.NanoGPTConfig{BaseURL: srv + "/v1", APIKey: "k"}, nil)
			req, err := backends.ParseChatRequest([]byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := ng.ChatCompletion(context.Background(), &backends.Call{Model: "m", Request: req})
			if err != nil {
				t.Fatal(err)
			}
			content, calls, ok := resp.Answer()
			if !ok || string(content) != tc.content || string(calls) != tc.calls {
				t.Errorf("Answer() = %s, %s, %v; want %s, %s", content, calls, ok, tc.content, tc.calls)
			}
			wc, wcalls, wok := backends.AnswerChoice(resp.Body)
			if string(content) != string(wc) || string(calls) != string(wcalls) || ok != wok {
				t.Errorf("Answer() = %s, %s; reading the body gives %s, %s", content, calls, wc, wcalls)
			}
			if diff := cmp.Diff(tc.usage, resp.Usage); diff != "" {
				t.Errorf("usage (-want +got):\n%s", diff)
			}
		})
	}
}

// newJSONUpstream serves body as the answer to every chat completion; it returns its URL.
func newJSONUpstream(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
