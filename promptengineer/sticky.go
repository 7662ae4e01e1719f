package promptengineer

import (
	"container/list"
	"sync"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Defaults of the conversation role memory.
const (
	defaultConversationRoles   = 4096
	defaultConversationRoleTTL = 6 * time.Hour
)

// convRoles remembers, per conversation key, the role the conversation's content was
// first classified as. A client without a mode signal would otherwise get the role of its
// latest message each turn, and the guidance block in the system prompt (which breaks
// provider prompt caches) and the route would change with it. Bounded: the least recently
// used entry goes first, and an entry unused for ttl is forgotten.
type convRoles struct {
	size int
	ttl  time.Duration
	now  func() time.Time

	mu  sync.Mutex
	m   map[string]*list.Element
	lru *list.List // of *convRole, most recently used first
}

type convRole struct {
	key  string
	role roles.Role
	used time.Time
}

func newConvRoles(size int, ttl time.Duration, now func() time.Time) *convRoles {
	if size < 0 {
		return nil
	}
	if size == 0 {
		size = defaultConversationRoles
	}
	if ttl <= 0 {
		ttl = defaultConversationRoleTTL
	}
	if now == nil {
		now = time.Now
	}
	return &convRoles{size: size, ttl: ttl, now: now, m: map[string]*list.Element{}, lru: list.New()}
}

// get returns the role remembered for key; a hit counts as a use.
func (c *convRoles) get(key string) (roles.Role, bool) {
	if c == nil || key == "" {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[key]
	if !ok {
		return "", false
	}
	e := el.Value.(*convRole)
	now := c.now()
	if now.Sub(e.used) > c.ttl {
		c.lru.Remove(el)
		delete(c.m, key)
		return "", false
	}
	e.used = now
	c.lru.MoveToFront(el)
	return e.role, true
}

// put remembers role for key unless key already has one: the first classification stays.
func (c *convRoles) put(key string, role roles.Role) {
	if c == nil || key == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if el, ok := c.m[key]; ok {
		if e := el.Value.(*convRole); now.Sub(e.used) <= c.ttl {
			return
		}
		c.lru.Remove(el)
		delete(c.m, key)
	}
	c.m[key] = c.lru.PushFront(&convRole{key: key, role: role, used: now})
	for c.lru.Len() > c.size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*convRole).key)
	}
}

// len is the number of conversations remembered (for /status).
func (c *convRoles) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
