// Package ttlcache is a bounded map from conversation keys to what the proxy remembers
// about them (the prompt engineer's role, the router's model): the least recently used
// entry goes first when it is full, and an entry is forgotten ttl after it was last
// renewed. Safe for concurrent use; time comes from the caller, so tests drive it.
package ttlcache

import (
	"container/list"
	"sync"
	"time"
)

// Cache is the bounded expiring map. The zero value is not usable: use New.
type Cache[V any] struct {
	max int
	ttl time.Duration

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *entry[V], most recently used first
}

type entry[V any] struct {
	key     string
	v       V
	renewed time.Time
}

// New returns a cache of at most max entries that expire ttl after their last renewal.
func New[V any](max int, ttl time.Duration) *Cache[V] {
	return &Cache[V]{max: max, ttl: ttl, m: map[string]*list.Element{}}
}

// Get returns the live value for key and makes it the most recently used; renew also
// restarts its ttl (a read that counts as a use). An expired entry is dropped.
func (c *Cache[V]) Get(key string, now time.Time, renew bool) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.live(key, now)
	if !ok {
		var zero V
		return zero, false
	}
	if renew {
		e.renewed = now
	}
	return e.v, true
}

// Put stores v for key, renewed now. With keepLive, a live value already there stays as it
// is (the first one wins) and Put reports false.
func (c *Cache[V]) Put(key string, v V, now time.Time, keepLive bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.live(key, now); ok {
		if keepLive {
			return false
		}
		e.v, e.renewed = v, now
		return true
	}
	c.m[key] = c.lru.PushFront(&entry[V]{key: key, v: v, renewed: now})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*entry[V]).key)
	}
	return true
}

// live returns key's entry, moved to the front, or drops it when it has expired. Call
// with mu held.
func (c *Cache[V]) live(key string, now time.Time) (*entry[V], bool) {
	el, ok := c.m[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*entry[V])
	if now.Sub(e.renewed) > c.ttl {
		c.lru.Remove(el)
		delete(c.m, key)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

// Len is the number of entries held (expired ones not yet dropped included).
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
