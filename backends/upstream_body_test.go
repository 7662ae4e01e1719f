package backends

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// TestNanoGPTSendsTheRequestBodyExactly sends every recorded agent request (and the
// Roo-Code-sized benchmark body) through the NanoGPT backend and checks what the upstream
// received: a Content-Length body (not chunked) with every member the proxy does not own
// unchanged, the model replaced, the proxy's own members removed and, for streams,
// include_usage on; byte for byte what UpstreamBody encodes.
func TestNanoGPTSendsTheRequestBodyExactly(t *testing.T) {
	answer, err := os.ReadFile("../testdata/nanogpt/chat-completion.json")
	if err != nil {
		t.Fatal(err)
	}
	type received struct {
		body             []byte
		contentLength    int64
		transferEncoding []string
	}
	got := make(chan received, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{b, r.ContentLength, r.TransferEncoding}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer up.Close()
	be := NewNanoGPT(NanoGPTConfig{APIKey: "k", BaseURL: up.URL + "/v1"}, nil)

	files, _ := filepath.Glob("../testdata/clients/*.json")
	files = append(files, "../testdata/bench/roo-code-60k.json")
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// The proxy's own members ride along to prove they are removed.
			raw = append([]byte(`{"role":"debugging","conversation_id":"c-1",`), bytes.TrimSpace(raw)[1:]...)
			req, err := ParseChatRequest(raw)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := be.ChatCompletion(context.Background(), &Call{Model: "zai-org/glm-4.6", Request: req, Header: http.Header{}}); err != nil {
				t.Fatal(err)
			}
			rcv := <-got
			if rcv.contentLength != int64(len(rcv.body)) || len(rcv.transferEncoding) != 0 {
				t.Errorf("upstream got Content-Length %d, Transfer-Encoding %v for a %d-byte body", rcv.contentLength, rcv.transferEncoding, len(rcv.body))
			}
			if want := req.UpstreamBody("zai-org/glm-4.6"); !bytes.Equal(rcv.body, want) {
				t.Errorf("upstream body differs from UpstreamBody:\n got %.300s\nwant %.300s", rcv.body, want)
			}
			var sent, client map[string]any
			if err := json.Unmarshal(rcv.body, &sent); err != nil {
				t.Fatalf("upstream body is not JSON: %v", err)
			}
			_ = json.Unmarshal(raw, &client)
			delete(client, "role")
			delete(client, "conversation_id")
			client["model"] = "zai-org/glm-4.6"
			if client["stream"] == true {
				so, _ := client["stream_options"].(map[string]any)
				if so == nil {
					so = map[string]any{}
				}
				so["include_usage"] = true
				client["stream_options"] = so
			}
			if !reflect.DeepEqual(sent, client) {
				t.Errorf("upstream body members differ from the client's:\n got %.300v\nwant %.300v", sent, client)
			}
		})
	}
}

// TestUpstreamBodyReadersAreIndependent: the transport may ask for the body again (a
// retry on a stale connection) after reading part of it; every reader must give the
// whole body, joined (up to joinBelow) or as the parts themselves.
func TestUpstreamBodyReadersAreIndependent(t *testing.T) {
	for _, n := range []int{0, 1, joinBelow - 3, joinBelow + 1, 3 * joinBelow} {
		parts := [][]byte{[]byte("{"), bytes.Repeat([]byte("x"), n), []byte("}")}
		want := bytes.Join(parts, nil)
		size, newBody := upstreamBody(parts, nil)
		if size != len(want) {
			t.Errorf("n=%d: size %d, want %d", n, size, len(want))
		}
		first := newBody()
		if _, err := io.ReadFull(first, make([]byte, 1+n/2)); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			got, err := io.ReadAll(newBody())
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("n=%d: reader %d gave %d bytes (err %v), want %d", n, i+2, len(got), err, len(want))
			}
		}
		rest, _ := io.ReadAll(first)
		if !bytes.Equal(rest, want[1+n/2:]) {
			t.Errorf("n=%d: the first reader lost its place: %d bytes left, want %d", n, len(rest), len(want)-1-n/2)
		}
	}
}

// TestPinnedBodyHoldsUntilClosed: a body written from slices of the client's body holds
// them from its creation until it is closed, once, even when Close comes while another
// goroutine reads (HTTP/2 aborts a body write that way); no Read returns bytes after
// Close.
func TestPinnedBodyHoldsUntilClosed(t *testing.T) {
	parts := [][]byte{[]byte("{"), bytes.Repeat([]byte("x"), 2*joinBelow), []byte("}")}
	var pins, unpins atomic.Int32
	pin := func() func() {
		pins.Add(1)
		return func() { unpins.Add(1) }
	}
	_, newBody := upstreamBody(parts, pin)
	for range 50 {
		rc := newBody()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 512)
			for {
				if _, err := rc.Read(buf); err != nil {
					return
				}
			}
		}()
		rc.Close()
		<-done
		if n, err := rc.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("Read after Close = %d, %v", n, err)
		}
		rc.Close()
	}
	if pins.Load() != 50 || unpins.Load() != 50 {
		t.Errorf("50 bodies pinned %d times and unpinned %d times", pins.Load(), unpins.Load())
	}
	_, newBody = upstreamBody(parts[:2], pin) // still more than joinBelow: slices, pinned
	newBody().Close()
	_, newBody = upstreamBody([][]byte{[]byte(`{"a":1}`)}, pin) // joined: a copy, not pinned
	newBody().Close()
	if pins.Load() != 51 || unpins.Load() != 51 {
		t.Errorf("pinned %d and unpinned %d times, want 51: only bodies of slices pin", pins.Load(), unpins.Load())
	}
}

