package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// lockedBuffer is stderr as a test sees it.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestLog(out *lockedBuffer) (*slog.Logger, *logOutput) {
	lo := newLogOutput(out)
	log := newLogger(config.Log{Level: "info", Format: "text"}, lo)
	return slog.New(flushingHandler{Handler: log.Handler(), out: lo}), lo
}

// Lines from many goroutines all reach stderr, whole and each goroutine's in order, in
// far fewer writes than lines.
func TestLogOutputKeepsEveryLine(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	const workers, per = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				log.Info("request", "worker", w, "n", i)
			}
		}()
	}
	wg.Wait()
	lo.Close()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != workers*per {
		t.Fatalf("got %d lines, want %d", len(lines), workers*per)
	}
	next := make([]int, workers)
	for _, l := range lines {
		var w, n int
		i := strings.Index(l, "worker=")
		if i < 0 {
			t.Fatalf("line cut or mixed: %q", l)
		}
		if _, err := fmt.Sscanf(l[i:], "worker=%d n=%d", &w, &n); err != nil {
			t.Fatalf("line cut or mixed: %q: %v", l, err)
		}
		if n != next[w] {
			t.Fatalf("worker %d: line n=%d came where n=%d was due", w, n, next[w])
		}
		next[w]++
	}
	if out.writes >= workers*per/10 {
		t.Errorf("%d lines took %d writes; want them gathered", workers*per, out.writes)
	}
}

// A warning is on stderr when the call that logged it returns, with the lines before it.
func TestLogOutputWritesWarningsAtOnce(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	defer lo.Close()
	log.Info("before")
	log.Warn("upstream failing", "backend", "nanogpt")
	got := out.String()
	if !strings.Contains(got, "msg=before") || !strings.Contains(got, "upstream failing") ||
		strings.Index(got, "msg=before") > strings.Index(got, "upstream failing") {
		t.Errorf("stderr right after the warning = %q; want the info line, then the warning", got)
	}
	// With attributes or a group the handler still writes warnings at once.
	log.With("component", "router").WithGroup("g").Error("no backend left")
	if !strings.Contains(out.String(), "no backend left") {
		t.Errorf("an error logged through With/WithGroup was held back: %q", out.String())
	}
}

// An info line is written without anything else happening (no later warning, no Close).
func TestLogOutputWritesInfoLinesSoon(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	defer lo.Close()
	log.Info("listening", "addr", "http://127.0.0.1:8090")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "listening") {
		if time.Now().After(deadline) {
			t.Fatal("an info line never reached stderr")
		}
		time.Sleep(time.Millisecond)
	}
}

// After Close lines go straight to stderr (background writers finishing after shutdown).
func TestLogOutputAfterClose(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	log.Info("one")
	lo.Close()
	lo.Close() // twice is fine
	log.Info("two")
	if got := out.String(); !strings.Contains(got, "msg=one") || !strings.Contains(got, "msg=two") ||
		strings.Index(got, "msg=one") > strings.Index(got, "msg=two") {
		t.Errorf("stderr = %q; want both lines, in order", got)
	}
}

// Lines logged while the output closes (requests finishing during shutdown) are all
// written, each goroutine's in order, and closing does not wait on them.
func TestLogOutputCloseWhileLogging(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	const workers, per = 8, 400
	var wg sync.WaitGroup
	started := make(chan struct{}, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if i == per/4 {
					started <- struct{}{}
				}
				log.Info("request", "worker", w, "n", i)
			}
		}()
	}
	for range workers {
		<-started
	}
	lo.Close()
	wg.Wait()
	next := make([]int, workers)
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var w, n int
		i := strings.Index(l, "worker=")
		if i < 0 {
			t.Fatalf("line cut or mixed: %q", l)
		}
		if _, err := fmt.Sscanf(l[i:], "worker=%d n=%d", &w, &n); err != nil || n != next[w] {
			t.Fatalf("worker %d: line %q came where n=%d was due", w, l, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != per {
			t.Errorf("worker %d: %d lines written, want %d", w, n, per)
		}
	}
}
