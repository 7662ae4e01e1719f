package handlers_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rawMembers splits a JSON object into its member names (in order) and raw values, using
// encoding/json only (independent of the proxy's own scanner).
func rawMembers(t testing.TB, b []byte) ([]string, map[string]json.RawMessage) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %v: %.200s", err, b)
	}
	var keys []string
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("reading member name: %v", err)
		}
		k := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("reading member %q: %v", k, err)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

func decodeAny(t testing.TB, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %.200s: %v", b, err)
	}
	return v
}

// proxyOwned are the request members the proxy removes.
var proxyOwned = []string{"role", "conversation_id"}

// checkUpstreamBody asserts that up is client minus the proxy's members, with model
// replaced, include_usage forced for streams, every other member byte-identical in the
// client's order, and messages unchanged except for additions to the system area.
func checkUpstreamBody(t *testing.T, client, up []byte, model string) {
	t.Helper()
	ckeys, cvals := rawMembers(t, client)
	ukeys, uvals := rawMembers(t, up)

	var stream bool
	_ = json.Unmarshal(cvals["stream"], &stream)

	// Decoded comparison (go-cmp), messages aside.
	want := decodeAny(t, client).(map[string]any)
	for _, k := range proxyOwned {
		delete(want, k)
	}
	want["model"] = model
	if stream {
		so, _ := want["stream_options"].(map[string]any)
		if so == nil {
			so = map[string]any{}
		}
		so["include_usage"] = true
		want["stream_options"] = so
	}
	got := decodeAny(t, up).(map[string]any)
	delete(want, "messages")
	delete(got, "messages")
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("upstream body (messages aside) differs from the client's (-want +got):\n%s", d)
	}

	// Member order and bytes.
	var wantKeys []string
	for _, k := range ckeys {
		if !slices.Contains(proxyOwned, k) {
			wantKeys = append(wantKeys, k)
		}
	}
	if stream && cvals["stream_options"] == nil {
		wantKeys = append(wantKeys, "stream_options")
	}
	if d := cmp.Diff(wantKeys, ukeys); d != "" {
		t.Errorf("upstream member order (-want +got):\n%s", d)
	}
	for _, k := range ckeys {
		switch k {
		case "model", "messages", "stream_options", "role", "conversation_id":
			continue
		}
		if !bytes.Equal(cvals[k], uvals[k]) {
			t.Errorf("member %q not forwarded byte for byte:\nclient:   %.300s\nupstream: %.300s", k, cvals[k], uvals[k])
		}
	}
	if stream && cvals["stream_options"] != nil {
		var so map[string]bool
		_ = json.Unmarshal(cvals["stream_options"], &so)
		if so["include_usage"] && !bytes.Equal(cvals["stream_options"], uvals["stream_options"]) {
			t.Errorf("stream_options already asked for usage; want it byte for byte: %s vs %s", cvals["stream_options"], uvals["stream_options"])
		}
	}
	if _, ok := uvals["model"]; !ok {
		t.Errorf("upstream body has no model")
	}

	var cmsgs, umsgs []json.RawMessage
	if err := json.Unmarshal(cvals["messages"], &cmsgs); err != nil {
		t.Fatalf("client messages: %v", err)
	}
	if err := json.Unmarshal(uvals["messages"], &umsgs); err != nil {
		t.Fatalf("upstream messages: %v", err)
	}
	checkMessages(t, cmsgs, umsgs)
}

type msgHead struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

func isSystemRole(r string) bool { return r == "system" || r == "developer" }

// checkMessages asserts that every client message reaches the upstream in order: other
// than system/developer messages, byte for byte; a system message may have text added
// after the client's (string suffix or extra parts), and a new system message may follow
// the client's system message or open the conversation. Nothing else may change.
func checkMessages(t *testing.T, client, up []json.RawMessage) {
	t.Helper()
	i, j := 0, 0
	for i < len(client) && j < len(up) {
		var c, u msgHead
		_ = json.Unmarshal(client[i], &c)
		_ = json.Unmarshal(up[j], &u)
		switch {
		case bytes.Equal(client[i], up[j]):
			i, j = i+1, j+1
		case isSystemRole(c.Role) && c.Role == u.Role && extendsContent(t, c.Content, up[j], client[i]):
			i, j = i+1, j+1
		case u.Role == "system" && (j == 0 || isSystemRoleAt(up, j-1)):
			j++ // added system-area context
		default:
			t.Errorf("message %d changed on the way upstream:\nclient:   %.400s\nupstream: %.400s", i, client[i], up[j])
			return
		}
	}
	if i < len(client) {
		t.Errorf("upstream lost messages %d.. of %d", i, len(client))
	}
	for ; j < len(up); j++ {
		t.Errorf("upstream got an extra trailing message: %.300s", up[j])
	}
}

