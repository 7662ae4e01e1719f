package backends

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// An error sent inside a 200 stream reaches the reader as an event with Err set: the
// status from the error's numeric code or status (502 without one), the upstream's own
// message, and the backend named. Chunks that only mention "error" are plain chunks.
func TestInBandErrorEvent(t *testing.T) {
	type got struct {
		Status  int
		Type    string
		Code    string
		Message string
		Backend string
	}
	tests := []struct {
		name string
		data string
		want *got
	}{
		{"object with numeric code", `{"error":{"message":"provider overloaded","type":"server_error","code":503}}`,
			&got{503, "server_error", "503", "provider overloaded", "nanogpt"}},
		{"object with status", `{"error":{"message":"slow down","status":429}}`,
			&got{429, "rate_limit_error", "", "slow down", "nanogpt"}},
		{"string code", `{"error":{"message":"upstream provider failed","code":"provider_error"}}`,
			&got{502, "upstream_error", "provider_error", "upstream provider failed", "nanogpt"}},
		{"numeric 400", `{"error":{"message":"context too long","type":"invalid_request_error","code":400}}`,
			&got{400, "invalid_request_error", "400", "context too long", "nanogpt"}},
		{"string error", `{"error":"boom"}`, &got{502, "upstream_error", "", "boom", "nanogpt"}},
		{"null error", `{"id":"c","error":null,"choices":[{"index":0,"delta":{"content":"hi"}}]}`, nil},
		{"error in content text", `{"id":"c","choices":[{"index":0,"delta":{"content":"{\"error\":{\"message\":\"x\"}}"}}]}`, nil},
		{"error inside a choice", `{"id":"c","choices":[{"index":0,"delta":{},"error":{"message":"x"}}]}`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, "data: "+tt.data+"\n\ndata: [DONE]\n\n")
			}))
			defer up.Close()
			n := NewNanoGPT(NanoGPTConfig{APIKey: "k", BaseURL: up.URL}, up.Client())
			resp, err := n.ChatCompletion(context.Background(), &Call{Model: "m",
				Request: mustParse(t, []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`))})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Close()
			ev, err := resp.Stream.Next()
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Raw) != "data: "+tt.data+"\n\n" {
				t.Errorf("raw event changed: %q", ev.Raw)
			}
			var g *got
			if ev.Err != nil {
				g = &got{ev.Err.Status, ev.Err.Type, ev.Err.Code, ev.Err.Message, ev.Err.Backend}
			}
			if diff := cmp.Diff(tt.want, g); diff != "" {
				t.Errorf("Err (-want +got):\n%s", diff)
			}
		})
	}
}

// A 200 JSON answer that is an error envelope is a failed attempt keeping the upstream's
// status and message, not an answer.
func TestNanoGPTErrorEnvelopeIn200(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"error":{"message":"provider overloaded","type":"server_error","code":503}}`)
	}))
	defer up.Close()
	n := NewNanoGPT(NanoGPTConfig{APIKey: "k", BaseURL: up.URL}, up.Client())
	_, err := n.ChatCompletion(context.Background(), &Call{Model: "m",
		Request: mustParse(t, []byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))})
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v, want an *APIError", err)
	}
	if ae.Status != 503 || ae.Message != "provider overloaded" || ae.Backend != "nanogpt" || !Retryable(err) {
		t.Errorf("got %d %q backend=%q retryable=%v; want a retryable 503 \"provider overloaded\" from nanogpt",
			ae.Status, ae.Message, ae.Backend, Retryable(err))
	}
}

