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
	if got := out.String(); !strings.Contains(got, "msg=one") || !strings.Contains(got, "msg=two") {
		t.Errorf("stderr = %q; want both lines", got)
	}
}

// An info line is formatted later, off the goroutine that logged it, but says what was
// logged when it was logged: the record's own time, not the time it was formatted.
func TestLogOutputFormatsInfoLinesLater(t *testing.T) {
	var out lockedBuffer
	log, lo := newTestLog(&out)
	before := time.Now().Truncate(time.Millisecond)
	log.Info("request", "status", 200)
	after := time.Now()
	lo.mu.Lock()
	pending, buffered := len(lo.pending), len(lo.buf)
	lo.mu.Unlock()
	if pending != 1 || buffered != 0 {
		t.Errorf("right after the call %d records wait and %d bytes are formatted; want the record waiting", pending, buffered)
	}
	time.Sleep(3 * logFlushDelay) // formatting later must not stamp it later
	lo.Close()
	line := out.String()
	i := strings.Index(line, "time=")
	if i < 0 || !strings.Contains(line, "msg=request status=200") {
		t.Fatalf("stderr = %q", line)
	}
	ts, err := time.Parse(time.RFC3339Nano, strings.Fields(line[i+len("time="):])[0])
	if err != nil {
		t.Fatal(err)
	}
	if ts.Before(before) || ts.After(after) {
		t.Errorf("line stamped %s; logged between %s and %s", ts, before, after)
	}
}