func isSystemRoleAt(msgs []json.RawMessage, k int) bool {
	var h msgHead
	_ = json.Unmarshal(msgs[k], &h)
	return isSystemRole(h.Role)
}

// extendsContent reports whether upstream message u equals client message c with only
// text added to its content.
func extendsContent(t *testing.T, cContent, u, c json.RawMessage) bool {
	cm := decodeAny(t, c).(map[string]any)
	um := decodeAny(t, u).(map[string]any)
	cc, uc := cm["content"], um["content"]
	delete(cm, "content")
	delete(um, "content")
	if !cmp.Equal(cm, um) {
		return false
	}
	switch cc := cc.(type) {
	case string:
		us, ok := uc.(string)
		return ok && strings.HasPrefix(us, cc)
	case []any:
		ua, ok := uc.([]any)
		return ok && len(ua) >= len(cc) && cmp.Equal(cc, ua[:len(cc)])
	}
	return false
}

var reasoningRE = regexp.MustCompile(`"reasoning":("(?:[^"\\]|\\.)*")`)

// wantClientStream is what the client must receive for an upstream stream: the same
// events byte for byte, except that a delta's reasoning is also given as
// reasoning_content, and usage-only chunks are withheld when the client did not ask.
func wantClientStream(t testing.TB, upstream []byte, includeUsage bool) []byte {
	t.Helper()
	var out []byte
	for _, ev := range splitEvents(t, upstream) {
		if !includeUsage && isUsageOnly(ev) {
			continue
		}
		out = append(out, reasoningRE.ReplaceAll(ev, []byte(`"reasoning":$1,"reasoning_content":$1`))...)
	}
	return out
}

func isUsageOnly(ev []byte) bool {
	data, ok := bytes.CutPrefix(bytes.TrimSpace(ev), []byte("data: "))
	if !ok {
		return false
	}
	var c struct {
		Choices []json.RawMessage `json:"choices"`
		Usage   json.RawMessage   `json:"usage"`
	}
	return json.Unmarshal(data, &c) == nil && len(c.Choices) == 0 && len(c.Usage) > 0 && string(c.Usage) != "null"
}

func includeUsageOf(t testing.TB, body []byte) bool {
	var v struct {
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	_ = json.Unmarshal(body, &v)
	return v.StreamOptions.IncludeUsage
}

// synthetic requests cover what the agent fixtures do not: proxy members, images,
// cache_control, a forced tool, odd number spellings, escapes, a member nobody has
// invented yet, and stream_options with include_usage false.
var syntheticRequests = map[string]string{
	"everything-stream": `{"model":"auto:code_review","role":"debugging","conversation_id":"conv-42",
 "messages":[{"role":"system","content":[{"type":"text","text":"sys","cache_control":{"type":"ephemeral"}}]},
  {"role":"user","content":[{"type":"text","text":"what is this? caf\u00e9 <b>&amp; \u2028"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=","detail":"high"}}]},
  {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"a.go\"}"}}]},
  {"role":"tool","tool_call_id":"call_1","content":"package a"}],
 "temperature":0.10,"top_p":1E0,"max_completion_tokens":4096,"reasoning_effort":"high",
 "response_format":{"type":"json_schema","json_schema":{"name":"x","strict":true,"schema":{"type":"object"}}},
 "tools":[{"type":"function","function":{"name":"read_file","strict":true,"parameters":{"type":"object","properties":{"path":{"type":"string"}},"required":["path"],"additionalProperties":false}}}],
 "tool_choice":{"type":"function","function":{"name":"read_file"}},"parallel_tool_calls":false,
 "x_future_field":{"nested":[1,2.50,"\ud83d\ude00",null,true]},"stream":true,"stream_options":{"include_usage":false,"x_extra":1}}`,
	"non-stream-extras": `{ "messages" : [ {"role":"developer","content":"be brief"}, {"role":"user","content":"hi","name":"bob"} ],
  "model" : "auto", "stream": false, "seed": 7, "logit_bias": {"50256": -100}, "metadata": {"k":"v"}, "user": "u-1", "conversation_id": "c" }`,
	"stream-no-options": `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true,"n":1}`,
}

// clientRequests returns every agent fixture plus the synthetic requests, by name.
func clientRequests(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "clients", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no client fixtures: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(filepath.Base(f), ".json")] = b
	}
	for k, v := range syntheticRequests {
		out[k] = []byte(v)
	}
	return out
}

