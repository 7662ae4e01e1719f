package promptengineer

import (
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/internal/ttlcache"
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
// used entry goes first, and an entry unused for ttl is forgotten. A nil *convRoles
// remembers nothing.
type convRoles struct {
	c   *ttlcache.Cache[roles.Role]
	now func() time.Time
}

// newConvRoles returns the memory; size < 0 turns it off (nil), 0 and ttl <= 0 take the
// defaults.
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
	return &convRoles{c: ttlcache.New[roles.Role](size, ttl), now: now}
}

// get returns the role remembered for key; a hit counts as a use.
func (c *convRoles) get(key string) (roles.Role, bool) {
	if c == nil || key == "" {
		return "", false
	}
	return c.c.Get(key, c.now(), true)
}

// put remembers role for key unless key already has one: the first classification stays.
func (c *convRoles) put(key string, role roles.Role) {
	if c == nil || key == "" {
		return
	}
	c.c.Put(key, role, c.now(), true)
}

// len is the number of conversations remembered (for /status).
func (c *convRoles) len() int {
	if c == nil {
		return 0
	}
	return c.c.Len()
}
