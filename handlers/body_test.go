package handlers_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// earlyAnswerTransport answers every request at once with a 400, as an upstream that
// rejects a request before reading its body does, and hands the unread body to the test:
// a transport may close a request body after it answered (HTTP/1 goes on writing it).
type earlyAnswerTransport struct{ bodies chan io.ReadCloser }

func (t *earlyAnswerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.bodies <- r.Body
	return &http.Response{StatusCode: http.StatusBadRequest, Request: r,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(strings.NewReader(`{"error":{"message":"rejected early","type":"invalid_request_error"}}`)),
	}, nil
}

// TestUpstreamBodyOutlivesItsRequest: the upstream answers a 60 KB request before reading
// its body and the client's next request is handled in full; the first body, read only
// then, is still exactly what the first client sent (its tools, its messages). The
// request body's buffer is reused only once the transport is done with it.
func TestUpstreamBodyOutlivesItsRequest(t *testing.T) {
	tr := &earlyAnswerTransport{bodies: make(chan io.ReadCloser, 16)}
	p := newTestProxy(t, nil, proxyOptions{BaseURL: "http://upstream.invalid/v1", Transport: tr})
	first := fixture(t, "bench/roo-code-60k.json")
	second := bytes.ReplaceAll(first, []byte("You are Roo"), []byte("You are Zed"))

	resp, b := p.post(t, first, nil)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("first request: %d %s", resp.StatusCode, b)
	}
	held := <-tr.bodies
	for len(tr.bodies) > 0 { // failover attempts, if any, also answered early
		defer (<-tr.bodies).Close()
	}
	if resp, b := p.post(t, second, nil); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("second request: %d %s", resp.StatusCode, b)
	}
	for len(tr.bodies) > 0 {
		rc := <-tr.bodies
		_, _ = io.Copy(io.Discard, rc)
		rc.Close()
	}

	got, err := io.ReadAll(held)
	held.Close()
	if err != nil {
		t.Fatal(err)
	}
	var sent, client map[string]json.RawMessage
	if err := json.Unmarshal(got, &sent); err != nil {
		t.Fatalf("the first upstream body, read after the second request, is not JSON: %v\n%.200q", err, got)
	}
	_ = json.Unmarshal(first, &client)
	if !bytes.Equal(sent["tools"], client["tools"]) {
		t.Error("the first upstream body's tools are not the first client's")
	}
	if !bytes.Contains(sent["messages"], []byte("You are Roo")) || bytes.Contains(sent["messages"], []byte("You are Zed")) {
		t.Error("the first upstream body's messages are not the first client's")
	}
}
