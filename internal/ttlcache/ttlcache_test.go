package ttlcache

import (
	"fmt"
	"testing"
	"time"
)

func TestCacheBoundedLRU(t *testing.T) {
	c := New[int](3, time.Hour)
	t0 := time.Unix(0, 0)
	for i := range 3 {
		c.Put(fmt.Sprint(i), i, t0, false)
	}
	c.Get("0", t0, false) // 0 is now the most recently used: 1 goes first
	c.Put("3", 3, t0, false)
	if c.Len() != 3 {
		t.Fatalf("Len = %d, want 3", c.Len())
	}
	if _, ok := c.Get("1", t0, false); ok {
		t.Error("the least recently used entry was kept")
	}
	for _, k := range []string{"0", "2", "3"} {
		if _, ok := c.Get(k, t0, false); !ok {
			t.Errorf("%s was evicted", k)
		}
	}
}

func TestCacheExpiryAndRenewal(t *testing.T) {
	c := New[string](10, time.Minute)
	t0 := time.Unix(1000, 0)
	c.Put("read", "a", t0, false)
	c.Put("renewed", "b", t0, false)
	// A plain read does not restart the ttl; a renewing read does.
	c.Get("read", t0.Add(50*time.Second), false)
	c.Get("renewed", t0.Add(50*time.Second), true)
	at := t0.Add(90 * time.Second)
	if _, ok := c.Get("read", at, false); ok {
		t.Error("an entry only read lived past its ttl")
	}
	if v, ok := c.Get("renewed", at, false); !ok || v != "b" {
		t.Errorf("renewed entry = %q, %v; want b, true", v, ok)
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d after the expired entry was read; want it dropped", c.Len())
	}
}

func TestCachePutKeepLive(t *testing.T) {
	c := New[string](10, time.Minute)
	t0 := time.Unix(0, 0)
	if !c.Put("k", "first", t0, true) {
		t.Fatal("Put into an empty slot reported false")
	}
	if c.Put("k", "second", t0.Add(time.Second), true) {
		t.Error("keepLive replaced a live value")
	}
	if v, _ := c.Get("k", t0.Add(time.Second), false); v != "first" {
		t.Errorf("value = %q, want the first", v)
	}
	// Once expired, the slot is free again; without keepLive a live value is replaced.
	if !c.Put("k", "third", t0.Add(2*time.Minute), true) {
		t.Error("keepLive refused to replace an expired value")
	}
	c.Put("k", "fourth", t0.Add(2*time.Minute), false)
	if v, _ := c.Get("k", t0.Add(2*time.Minute), false); v != "fourth" {
		t.Errorf("value = %q, want fourth", v)
	}
}