// TestClientRequestsReachUpstreamUnchanged replays every agent request through the proxy:
// the upstream gets each field exactly (minus the proxy's own), and the client gets the
// upstream's answer byte for byte (with the documented reasoning_content and usage rules).
func TestClientRequestsReachUpstreamUnchanged(t *testing.T) {
	sse := fixture(t, "nanogpt/chat-stream-tool-call.sse")
	for name, body := range clientRequests(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				if isStreamRequest(r) {
					replaySSE(sse)(w, r)
					return
				}
				replayJSON(200, fixture(t, "nanogpt/chat-completion.json"), nil)(w, r)
			})
			p := newTestProxy(t, up, proxyOptions{})
			resp, got := p.post(t, body, map[string]string{"X-Title": "Roo Code"})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, got)
			}
			reqs := up.Requests()
			if len(reqs) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(reqs))
			}
			if reqs[0].Path != "/api/v1/chat/completions" || reqs[0].Method != http.MethodPost {
				t.Errorf("upstream got %s %s", reqs[0].Method, reqs[0].Path)
			}
			model := resp.Header.Get("X-Proxy-Model")
			if model == "" || resp.Header.Get("X-Proxy-Backend") != "nanogpt" {
				t.Errorf("X-Proxy-Model %q, X-Proxy-Backend %q", model, resp.Header.Get("X-Proxy-Backend"))
			}
			checkUpstreamBody(t, body, reqs[0].Body, model)

			var stream bool
			_, vals := rawMembers(t, body)
			_ = json.Unmarshal(vals["stream"], &stream)
			if stream {
				if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
					t.Errorf("Content-Type %q", ct)
				}
				want := wantClientStream(t, sse, includeUsageOf(t, body))
				if d := cmp.Diff(string(want), string(got)); d != "" {
					t.Errorf("client stream differs from the upstream's (-want +got):\n%s", d)
				}
			} else {
				checkReasoningMessage(t, fixture(t, "nanogpt/chat-completion.json"), got)
			}
		})
	}
}

// checkReasoningMessage asserts the JSON answer is the upstream's with
// message.reasoning_content added right after message.reasoning and nothing else changed.
func checkReasoningMessage(t *testing.T, upstream, got []byte) {
	t.Helper()
	want := decodeAny(t, upstream).(map[string]any)
	for _, c := range want["choices"].([]any) {
		m := c.(map[string]any)["message"].(map[string]any)
		if r, ok := m["reasoning"]; ok {
			m["reasoning_content"] = r
		}
	}
	if d := cmp.Diff(want, decodeAny(t, got)); d != "" {
		t.Errorf("JSON answer (-want +got):\n%s", d)
	}
	ukeys, _ := rawMembers(t, upstream)
	gkeys, gvals := rawMembers(t, got)
	if d := cmp.Diff(ukeys, gkeys); d != "" {
		t.Errorf("top-level member order changed (-upstream +got):\n%s", d)
	}
	var choices []json.RawMessage
	_ = json.Unmarshal(gvals["choices"], &choices)
	_, cv := rawMembers(t, choices[0])
	mkeys, _ := rawMembers(t, cv["message"])
	if d := cmp.Diff([]string{"role", "content", "reasoning", "reasoning_content", "tool_calls"}, mkeys); d != "" {
		t.Errorf("message member order (-want +got):\n%s", d)
	}
}

