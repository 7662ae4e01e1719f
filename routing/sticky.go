package routing

import (
	"container/list"
	"sync"
	"time"
)

// sticky remembers, per conversation key, the model that last served it: a bounded LRU
// whose entries expire after a TTL.
type sticky struct {
	mu  sync.Mutex
	ttl time.Duration
	max int
	m   map[string]*list.Element
	lru list.List // front: most recently used
}

type stickyEntry struct {
	key  string
	c    Candidate
	seen int64 // unix nanos
}

func newSticky(ttl time.Duration, max int) *sticky {
	if ttl <= 0 {
		ttl = 2 * time.Hour
	}
	if max <= 0 {
		max = 10000
	}
	return &sticky{ttl: ttl, max: max, m: make(map[string]*list.Element)}
}

// get returns the candidate pinned to key, if any and not expired.
func (s *sticky) get(key string, now int64) (Candidate, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el, ok := s.m[key]
	if !ok {
		return Candidate{}, false
	}
	e := el.Value.(*stickyEntry)
	if now-e.seen > int64(s.ttl) {
		s.lru.Remove(el)
		delete(s.m, key)
		return Candidate{}, false
	}
	s.lru.MoveToFront(el)
	return e.c, true
}

// put pins key to c.
func (s *sticky) put(key string, c Candidate, now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.m[key]; ok {
		e := el.Value.(*stickyEntry)
		e.c, e.seen = c, now
		s.lru.MoveToFront(el)
		return
	}
	s.m[key] = s.lru.PushFront(&stickyEntry{key: key, c: c, seen: now})
	for s.lru.Len() > s.max {
		old := s.lru.Back()
		s.lru.Remove(old)
		delete(s.m, old.Value.(*stickyEntry).key)
	}
}

func (s *sticky) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}
