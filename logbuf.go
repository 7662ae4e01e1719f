package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Log output. The proxy logs one line per request; written straight to stderr that is one
// write(2) per request on the request's goroutine. logOutput gathers lines in memory and
// writes them from one goroutine at most logFlushDelay after they were logged (at once when
// logFlushBytes are waiting), so 2000 requests a second make about fifty writes. INFO and
// DEBUG records are kept as records (copies, with the time they were logged) and formatted
// together just before a write, on the goroutine that writes: formatting one line per
// request between everything else a request does cost the binary 4-7 % of its CPU at 2000
// requests a second, a batch of them far less. Lines at WARN and above are written, after
// the lines logged before them, before the call that logged them returns, and Close writes
// whatever is left, so the lines that explain a failure or a shutdown are never held back.
const (
	logFlushDelay = 20 * time.Millisecond
	logFlushBytes = 32 << 10
)

type logOutput struct {
	out io.Writer
	wmu sync.Mutex // held while writing to out: keeps batches in order
	mu  sync.Mutex // guards buf, spare, closed, pending and spareRecs
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
	// pending are INFO and DEBUG records not formatted yet, each with its handler: they are
	// formatted together just before a write, off the goroutines that logged them.
	pending, spareRecs []pendingRecord
	// formatting is set while pending records are formatted (under wmu): their lines are
	// written when that ends, not by a flush of their own.
	formatting atomic.Bool
}

// pendingRecord is a record to format later, with the handler it was logged through.
type pendingRecord struct {
	h slog.Handler
	r slog.Record
}

// maxPending is how many records wait to be formatted at most: then the call that logged
// the last one formats and writes them, as a call that fills logFlushBytes of lines writes
// them (about as many request lines).
const maxPending = 128

func newLogOutput(out io.Writer) *logOutput {
	l := &logOutput{out: out, kick: make(chan struct{}, 1), done: make(chan struct{}), quit: make(chan struct{})}
	go l.run()
	return l
}

// Write implements io.Writer. slog handlers call it once per record, with one whole line.
func (l *logOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	// After Close lines go straight out, except while a flush formats pending records: it
	// holds wmu, and writes what they add when it ends.
	if l.closed && !l.formatting.Load() {
		l.mu.Unlock()
		l.wmu.Lock()
		defer l.wmu.Unlock()
		return l.out.Write(p)
	}
	first := len(l.buf) == 0 && len(l.pending) == 0
	l.buf = append(l.buf, p...)
	full := len(l.buf) >= logFlushBytes && !l.formatting.Load()
	l.mu.Unlock()
	l.queued(first, full)
	return len(p), nil
}

// queued follows a line or a record queued: when the queue is full it is written at once,
// and the first one queued wakes the writer, which writes it within logFlushDelay.
func (l *logOutput) queued(first, full bool) {
	switch {
	case full:
		l.Flush()
	case first:
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// later keeps a copy of r to be formatted by h before the next write; false when the
// output is closed (the caller formats it now).
func (l *logOutput) later(h slog.Handler, r slog.Record) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	first := len(l.buf) == 0 && len(l.pending) == 0
	l.pending = append(l.pending, pendingRecord{h, r.Clone()})
	full := len(l.pending) >= maxPending
	l.mu.Unlock()
	l.queued(first, full)
	return true
}

// format formats the pending records into the buffer, in the order they were logged.
// Called with wmu held.
func (l *logOutput) format() {
	l.mu.Lock()
	recs := l.pending
	l.pending, l.spareRecs = l.spareRecs, nil
	l.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	l.formatting.Store(true)
	for i := range recs {
		_ = recs[i].h.Handle(context.Background(), recs[i].r)
		recs[i] = pendingRecord{}
	}
	l.formatting.Store(false)
	if cap(recs) <= 2*maxPending {
		l.mu.Lock()
		l.spareRecs = recs[:0]
		l.mu.Unlock()
	}
}

// Flush writes the lines gathered so far.
func (l *logOutput) Flush() {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.format()
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
		l.Flush()
		l.mu.Lock()
		l.closed = true
		recs := l.pending // logged since that flush: formatted straight out now
		l.pending = nil
		l.mu.Unlock()
		l.Flush()
		for _, p := range recs {
			_ = p.h.Handle(context.Background(), p.r)
		}
	})
}

// flushingHandler writes the gathered lines out as soon as a WARN or ERROR record was
// handled.
type flushingHandler struct {
	slog.Handler
	out *logOutput
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && h.out.later(h.Handler, r) {
		return nil
	}
	if r.Level >= slog.LevelWarn {
		h.out.Flush() // the lines logged before it come first
	}
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