// TestStreamReachesClientByteForByte: every upstream event reaches the client exactly,
// for both fixtures, with and without the client asking for usage, with CRLF framing,
// keep-alive comments, event/id lines and a 5 MiB content delta.
func TestStreamReachesClientByteForByte(t *testing.T) {
	huge := strings.Repeat("abcdefgh", 5<<20/8) // 5 MiB on one line
	chunk := func(delta string) string {
		return `data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"finish_reason":null}]}` + "\n\n"
	}
	synthetic := chunk(`{"role":"assistant","content":""}`) +
		": keep-alive\n\n" +
		chunk(`{"content":"`+huge+`"}`) +
		"id: 7\nevent: message\n" + strings.TrimPrefix(chunk(`{"content":"x"}`), "") +
		chunk(`{"reasoning":"say \"hi\"\\n"}`) +
		`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n" +
		`data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}` + "\n\n" +
		"data: [DONE]\n\n"
	crlf := strings.ReplaceAll(string(fixture(t, "nanogpt/chat-stream-tool-call.sse")), "\n", "\r\n")

	tests := []struct {
		name     string
		upstream []byte
	}{
		{"text", fixture(t, "nanogpt/chat-stream-text.sse")},
		{"tool-call", fixture(t, "nanogpt/chat-stream-tool-call.sse")},
		{"huge-line-and-extras", []byte(synthetic)},
		{"crlf", []byte(crlf)},
	}
	for _, tc := range tests {
		for _, usage := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/include_usage=%v", tc.name, usage), func(t *testing.T) {
				up := newFakeUpstream(t, replaySSE(tc.upstream))
				p := newTestProxy(t, up, proxyOptions{})
				body := `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`
				if usage {
					body = `{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}`
				}
				resp, got := p.post(t, []byte(body), nil)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %.500s", resp.StatusCode, got)
				}
				want := wantClientStream(t, tc.upstream, usage)
				if !bytes.Equal(want, got) {
					t.Errorf("client stream differs: %s", firstDiff(want, got))
				}
			})
		}
	}
}

// firstDiff describes where two byte strings first differ, briefly (they may be MiBs).
func firstDiff(want, got []byte) string {
	n := min(len(want), len(got))
	i := 0
	for i < n && want[i] == got[i] {
		i++
	}
	from := max(0, i-80)
	return fmt.Sprintf("len want %d got %d; first difference at byte %d:\nwant …%q\ngot  …%q",
		len(want), len(got), i, want[from:min(len(want), i+80)], got[from:min(len(got), i+80)])
}

// TestStreamFlushesEachEventAsItArrives proves per-event flushing without timing: the
// upstream sends an event and then waits until the client has read it from the proxy
// before sending the next. A proxy that buffered would deadlock, and the test's deadline
// turns that into a clear failure.
func TestStreamFlushesEachEventAsItArrives(t *testing.T) {
	events := []string{
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"one"},"finish_reason":null}]}` + "\n\n",
		": keep-alive\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}` + "\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]},"finish_reason":null}]}` + "\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":null}]}` + "\n\n",
		`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}` + "\n\n",
		"data: [DONE]\n\n",
	}
	// The proxy may hold events that carry no output yet (it can still fall over to another
	// model until then), so the handshake starts at the first content event.
	const firstContent = 1
	ack := make(chan int)
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		for i, ev := range events {
			_, _ = io.WriteString(w, ev)
			_ = rc.Flush()
			if i < firstContent || i == len(events)-1 {
				continue
			}
			select {
			case got := <-ack:
				if got != i {
					t.Errorf("client acknowledged event %d, upstream sent %d", got, i)
				}
			case <-r.Context().Done():
				return
			}
		}
	})
	p := newTestProxy(t, up, proxyOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := p.do(ctx, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`), nil)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i, want := range events {
		got, err := readEvent(br)
		if err != nil {
			t.Fatalf("event %d never reached the client (%s): the proxy buffers instead of flushing each event", i, errString(err))
		}
		if string(got) != want {
			t.Fatalf("event %d: got %q want %q", i, got, want)
		}
		if i >= firstContent && i < len(events)-1 {
			select {
			case ack <- i:
			case <-ctx.Done():
				t.Fatalf("upstream never waited for event %d", i)
			}
		}
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("bytes after [DONE]: %q", rest)
	}
}

// TestReasoningBecomesReasoningContent: NanoGPT's reasoning is also given as
// reasoning_content, in stream deltas and in a JSON answer's message, right after
// reasoning; an upstream that already sends reasoning_content is left alone.
func TestReasoningBecomesReasoningContent(t *testing.T) {
	t.Run("stream", func(t *testing.T) {
		sse := fixture(t, "nanogpt/chat-stream-tool-call.sse")
		up := newFakeUpstream(t, replaySSE(sse))
		p := newTestProxy(t, up, proxyOptions{})
		_, got := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`), nil)
		for _, want := range []string{
			`"delta":{"reasoning":"The user wants pagination. ","reasoning_content":"The user wants pagination. "}`,
			`"delta":{"reasoning":"I should read the file first.","reasoning_content":"I should read the file first."}`,
		} {
			if !strings.Contains(string(got), want) {
				t.Errorf("client stream lacks %s", want)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		body := fixture(t, "nanogpt/chat-completion.json")
		up := newFakeUpstream(t, replayJSON(200, body, nil))
		p := newTestProxy(t, up, proxyOptions{})
		resp, got := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`), nil)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		checkReasoningMessage(t, body, got)
	})
	t.Run("already-present", func(t *testing.T) {
		sse := `data: {"choices":[{"index":0,"delta":{"reasoning":"a","reasoning_content":"a"},"finish_reason":null}]}` + "\n\ndata: [DONE]\n\n"
		up := newFakeUpstream(t, replaySSE([]byte(sse)))
		p := newTestProxy(t, up, proxyOptions{})
		_, got := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`), nil)
		if string(got) != sse {
			t.Errorf("got %q want %q", got, sse)
		}
	})
}

