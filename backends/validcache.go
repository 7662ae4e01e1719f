package backends

import (
	"bytes"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// validCache remembers large JSON values that have already been validated, so that what
// an agent sends again on every turn (its tool definitions, its system prompt, every
// earlier message of the conversation) is checked by one comparison with a copy instead
// of a scan. A 60 KB Roo Code request spends most of its parse validating such values,
// and a long conversation grows by one or two messages a turn.
//
// It is sound because the values it keeps (objects, arrays, strings) end where their own
// bytes say: if the text at an offset starts with the bytes of a value already found
// valid at the same depth, the scanner would read exactly those bytes there and accept
// them. It only ever answers "valid up to here"; anything else is scanned as before, so
// errors and their offsets are unchanged.
//
// A value is kept from its second sighting on (one-off content costs a hash, not a
// copy), in at most maxBytes, evicted in CLOCK order (a value used since the hand last
// passed is spared once).
type validCache struct {
	seed     maphash.Seed
	maxBytes int

	mu    sync.RWMutex
	byFP  map[uint64][]*validEntry // by fingerprint: the hash of the first validMin bytes
	ring  []*validEntry            // the kept values, in the order the CLOCK hand visits them
	hand  int
	bytes int
	seen  map[uint64]struct{} // fingerprints sighted once
}

type validEntry struct {
	fp   uint64
	val  []byte
	used atomic.Bool
	// msg is how the value parses as a chat message, once a request parsed it as one: a
	// function of the bytes alone, so every request carrying them reuses it.
	msg atomic.Pointer[msgTemplate]
}

// validMin is the size of the smallest value kept, and the length of the fingerprint.
const validMin = 256

// maxSeen bounds the fingerprints remembered from a first sighting.
const maxSeen = 8192

// requestValues is the cache ParseChatRequest uses for the elements of a request's
// top-level arrays (messages, tools).
var requestValues = newValidCache(4 << 20)

func newValidCache(maxBytes int) *validCache {
	return &validCache{seed: maphash.MakeSeed(), maxBytes: maxBytes,
		byFP: map[uint64][]*validEntry{}, seen: map[uint64]struct{}{}}
}

// lookupEntry reports whether b at i starts with a kept value: its entry (nil: none) and
// where it ends. When it does not and a value could be kept there, fp is its fingerprint
// for note.
func (c *validCache) lookupEntry(b []byte, i int) (end int, fp uint64, kept *validEntry) {
	if len(b)-i < validMin || !keepable(b[i]) {
		return 0, 0, nil
	}
	fp = maphash.Bytes(c.seed, b[i:i+validMin])
	c.mu.RLock()
	for _, e := range c.byFP[fp] {
		if len(b)-i >= len(e.val) && bytes.Equal(b[i:i+len(e.val)], e.val) {
			c.mu.RUnlock()
			if !e.used.Load() {
				e.used.Store(true)
			}
			return i + len(e.val), fp, e
		}
	}
	c.mu.RUnlock()
	return 0, fp, nil
}

// note offers v, just found valid, with the fingerprint lookup gave for it (0: none). It
// returns v's entry when v is kept (nil: not, or not yet).
func (c *validCache) note(v []byte, fp uint64) *validEntry {
	if fp == 0 || len(v) < validMin || len(v) > c.maxBytes/4 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.byFP[fp] {
		if bytes.Equal(e.val, v) {
			return e // kept meanwhile by another request
		}
	}
	if _, ok := c.seen[fp]; !ok {
		if len(c.seen) >= maxSeen {
			clear(c.seen)
		}
		c.seen[fp] = struct{}{}
		return nil
	}
	delete(c.seen, fp)
	e := &validEntry{fp: fp, val: bytes.Clone(v)}
	e.used.Store(true) // the hand passes a new value once before it can take it
	c.byFP[fp] = append(c.byFP[fp], e)
	c.ring = append(c.ring, e)
	c.bytes += len(v)
	for c.bytes > c.maxBytes {
		c.evict()
	}
	return e
}

// evict drops one entry: the first one from the hand on not used since the hand last
// passed it. The last entry takes its place in the ring, so eviction costs the same
// however many values are kept.
func (c *validCache) evict() {
	for {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		e := c.ring[c.hand]
		if e.used.Load() {
			e.used.Store(false)
			c.hand++
			continue
		}
		last := len(c.ring) - 1
		c.ring[c.hand], c.ring[last] = c.ring[last], nil
		c.ring = c.ring[:last]
		c.bytes -= len(e.val)
		list := c.byFP[e.fp]
		for k, x := range list {
			if x == e {
				list = append(list[:k], list[k+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(c.byFP, e.fp)
		} else {
			c.byFP[e.fp] = list
		}
		return
	}
}

// keepable reports whether a value starting with c ends where its own bytes say.
func keepable(c byte) bool { return c == '{' || c == '[' || c == '"' }