// An upstream that sends error headers and then stalls its body is bounded by the idle
// timeout: the caller gets the upstream's status with what arrived, not a hang until its
// own deadline.
func TestNanoGPTErrorBodyStallIsBounded(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		w.Write([]byte(`{"error":{"message":"busy`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer up.Close()
	defer close(release)
	for _, cfg := range []NanoGPTConfig{{IdleTimeout: 50 * time.Millisecond}, {FirstByteTimeout: 50 * time.Millisecond}} {
		t.Run(fmt.Sprintf("idle=%v firstbyte=%v", cfg.IdleTimeout, cfg.FirstByteTimeout), func(t *testing.T) {
			cfg.APIKey, cfg.BaseURL = "k", up.URL
			n := NewNanoGPT(cfg, up.Client())
			// The caller's own deadline is far away: only the backend's timeout can end the read in time.
			ctx, cancel := context.WithTimeoutCause(context.Background(), time.Minute, errors.New("caller deadline"))
			defer cancel()
			_, err := n.ChatCompletion(ctx, &Call{Model: "m", Request: mustParse(t, []byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))})
			var ae *APIError
			if !errors.As(err, &ae) || ae.Status != 503 || !strings.Contains(ae.Message, "busy") || ctx.Err() != nil {
				t.Errorf("err = %v (ctx %v); want the upstream's 503 with the partial body", err, ctx.Err())
			}
		})
	}
}

// A request the proxy cannot translate for Gemini is a 400 that may fall over to another
// backend (Untranslatable, Retryable), and nothing is sent to Google; a 400 from Google
// itself is not retried.
func TestVertexTranslationErrorIsRetryableElsewhere(t *testing.T) {
	fv := newFakeVertex(t)
	v := newTestVertex(t, fv, nil)
	// Roo Code after condensing: a tool answer whose call was summarised away.
	orphan := `{"model":"x","messages":[{"role":"user","content":"go on"},{"role":"tool","tool_call_id":"call_gone","content":"ok"}]}`
	_, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro", Request: mustParse(t, []byte(orphan))})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 400 || !ae.Untranslatable || !Retryable(err) {
		t.Fatalf("err = %v; want an untranslatable, retryable 400", err)
	}
	if !strings.Contains(ae.Message, "call_gone") {
		t.Errorf("message %q does not name the tool_call_id", ae.Message)
	}
	fv.mu.Lock()
	sent := len(fv.paths)
	fv.mu.Unlock()
	if sent != 0 {
		t.Errorf("Google received %d requests for an untranslatable one", sent)
	}

	fv.status, fv.body = 400, readFile(t, "../testdata/vertex/error-400-schema.json")
	_, err = v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro",
		Request: mustParse(t, []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`))})
	if !errors.As(err, &ae) || ae.Status != 400 || ae.Untranslatable || Retryable(err) {
		t.Errorf("Google's own 400: err = %v untranslatable=%v retryable=%v; want a non-retryable 400", err, ae != nil && ae.Untranslatable, Retryable(err))
	}
}

// Gemini ending on MALFORMED_FUNCTION_CALL or UNEXPECTED_TOOL_CALL is an error, never an
// empty "stop": a retryable error of the call (unary), an error event in the stream.
func TestVertexMalformedFunctionCall(t *testing.T) {
	rec := func(parts, reason string) string {
		return `data: {"modelVersion":"gemini-2.5-pro","candidates":[{"content":{"role":"model","parts":[` + parts +
			`]},"finishReason":"` + reason + `","finishMessage":"Malformed function call: read_file"}]}` + "\n\n"
	}
	for _, reason := range []string{"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"} {
		t.Run(reason+"/unary", func(t *testing.T) {
			fv := newFakeVertex(t)
			fv.body = []byte(strings.TrimPrefix(strings.TrimSpace(rec(`{"text":""}`, reason)), "data: "))
			v := newTestVertex(t, fv, nil)
			_, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro",
				Request: mustParse(t, []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`))})
			checkAPIError(t, err, 502, "upstream_error", "")
			if !Retryable(err) || !strings.Contains(err.Error(), reason) {
				t.Errorf("err = %v retryable=%v; want a retryable error naming %s", err, Retryable(err), reason)
			}
		})
		for _, tc := range []struct {
			name       string
			sse        string
			wantBefore []string // the content the stream carries before the error event
		}{
			{"no content", rec(`{"text":""}`, reason), nil},
			{"after text", rec(`{"text":"Reading the file."}`, reason), []string{"Reading the file."}},
		} {
			t.Run(reason+"/stream/"+tc.name, func(t *testing.T) {
				fv := newFakeVertex(t)
				fv.sse = []byte(tc.sse)
				v := newTestVertex(t, fv, nil)
				resp, err := v.ChatCompletion(context.Background(), &Call{Model: "gemini-2.5-pro",
					Request: mustParse(t, []byte(`{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}`))})
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Close()
				var content []string
				var errEv *Event
				for {
					ev, err := resp.Stream.Next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if ev.Err != nil {
						e := ev
						errEv = &e
						continue
					}
					if strings.Contains(string(ev.Data), `"finish_reason":"stop"`) {
						t.Errorf("the stream ends as an empty stop: %s", ev.Data)
					}
					if ev.Content && errEv == nil {
						content = append(content, string(ev.Data))
					}
				}
				if errEv == nil {
					t.Fatal("no error event")
				}
				if errEv.Err.Status != 502 || !Retryable(errEv.Err) || !strings.HasPrefix(string(errEv.Raw), `data: {"error":{"message":"vertex: Gemini ended the answer with `+reason) {
					t.Errorf("error event %s: status %d retryable %v", errEv.Raw, errEv.Err.Status, Retryable(errEv.Err))
				}
				if len(content) != len(tc.wantBefore) || (len(content) > 0 && !strings.Contains(content[0], tc.wantBefore[0])) {
					t.Errorf("content before the error = %q; want %q", content, tc.wantBefore)
				}
			})
		}
	}
}

