package backends_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
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
