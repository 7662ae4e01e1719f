package handlers

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
)

// maxPrealloc caps how much of a declared Content-Length is allocated up front, so a
// client that announces a large body and sends little costs little.
const maxPrealloc = 1 << 20

// Request bodies of an agent's size (a Roo Code request is 60 KB and grows with the
// conversation) are read into pooled buffers: allocating one per request was most of the
// proxy's garbage. Buffers come in classes of 64 KB << i up to pooledMax; smaller bodies
// are cheap to allocate (and go upstream as a copy), larger ones are rare.
const pooledMax = 1 << 20

// pooledMin is the smallest body read into a pooled buffer (a variable for tests, which
// pool every body so that poisonReleased covers them all).
var pooledMin int64 = 32 << 10

var bodyPools [5]sync.Pool // 64 KB, 128 KB, ..., 1 MiB

// poisonReleased makes release overwrite a buffer before it goes back to its pool, so
// that a test reading bytes of a released body sees garbage instead of the right bytes
// by luck. Set only by tests.
var poisonReleased bool

// reqBody is a request body. A pooled buffer goes back to its pool when the handler and
// every upstream body made of its bytes are done with it: the transport may still be
// writing a body after the answer came, and closes it when it is done.
type reqBody struct {
	b     []byte
	class int // index into bodyPools; -1: not pooled
	refs  atomic.Int32
}

// poolClass is the class of a buffer holding n bytes and one more (the read that finds
// EOF), or -1.
func poolClass(n int64) int {
	if n < pooledMin || n >= pooledMax {
		return -1
	}
	for c := range bodyPools {
		if n < 64<<10<<c {
			return c
		}
	}
	return -1
}

// pin adds a holder of the body's bytes; the returned func (safe to call more than once)
// removes it.
func (rb *reqBody) pin() func() {
	rb.refs.Add(1)
	var once sync.Once
	return func() { once.Do(rb.release) }
}

// release removes a holder; the last one returns the buffer to its pool.
func (rb *reqBody) release() {
	n := rb.refs.Add(-1)
	if n < 0 {
		panic("handlers: request body released more often than held")
	}
	if n > 0 || rb.class < 0 {
		return
	}
	b := rb.b[:cap(rb.b)]
	if poisonReleased {
		for i := range b {
			b[i] = 0xA5
		}
	}
	rb.b = b[:0]
	bodyPools[rb.class].Put(rb)
}

// readBody reads a request body of at most limit bytes (a *http.MaxBytesError beyond),
// held once by the caller, who releases it. With a known Content-Length it reads into one
// buffer of that size instead of growing one.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (*reqBody, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	n := r.ContentLength
	if n <= 0 {
		b, err := io.ReadAll(rd)
		rb := &reqBody{b: b, class: -1}
		rb.refs.Store(1)
		return rb, err
	}
	n = min(n, limit, maxPrealloc)
	c := poolClass(n)
	var rb *reqBody
	if c >= 0 {
		rb, _ = bodyPools[c].Get().(*reqBody)
	}
	if rb == nil {
		size := n + 1
		if c >= 0 {
			size = 64 << 10 << c
		}
		rb = &reqBody{b: make([]byte, 0, size), class: c}
	}
	rb.refs.Store(1)
	buf := rb.b
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
			rb.class = -1                   // a new buffer, of no class
		}
		m, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		rb.b = buf
		if err == io.EOF {
			return rb, nil
		}
		if err != nil {
			return rb, err
		}
	}
}
