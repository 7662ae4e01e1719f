package backends_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
)

// An agent-sized request body goes upstream in parts (slices of the client's body), which
// net/http copies into an HTTP/1.1 connection with io.Copy: that allocated a 32 KB buffer
// for every such request, half of what a 60 KB request allocated. The upstream connection
// copies through a pooled buffer instead, and the upstream still receives the body byte for
// byte.
func TestAgentSizedBodySentWithoutCopyBuffer(t *testing.T) {
	answer := readFixture(t, "nanogpt/chat-completion.json")
	var mu sync.Mutex
	var first []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if first == nil {
			first, _ = io.ReadAll(r.Body)
		} else {
			_, _ = io.Copy(io.Discard, r.Body)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	ng := backends.NewNanoGPT(backends.NanoGPTConfig{BaseURL: srv.URL + "/v1", APIKey: "k"}, nil)
	body := bytes.Replace(rooSizedBody(t), []byte(`"stream":true`), []byte(`"stream":false`), 1)
	req, err := backends.ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	small, err := backends.ParseChatRequest([]byte(`{"model":"auto","messages":[{"role":"user","content":"Say hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	call := func(req *backends.ChatRequest) {
		resp, err := ng.ChatCompletion(context.Background(), &backends.Call{Model: "m", Request: req})
		if err != nil {
			t.Fatal(err)
		}
		resp.Close()
	}
	call(req)
	if want := req.UpstreamBody("m"); !bytes.Equal(first, want) || len(want) < 50<<10 {
		t.Fatalf("upstream received %d bytes, want the %d-byte body", len(first), len(want))
	}
	// Bytes allocated per call, by the client and the test server alike: the large body's
	// calls against the small body's, so that what both allocate cancels out.
	perCall := func(req *backends.ChatRequest) uint64 {
		const calls = 50
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range calls {
			call(req)
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / calls
	}
	call(small)
	s, l := perCall(small), perCall(req)
	t.Logf("allocated per call: %d B with a small body, %d B with a %d KB one", s, l, len(body)>>10)
	if l > s+24<<10 {
		t.Errorf("a %d KB request allocates %d KB per call, a small one %d KB: the difference holds a 32 KB copy buffer", len(body)>>10, l>>10, s>>10)
	}
}

// The connection wrapper sits under TLS: an HTTPS upstream is still reached, over HTTP/2
// when it offers it (NanoGPT, Vertex), with the body intact.
func TestTransportHTTPSAndHTTP2(t *testing.T) {
	answer := readFixture(t, "nanogpt/chat-completion.json")
	var mu sync.Mutex
	var proto int
	var got []byte
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		proto, got = r.ProtoMajor, b
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	tr := backends.NewTransport()
	tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	ng := backends.NewNanoGPT(backends.NanoGPTConfig{BaseURL: srv.URL + "/v1", APIKey: "k"}, &http.Client{Transport: tr})
	body := bytes.Replace(rooSizedBody(t), []byte(`"stream":true`), []byte(`"stream":false`), 1)
	req, err := backends.ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ng.ChatCompletion(context.Background(), &backends.Call{Model: "m", Request: req})
	if err != nil {
		t.Fatal(err)
	}
	resp.Close()
	mu.Lock()
	defer mu.Unlock()
	if proto != 2 || !bytes.Equal(got, req.UpstreamBody("m")) {
		t.Errorf("upstream saw HTTP/%d and %d bytes; want HTTP/2 and the %d-byte body", proto, len(got), len(req.UpstreamBody("m")))
	}
}
