package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// slowStreamBody is a streaming request the mock holds after its first content chunk.
const slowStreamBody = `{"model":"auto","stream":true,"stream_options":{"include_usage":true},` +
	`"messages":[{"role":"user","content":"Read src/orders/service.go please. ` + markSlowStream + `"}]}`

// openSlowStream sends slowStreamBody and reads up to the first content chunk, so the
// stream is in flight when it returns. The caller reads the rest from br; raw collects
// every byte of the body read through br.
func openSlowStream(t *testing.T, p *proxy) (resp *http.Response, br *bufio.Reader, raw *bytes.Buffer) {
	t.Helper()
	// The mock holds everything after the first content chunk: a proxy that buffered the
	// answer (headers included) instead of passing each event on would never deliver it.
	raw = &bytes.Buffer{}
	arrived := make(chan error, 1)
	go func() {
		var err error
		resp, err = http.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader(slowStreamBody))
		if err != nil {
			arrived <- fmt.Errorf("starting the stream: %w", err)
			return
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			arrived <- fmt.Errorf("stream status %d: %s", resp.StatusCode, b)
			return
		}
		br = bufio.NewReader(io.TeeReader(resp.Body, raw))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				arrived <- fmt.Errorf("reading the stream before its first content: %w", err)
				return
			}
			if strings.Contains(line, "Let me read the service first.") {
				arrived <- nil
				return
			}
		}
	}()
	select {
	case err := <-arrived:
		if resp != nil {
			t.Cleanup(func() { resp.Body.Close() })
		}
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the first content chunk did not reach the client while the upstream held the rest: the stream is buffered")
	}
	return resp, br, raw
}

var reasoningMember = regexp.MustCompile(`"reasoning":("(?:[^"\\]|\\.)*")`)

// withReasoningContent is an SSE stream as the proxy must pass it on: each "reasoning"
// member followed by a "reasoning_content" copy, every other byte unchanged.
func withReasoningContent(sse []byte) []byte {
	return reasoningMember.ReplaceAll(sse, []byte(`"reasoning":$1,"reasoning_content":$1`))
}

// waitNotAccepting polls until a TCP connect to the proxy is refused: it stopped
// accepting. It fails if the process exits first or 10 s pass.
func waitNotAccepting(t *testing.T, p *proxy) {
	t.Helper()
	addr := strings.TrimPrefix(p.URL, "http://")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("the proxy exited with a stream still in flight\nlog:\n%s", p.Log.String())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the proxy still accepts connections 10 s after the signal")
}

// TestGracefulShutdown sends the real process SIGTERM and SIGINT.
func TestGracefulShutdown(t *testing.T) {
	t.Run("SIGTERM mid-stream: the stream completes, exit 0, usage row flushed", func(t *testing.T) {
		mock := newUpstream(t)
		p := startProxy(t, mock, proxyOptions{})
		resp, br, raw := openSlowStream(t, p)
		reqID := resp.Header.Get("X-Request-Id")

		p.signal(syscall.SIGTERM)
		waitNotAccepting(t, p)
		close(mock.Release)
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("reading the rest of the stream: %v", err)
		}
		if !strings.Contains(string(rest), `"arguments":"\"src/orders/service.go\"}"`) ||
			!strings.Contains(string(rest), `"finish_reason":"tool_calls"`) {
			t.Errorf("the rest of the stream lacks the tool call or its finish:\n%s", rest)
		}
		if !strings.HasSuffix(string(rest), "data: [DONE]\n\n") {
			t.Errorf("the stream did not end with data: [DONE]:\n%s", rest)
		}
		// Byte for byte what NanoGPT sent (keep-alive comment included), plus reasoning_content.
		want := withReasoningContent(readFixture(t, "nanogpt/chat-stream-tool-call.sse"))
		if diff := cmp.Diff(strings.Split(string(want), "\n"), strings.Split(raw.String(), "\n")); diff != "" {
			t.Errorf("the client's stream differs from NanoGPT's (-want +got):\n%s", diff)
		}
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM, want 0\nlog:\n%s", code, p.Log.String())
		}
		rows := p.usageRows()
		if len(rows) != 1 {
			t.Fatalf("usage rows = %+v, want the stream's", rows)
		}
		checkRow(t, rows, reqID, resp.Header.Get("X-Proxy-Model"), resp.Header.Get("X-Proxy-Role"), true, 200,
			[3]int{5123, 61, 5184}, "")
	})

	t.Run("SIGINT with no traffic exits 0 promptly", func(t *testing.T) {
		p := startProxy(t, newUpstream(t), proxyOptions{})
		p.signal(syscall.SIGINT)
		// Nothing is in flight, so nothing may hold the exit up to the 30 s shutdown timeout.
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGINT, want 0\nlog:\n%s", code, p.Log.String())
		}
	})

	t.Run("SIGTERM with a stream past the shutdown timeout: exit 0, the stream is cut, its usage row kept", func(t *testing.T) {
		mock := newUpstream(t)
		p := startProxy(t, mock, proxyOptions{config: "server:\n  shutdown_timeout: 1s\n"})
		resp, br, _ := openSlowStream(t, p)
		p.signal(syscall.SIGTERM)
		// The mock never releases the stream; the proxy must give up on it after 1 s.
		if code := p.wait(20 * time.Second); code != 0 {
			t.Fatalf("exit code %d, want 0\nlog:\n%s", code, p.Log.String())
		}
		rest, _ := io.ReadAll(br)
		if strings.Contains(string(rest), "[DONE]") {
			t.Errorf("a stream cut by shutdown ended with [DONE], as if complete:\n%s", rest)
		}
		// Its usage row is not lost: the handler records it before the writer's last flush.
		rows := p.usageRows()
		r, ok := rows[resp.Header.Get("X-Request-Id")]
		if !ok || len(rows) != 1 {
			t.Fatalf("usage rows = %+v, want the cut stream's", rows)
		}
		if !r.Stream || r.StatusCode == 200 || r.Error == "" || r.Backend != "nanogpt" {
			t.Errorf("row of the cut stream = %+v, want a streaming nanogpt row marked as failed", r)
		}
	})
}

// TestClientDisconnect: a client that hangs up mid-stream cancels the upstream request, and
// the request still gets its usage row, marked as cut short.
func TestClientDisconnect(t *testing.T) {
	mock := newUpstream(t)
	p := startProxy(t, mock, proxyOptions{})
	resp, _, _ := openSlowStream(t, p)
	resp.Body.Close()
	select {
	case <-mock.Cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream request was not cancelled after the client hung up")
	}
	p.stop()
	rows := p.usageRows()
	r, ok := rows[resp.Header.Get("X-Request-Id")]
	if !ok || len(rows) != 1 {
		t.Fatalf("usage rows = %+v, want the abandoned stream's", rows)
	}
	if r.StatusCode != 499 || !r.Stream || r.Error == "" {
		t.Errorf("row = %+v, want status 499 (client closed request), stream, an error", r)
	}
}