// TestClientAuthorizationNeverReachesUpstream: the upstream sees the proxy's key, the
// allowlisted client headers, and nothing else of the client's.
func TestClientAuthorizationNeverReachesUpstream(t *testing.T) {
	up := newFakeUpstream(t, nil)
	p := newTestProxy(t, up, proxyOptions{})
	hdr := map[string]string{
		"X-Title":             "Roo Code",
		"HTTP-Referer":        "https://github.com/RooVetGit/Roo-Cline",
		"Idempotency-Key":     "idem-1",
		"OpenAI-Organization": "org-1",
		"User-Agent":          "RooCode/3.25.0",
		"Cookie":              "session=client-secret-must-not-leak",
		"X-Api-Key":           "client-secret-must-not-leak",
		"Proxy-Authorization": clientSecret,
		"X-Forwarded-For":     "10.0.0.1",
		"X-Proxy-Role":        "debugging",
	}
	for _, stream := range []string{"true", "false"} {
		resp, b := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":`+stream+`}`), hdr)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	}
	reqs := up.Requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests", len(reqs))
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer "+proxyKey {
			t.Errorf("upstream Authorization = %q, want the proxy's key", got)
		}
		for _, k := range []string{"X-Title", "HTTP-Referer", "Idempotency-Key", "OpenAI-Organization"} {
			if r.Header.Get(k) != hdr[k] {
				t.Errorf("allowlisted header %s = %q, want %q", k, r.Header.Get(k), hdr[k])
			}
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, "client-secret-must-not-leak") {
					t.Errorf("client secret reached upstream in %s", k)
				}
			}
		}
		for _, k := range []string{"Cookie", "X-Api-Key", "Proxy-Authorization", "X-Forwarded-For", "X-Proxy-Role"} {
			if r.Header.Get(k) != "" {
				t.Errorf("header %s reached upstream", k)
			}
		}
		if ua := r.Header.Get("User-Agent"); ua != "nanogpt-proxy/test" {
			t.Errorf("User-Agent %q, want the proxy's", ua)
		}
		accept := "application/json"
		if bytes.Contains(r.Body, []byte(`"stream":true`)) {
			accept = "text/event-stream"
		}
		if ct, a := r.Header.Get("Content-Type"), r.Header.Get("Accept"); ct != "application/json" || a != accept {
			t.Errorf("Content-Type %q, Accept %q; want application/json and %s", ct, a, accept)
		}
	}
}

