package storage_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// Offer never blocks (full: false), Send waits for room up to its context, Close waits for
// the consumer to finish everything queued, and nothing is accepted afterwards.
func TestQueue(t *testing.T) {
	q := storage.NewQueue[int](1)
	if !q.Offer(1) || q.Offer(2) {
		t.Fatal("a queue of one took two items, or refused the first")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if queued, err := q.Send(ctx, 3); queued || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send on a full queue = %v, %v; want its context's error", queued, err)
	}
	var got []int
	go func() {
		for v := range q.Items() {
			got = append(got, v)
		}
		q.Finish()
	}()
	if queued, err := q.Send(context.Background(), 4); !queued || err != nil {
		t.Fatalf("Send with a consumer = %v, %v", queued, err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 1 || got[1] != 4 {
		t.Errorf("consumer saw %v, want [1 4]", got)
	}
	if q.Offer(5) {
		t.Error("Offer after Close accepted an item")
	}
	if queued, err := q.Send(context.Background(), 6); queued || err != nil {
		t.Errorf("Send after Close = %v, %v; want not queued, no error", queued, err)
	}
}
