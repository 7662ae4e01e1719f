package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// Log output. The proxy logs one line per request; written straight to stderr that is one
// write(2) per request on the request's goroutine. logOutput gathers lines in memory and
// writes them from one goroutine at most logFlushDelay after they were logged (at once when
// logFlushBytes are waiting), so 2000 requests a second make about fifty writes. Lines at
// WARN and above are written before the call that logged them returns, and Close writes
// whatever is left, so the lines that explain a failure or a shutdown are never held back.
const (
	logFlushDelay = 20 * time.Millisecond
	logFlushBytes = 32 << 10
)

type logOutput struct {
	out io.Writer
	wmu sync.Mutex // held while writing to out: keeps batches in order
	mu  sync.Mutex // guards buf, spare and closed
	buf []byte
	// spare is the buffer the last flush wrote out, to gather the lines after the next
	// flush in: a buffer grown afresh for every flush allocated about twice the lines' bytes.
	spare []byte
	kick  chan struct{}
	done  chan struct{}
	quit  chan struct{}
	once  sync.Once
	// closed is set by Close: later lines go straight to out.
	closed bool
}

func newLogOutput(out io.Writer) *logOutput {
	l := &logOutput{out: out, kick: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{})}
	go l.run()
	return l
}

// Write implements io.Writer. slog handlers call it once per record, with one whole line.
func (l *logOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		l.wmu.Lock()
		defer l.wmu.Unlock()
		return l.out.Write(p)
	}
	first := len(l.buf) == 0
	l.buf = append(l.buf, p...)
	full := len(l.buf) >= logFlushBytes
	l.mu.Unlock()
	switch {
	case full:
		l.Flush()
	case first:
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// Flush writes the lines gathered so far.
func (l *logOutput) Flush() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	b := l.buf
	l.buf, l.spare = l.spare, nil
	l.mu.Unlock()
	if len(b) > 0 {
		_, _ = l.out.Write(b) // nowhere left to report a failing stderr
	}
	if cap(b) <= 4*logFlushBytes { // a burst's larger buffer is let go
		l.mu.Lock()
		l.spare = b[:0]
		l.mu.Unlock()
	}
}

func (l *logOutput) run() {
	defer close(l.done)
	t := time.NewTimer(logFlushDelay)
	t.Stop()
	for {
		select {
		case <-l.kick:
			t.Reset(logFlushDelay)
			select {
			case <-t.C:
			case <-l.quit:
				return
			}
			l.Flush()
		case <-l.quit:
			return
		}
	}
}

// Close stops the background writer and writes what is left; later lines are written
// directly.
func (l *logOutput) Close() {
	l.once.Do(func() {
		close(l.quit)
		<-l.done
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		l.Flush()
	})
}

// flushingHandler writes the gathered lines out as soon as a WARN or ERROR record was
// handled.
type flushingHandler struct {
	slog.Handler
	out *logOutput
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.out.Flush()
	}
	return err
}

func (h flushingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithAttrs(as), out: h.out}
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{Handler: h.Handler.WithGroup(name), out: h.out}
}