// A 200 JSON answer: what the client gets back and what is accounted. A body that is not a
// JSON object is a 502, never an answer; usage of the wrong shape is treated as absent, so
// the tokens are estimated instead of the answer being lost.
func TestJSONAnswerMetaAndBadBodies(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		wantErr   bool
		wantModel string
		wantUsage *Usage
		wantBody  string // "" = unchanged
		// The first choice's message content and tool_calls, as the backend hands them to
		// the context tracker (Response.Answer): what reading the body gives.
		wantContent, wantCalls string
	}{
		{name: "usage and model", body: `{"id":"x","model":"m-1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
			wantModel: "m-1", wantUsage: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}},
		{name: "no usage", body: `{"model":"m-1","choices":[]}`, wantModel: "m-1"},
		{name: "usage of the wrong shape", body: `{"model":"m-1","usage":{"prompt_tokens":"3"}}`, wantModel: "m-1"},
		{name: "model not a string", body: `{"model":7,"usage":null}`},
		{name: "reasoning gets reasoning_content", body: `{"model":"m","choices":[{"index":0,"message":{"role":"assistant","reasoning":"think","content":"hi"}}]}`,
			wantModel: "m", wantBody: `{"model":"m","choices":[{"index":0,"message":{"role":"assistant","reasoning":"think","reasoning_content":"think","content":"hi"}}]}`,
			wantContent: `"hi"`},
		{name: "tool call, first choice not first, usage escaped and null",
			body: `{"model":"m","choices":[{"index":1,"message":{"content":"no"}},{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{}"}}]}}],` +
				`"usage":{"prompt\u005ftokens":5,"completion_tokens":null,"total_tokens":5}}`,
			wantModel: "m", wantUsage: &Usage{PromptTokens: 5, TotalTokens: 5},
			wantContent: `null`, wantCalls: `[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{}"}}]`},
		{name: "html", body: `<html>bad gateway</html>`, wantErr: true},
		{name: "cut short", body: `{"model":"m","choices":[{"index":0,"mess`, wantErr: true},
		{name: "an array", body: `[{"model":"m"}]`, wantErr: true},
		{name: "trailing garbage", body: `{"model":"m"} x`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				io.WriteString(w, tt.body)
			}))
			defer up.Close()
			n := NewNanoGPT(NanoGPTConfig{APIKey: "k", BaseURL: up.URL}, up.Client())
			resp, err := n.ChatCompletion(context.Background(), &Call{Model: "m",
				Request: mustParse(t, []byte(`{"model":"m","messages":[{"role":"user","content":"x"}]}`))})
			if tt.wantErr {
				var ae *APIError
				if !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || ae.Code != "bad_upstream_response" {
					t.Fatalf("err = %v, want a 502 bad_upstream_response", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.wantBody
			if want == "" {
				want = tt.body
			}
			if string(resp.Body) != want {
				t.Errorf("body = %s\nwant   %s", resp.Body, want)
			}
			if resp.Model != tt.wantModel {
				t.Errorf("model = %q, want %q", resp.Model, tt.wantModel)
			}
			if (resp.Usage == nil) != (tt.wantUsage == nil) || (resp.Usage != nil && *resp.Usage != *tt.wantUsage) {
				t.Errorf("usage = %+v, want %+v", resp.Usage, tt.wantUsage)
			}
			content, calls, ok := resp.Answer()
			if !ok || string(content) != tt.wantContent || string(calls) != tt.wantCalls {
				t.Errorf("Answer() = %s, %s, %v; want %s, %s", content, calls, ok, tt.wantContent, tt.wantCalls)
			}
			if c, tc, _ := AnswerChoice(resp.Body); string(c) != string(content) || string(tc) != string(calls) {
				t.Errorf("Answer() = %s, %s; reading the body gives %s, %s", content, calls, c, tc)
			}
		})
	}
}
