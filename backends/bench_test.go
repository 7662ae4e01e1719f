package backends_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// rooSizedBody pads a Roo Code fixture (system prompt and tools) to about 60 KB, the
// size of a real Roo Code request.
func rooSizedBody(tb testing.TB) []byte {
	tb.Helper()
	var req map[string]json.RawMessage
	if err := json.Unmarshal(readFixture(tb, "clients/roo-code-code-first-turn.json"), &req); err != nil {
		tb.Fatal(err)
	}
	var msgs []map[string]any
	_ = json.Unmarshal(req["messages"], &msgs)
	sys := msgs[0]["content"].(string)
	for len(sys) < 30<<10 {
		sys += "\n\n====\n\nRULES\n\n- Use the provider-native tool-calling mechanism; never guess a file's content."
	}
	msgs[0]["content"] = sys
	req["messages"], _ = json.Marshal(msgs)
	var tools []map[string]any
	_ = json.Unmarshal(req["tools"], &tools)
	base := append([]map[string]any(nil), tools...)
	for i := 0; len(mustJSON(tb, tools)) < 28<<10; i++ {
		t := map[string]any{}
		for k, v := range base[i%len(base)] {
			t[k] = v
		}
		fn := map[string]any{}
		for k, v := range t["function"].(map[string]any) {
			fn[k] = v
		}
		fn["name"] = fmt.Sprintf("%s_%d", fn["name"], i)
		t["function"] = fn
		tools = append(tools, t)
	}
	req["tools"] = mustJSON(tb, tools)
	b := mustJSON(tb, req)
	if len(b) < 58<<10 || len(b) > 66<<10 {
		tb.Fatalf("padded body is %d bytes, want about 60 KB", len(b))
	}
	return b
}

func mustJSON(tb testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func benchBodies(b *testing.B) map[string][]byte {
	return map[string][]byte{
		"small":  []byte(`{"model":"auto","messages":[{"role":"user","content":"Say hi"}],"stream":true}`),
		"roo60k": rooSizedBody(b),
	}
}

// BenchmarkParseChatRequest decodes a request the way the handler does.
func BenchmarkParseChatRequest(b *testing.B) {
	for _, name := range []string{"small", "roo60k"} {
		body := benchBodies(b)[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := backends.ParseChatRequest(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseAndUpstreamBody is the whole request-side cost per request: decode, then
// encode the upstream body.
func BenchmarkParseAndUpstreamBody(b *testing.B) {
	for _, name := range []string{"small", "roo60k"} {
		body := benchBodies(b)[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r, err := backends.ParseChatRequest(body)
				if err != nil {
					b.Fatal(err)
				}
				if len(r.UpstreamBody("qwen/qwen3-coder")) == 0 {
					b.Fatal("empty")
				}
			}
		})
	}
}

// BenchmarkNanoGPTRoundTrip is one non-streaming call through the NanoGPT backend to a
// loopback upstream that reads the whole body: the cost of sending a request body of
// each size (system calls, buffers) as well as reading the answer.
func BenchmarkNanoGPTRoundTrip(b *testing.B) {
	answer := readFixture(b, "nanogpt/chat-completion.json")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	ng := backends.NewNanoGPT(backends.NanoGPTConfig{BaseURL: srv.URL + "/v1", APIKey: "k"}, nil)
	bodies := benchBodies(b)
	// A 12 KB request: a short agent prompt, between the small and the Roo-sized one.
	bodies["mid12k"] = []byte(`{"model":"auto","messages":[{"role":"system","content":"` +
		strings.Repeat("Answer with code only. ", 530) + `"},{"role":"user","content":"Say hi"}]}`)
	for _, name := range []string{"small", "mid12k", "roo60k"} {
		body := bytes.Replace(bodies[name], []byte(`"stream":true`), []byte(`"stream":false`), 1)
		req, err := backends.ParseChatRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				resp, err := ng.ChatCompletion(context.Background(), &backends.Call{Model: "m", Request: req})
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.Body) == 0 {
					b.Fatal("empty answer")
				}
				resp.Close()
			}
		})
	}
}

// BenchmarkSSEReader reads a tool-call stream; ns/op is per event.
func BenchmarkSSEReader(b *testing.B) {
	fix := readFixture(b, "nanogpt/chat-stream-tool-call.sse")
	// One long stream: the fixture's events minus [DONE], repeated, then [DONE].
	body := bytes.TrimSuffix(fix, []byte("data: [DONE]\n\n"))
	perStream := bytes.Count(body, []byte("\n\n"))
	stream := append(bytes.Repeat(body, 1000), "data: [DONE]\n\n"...)
	b.SetBytes(int64(len(stream) / (perStream*1000 + 1)))
	b.ReportAllocs()
	var sr *backends.SSEReader
	for b.Loop() {
		if sr == nil {
			sr = backends.NewSSEReader(io.NopCloser(bytes.NewReader(stream)))
			sr.Transform = nil
		}
		ev, err := sr.Next()
		if err != nil {
			b.Fatal(err)
		}
		if ev.Done {
			sr = nil
		}
	}
}

// TestRooSizedBody keeps the benchmark input honest: it parses and round-trips.
func TestRooSizedBody(t *testing.T) {
	body := rooSizedBody(t)
	r, err := backends.ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	checkUnownedPreserved(t, body, r.UpstreamBody("m"))
	if !strings.HasPrefix(r.Messages[0].Text(40), "You are Roo") {
		t.Errorf("system prompt: %q", r.Messages[0].Text(40))
	}
}
