package storage

import (
	"context"
	"sync"
)

// Queue is the bounded queue in front of one background consumer (the usage writer, the
// conversation store's writer). Offer never blocks; Send waits for room (for work that must
// keep its place, such as a flush); Close stops new items and waits until the consumer has
// handled the rest and called Finish.
type Queue[T any] struct {
	ch     chan T
	mu     sync.RWMutex
	closed bool
	done   chan struct{}
	ready  chan struct{}
}

// NewQueue returns a queue holding up to size items.
func NewQueue[T any](size int) *Queue[T] {
	return &Queue[T]{ch: make(chan T, size), done: make(chan struct{}), ready: make(chan struct{}, 1)}
}

// Ready is for a consumer that takes items in batches on a timer instead of waking for
// each one: it receives when the queue is half full, and when it is closed.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

func (q *Queue[T]) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Offer queues v without blocking; false means the queue was full or closed.
func (q *Queue[T]) Offer(v T) bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return false
	}
	select {
	case q.ch <- v:
		if len(q.ch) >= cap(q.ch)/2 {
			q.signal()
		}
		return true
	default:
		return false
	}
}

// Send queues v, waiting for room up to ctx; queued is false when the queue is closed.
func (q *Queue[T]) Send(ctx context.Context, v T) (queued bool, err error) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return false, nil
	}
	select {
	case q.ch <- v:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// Items is what the consumer ranges over; it is closed by Close.
func (q *Queue[T]) Items() <-chan T { return q.ch }

// Len and Cap report how many items wait and how many fit.
func (q *Queue[T]) Len() int { return len(q.ch) }

// Cap reports how many items fit.
func (q *Queue[T]) Cap() int { return cap(q.ch) }

// Finish is called by the consumer when it has handled everything (Items is closed).
func (q *Queue[T]) Finish() { close(q.done) }

// Close stops accepting items and waits, up to ctx, for the consumer to Finish.
func (q *Queue[T]) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.ch)
		q.signal()
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