// TestUnsentBodyIsUnpinned: when the request cannot even be built, the body made for it
// gives back what it pinned, so the client's buffer can be reused.
func TestUnsentBodyIsUnpinned(t *testing.T) {
	body := append([]byte(`{"model":"m","messages":[{"role":"user","content":"`), bytes.Repeat([]byte("x"), 2*joinBelow)...)
	req, err := ParseChatRequest(append(body, `"}]}`...))
	if err != nil {
		t.Fatal(err)
	}
	var pins, unpins atomic.Int32
	req.Pin = func() func() {
		pins.Add(1)
		return func() { unpins.Add(1) }
	}
	ng := NewNanoGPT(NanoGPTConfig{APIKey: "k", BaseURL: "http://bad host/v1"}, nil)
	if _, err := ng.ChatCompletion(context.Background(), &Call{Model: "m", Request: req}); err == nil {
		t.Fatal("a request to a URL with a space was sent")
	}
	if pins.Load() != 1 || unpins.Load() != 1 {
		t.Errorf("pinned %d and unpinned %d times, want 1 and 1", pins.Load(), unpins.Load())
	}
}

// readAll reads what io.ReadAll reads whatever the announced length: exact, short, long or
// unknown, and from a reader that hands out a few bytes at a time.
func TestReadAllMatchesIOReadAll(t *testing.T) {
	body := []byte(strings.Repeat(`{"choices":[{"message":{"content":"ok"}}]}`, 40))
	for _, size := range []int64{int64(len(body)), 10, int64(len(body)) * 3, -1, 0, 2 << 20} {
		for _, slow := range []bool{false, true} {
			var r io.Reader = bytes.NewReader(body)
			if slow {
				r = iotest.HalfReader(r)
			}
			got, err := readAll(r, size)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("size %d, slow %v: %d bytes, %v; want the %d-byte body", size, slow, len(got), err, len(body))
			}
		}
	}
	if _, err := readAll(iotest.ErrReader(io.ErrUnexpectedEOF), 100); err != io.ErrUnexpectedEOF {
		t.Errorf("a failing reader's error = %v", err)
	}
}

// writeRecorder is a connection that keeps every slice written to it as given, and the
// bytes written.
type writeRecorder struct {
	net.Conn
	writes [][]byte
	got    []byte
}

func (w *writeRecorder) Write(b []byte) (int, error) {
	w.writes = append(w.writes, b)
	w.got = append(w.got, b...)
	return len(b), nil
}

// TestPinnedBodyWrittenWithoutCopy: net/http hands an upstream connection the body under a
// LimitedReader of its Content-Length; the parts of an agent-sized body then reach the
// connection as they are (the same memory, not copied into a buffer), the limit is
// consumed, and the body reads as ended afterwards (net/http checks for bytes beyond the
// length). A limit shorter than the body is kept to byte for byte.
func TestPinnedBodyWrittenWithoutCopy(t *testing.T) {
	parts := [][]byte{[]byte(`{"messages":`), bytes.Repeat([]byte("x"), 2*joinBelow), []byte(`}`)}
	size, newBody := upstreamBody(parts, func() func() { return func() {} })
	rec := &writeRecorder{}
	body := newBody()
	lr := &io.LimitedReader{R: body, N: int64(size)}
	n, err := pooledCopyConn{rec}.ReadFrom(lr)
	if err != nil || n != int64(size) || lr.N != 0 {
		t.Fatalf("ReadFrom = %d, %v, limit left %d; want %d, nil, 0", n, err, lr.N, size)
	}
	if len(rec.writes) != len(parts) {
		t.Fatalf("%d writes, want the %d parts", len(rec.writes), len(parts))
	}
	for i, w := range rec.writes {
		if len(w) != len(parts[i]) || &w[0] != &parts[i][0] {
			t.Errorf("write %d is a copy of %d bytes, want part %d itself (%d bytes)", i, len(w), i, len(parts[i]))
		}
	}
	if n, err := body.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("Read after the body was written = %d, %v; want 0, EOF", n, err)
	}
	body.Close()

	rec = &writeRecorder{}
	body = newBody()
	defer body.Close()
	lr = &io.LimitedReader{R: body, N: int64(size) - 5}
	if n, err := (pooledCopyConn{rec}).ReadFrom(lr); err != nil || n != int64(size)-5 {
		t.Fatalf("ReadFrom with a short limit = %d, %v; want %d", n, err, size-5)
	}
	if got, want := rec.got, bytes.Join(parts, nil)[:size-5]; !bytes.Equal(got, want) {
		t.Errorf("with a short limit the connection got %d bytes, want the first %d", len(got), len(want))
	}
}
