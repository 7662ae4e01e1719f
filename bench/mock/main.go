// Command mock is the benchmark's OpenAI-compatible upstream: POST .../chat/completions
// answers with the recorded NanoGPT fixtures (a JSON completion with usage, or the SSE
// stream with its usage chunk and [DONE], flushed event by event), as fast as it can.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18481", "listen address")
	jsonPath := flag.String("json", "../testdata/nanogpt/chat-completion.json", "JSON answer fixture")
	ssePath := flag.String("sse", "../testdata/nanogpt/chat-stream-text.sse", "SSE answer fixture")
	flag.Parse()

	jsonBody, err := os.ReadFile(*jsonPath)
	if err != nil {
		log.Fatalf("mock: %v", err)
	}
	sse, err := os.ReadFile(*ssePath)
	if err != nil {
		log.Fatalf("mock: %v", err)
	}
	events := splitEvents(sse)
	jsonLen := strconv.Itoa(len(jsonBody))
	var served atomic.Int64
	bufs := sync.Pool{New: func() any { return new(bytes.Buffer) }}

	mux := http.NewServeMux()
	chat := func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, `{"error":{"message":"method not allowed"}}`, http.StatusMethodNotAllowed)
			return
		}
		// Read the whole body, as a real upstream must before it can answer.
		buf := bufs.Get().(*bytes.Buffer)
		buf.Reset()
		defer bufs.Put(buf)
		if _, err := io.Copy(buf, r.Body); err != nil {
			http.Error(w, `{"error":{"message":"reading body"}}`, http.StatusBadRequest)
			return
		}
		served.Add(1)
		body := buf.Bytes()
		if !bytes.Contains(body, []byte(`"stream":true`)) {
			h := w.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Content-Length", jsonLen)
			_, _ = w.Write(jsonBody)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		rc := http.NewResponseController(w)
		for _, ev := range events {
			if _, err := w.Write(ev); err != nil {
				return
			}
			_ = rc.Flush()
		}
	}
	mux.HandleFunc("/v1/chat/completions", chat)
	mux.HandleFunc("/chat/completions", chat)
	mux.HandleFunc("/served", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, served.Load())
	})
	log.Printf("mock: listening on %s", *addr)
	log.Fatal(http.ListenAndServe(*addr, mux))
}

// splitEvents cuts an SSE fixture into its events, each with its blank line.
func splitEvents(b []byte) [][]byte {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	var out [][]byte
	for _, ev := range strings.SplitAfter(s, "\n\n") {
		if strings.TrimSpace(ev) != "" {
			out = append(out, []byte(ev))
		}
	}
	return out
}
