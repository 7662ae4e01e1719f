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

// A batching consumer is woken when the queue is half full and when it is closed, not
// for each item.
func TestQueueReady(t *testing.T) {
	q := storage.NewQueue[int](8)
	ready := func() bool {
		select {
		case <-q.Ready():
			return true
		default:
			return false
		}
	}
	for i := range 3 {
		q.Offer(i)
	}
	if ready() {
		t.Fatal("ready with 3 of 8 queued; want a consumer left asleep")
	}
	q.Offer(3)
	if !ready() {
		t.Fatal("not ready with 4 of 8 queued")
	}
	for range 4 {
		<-q.Items()
	}
	q.Offer(4)
	if ready() {
		t.Fatal("ready again with 1 of 8 queued")
	}
	go func() {
		for range q.Items() {
		}
		q.Finish()
	}()
	if err := q.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !ready() {
		t.Error("not ready after Close: a consumer sleeping on its timer would not see the end")
	}
}
