package routing

import (
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/internal/ttlcache"
)

// sticky remembers, per conversation key, the model that last served it: a bounded LRU
// whose entries expire ttl after the model last served (a read does not renew a pin).
type sticky struct{ c *ttlcache.Cache[Candidate] }

func newSticky(ttl time.Duration, max int) *sticky {
	if ttl <= 0 {
		ttl = 2 * time.Hour
	}
	if max <= 0 {
		max = 10000
	}
	return &sticky{c: ttlcache.New[Candidate](max, ttl)}
}

// get returns the candidate pinned to key, if any and not expired (now in unix nanos).
func (s *sticky) get(key string, now int64) (Candidate, bool) {
	return s.c.Get(key, time.Unix(0, now), false)
}

// put pins key to c.
func (s *sticky) put(key string, c Candidate, now int64) {
	s.c.Put(key, c, time.Unix(0, now), false)
}

func (s *sticky) len() int { return s.c.Len() }