// TestUpstreamRateLimitHeadersReachClient: NanoGPT's rate-limit headers come back on a
// success, JSON and stream alike; other upstream headers (cookies, server) do not.
func TestUpstreamRateLimitHeadersReachClient(t *testing.T) {
	hdr := map[string]string{"X-Ratelimit-Remaining-Requests": "999", "X-Ratelimit-Limit-Requests": "1000",
		"Set-Cookie": "upstream=1", "X-Upstream-Secret": "s"}
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		for k, v := range hdr {
			w.Header().Set(k, v)
		}
		if isStreamRequest(r) {
			replaySSE(fixture(t, "nanogpt/chat-stream-text.sse"))(w, r)
			return
		}
		replayJSON(200, fixture(t, "nanogpt/chat-completion.json"), nil)(w, r)
	})
	p := newTestProxy(t, up, proxyOptions{})
	for _, stream := range []string{"false", "true"} {
		resp, b := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":`+stream+`}`), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		if resp.Header.Get("X-Ratelimit-Remaining-Requests") != "999" || resp.Header.Get("X-Ratelimit-Limit-Requests") != "1000" {
			t.Errorf("stream=%s: rate-limit headers lost: %v", stream, resp.Header)
		}
		if resp.Header.Get("Set-Cookie") != "" || resp.Header.Get("X-Upstream-Secret") != "" {
			t.Errorf("stream=%s: unlisted upstream headers reached the client: %v", stream, resp.Header)
		}
		if resp.Header.Get("X-Request-Id") == "" || resp.Header.Get("X-Proxy-Role") != "general" || resp.Header.Get("X-Proxy-Attempts") != "1" {
			t.Errorf("stream=%s: proxy headers %v", stream, resp.Header)
		}
	}
}

// TestUpstreamConnectionsAreReused: consecutive requests, streamed or not, go over one
// kept-alive upstream connection (a new TLS connection per request would cost NanoGPT
// users a handshake each time).
func TestUpstreamConnectionsAreReused(t *testing.T) {
	var mu sync.Mutex
	addrs := map[string]int{}
	sse, plain := fixture(t, "nanogpt/chat-stream-tool-call.sse"), fixture(t, "nanogpt/chat-completion.json")
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		addrs[r.RemoteAddr]++
		mu.Unlock()
		if isStreamRequest(r) {
			replaySSE(sse)(w, r)
			return
		}
		replayJSON(200, plain, nil)(w, r)
	})
	p := newTestProxy(t, up, proxyOptions{})
	for i, stream := range []string{"true", "true", "false", "true", "false"} {
		resp, b := p.post(t, []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":`+stream+`}`), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d: %s", i, resp.StatusCode, b)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(addrs) != 1 {
		t.Errorf("5 sequential requests used %d upstream connections, want 1: %v", len(addrs), addrs)
	}
}

// TestStreamConnectionReusedWhenBodyEndsAfterDone: NanoGPT ends the HTTP body (the last
// chunk of the chunked encoding) after it has flushed data: [DONE]; the proxy must still
// hand the connection back for reuse instead of dropping it.
func TestStreamConnectionReusedWhenBodyEndsAfterDone(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	addrs := map[string]int{}
	sse := fixture(t, "nanogpt/chat-stream-text.sse")
	up := newFakeUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		addrs[r.RemoteAddr]++
		n := len(addrs)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		_, _ = w.Write(sse)
		_ = http.NewResponseController(w).Flush()
		if n == 1 {
			select { // end the body only once the client has seen [DONE]
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	p := newTestProxy(t, up, proxyOptions{})
	body := []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"stream":true}`)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	resp, err := p.do(ctx, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for {
		ev, err := readEvent(br)
		if err != nil {
			t.Fatalf("stream ended before [DONE]: %v", err)
		}
		if strings.HasPrefix(string(ev), "data: [DONE]") {
			break
		}
	}
	close(release)
	_, _ = io.Copy(io.Discard, br)
	resp.Body.Close()
	if r2, b := p.post(t, body, nil); r2.StatusCode != 200 {
		t.Fatalf("second request: %d %s", r2.StatusCode, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(addrs) != 1 {
		t.Errorf("the second request opened a new upstream connection: %v", addrs)
	}
}
