package handlers

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Every test of this package runs with every request body pooled and overwritten when
// released: a stage that kept bytes of a body past its request would read garbage, and
// its test would fail, instead of reading the right bytes because the buffer happened not
// to be reused yet.
func init() { poisonReleased, pooledMin = true, 0 }

// ProductionBodies sets body pooling as the binary has it, for benchmarks, and returns
// the function restoring the tests' setting.
func ProductionBodies() (restore func()) {
	poison, min := poisonReleased, pooledMin
	poisonReleased, pooledMin = false, 32<<10
	return func() { poisonReleased, pooledMin = poison, min }
}

// TestRequestBodyIsHeldUntilItsLastHolder: a pooled body's bytes stay as they were while
// anything holds them (the handler, an upstream body being written), and only the last
// release hands the buffer back.
func TestRequestBodyIsHeldUntilItsLastHolder(t *testing.T) {
	sent := bytes.Repeat([]byte("0123456789"), 4<<10) // 40 KB: pooled
	rb, err := readBody(httptest.NewRecorder(), httptest.NewRequest("POST", "/", bytes.NewReader(sent)), 1<<20)
	if err != nil || !bytes.Equal(rb.b, sent) {
		t.Fatalf("readBody = %d bytes, %v; want the %d bytes sent", len(rb.b), err, len(sent))
	}
	if rb.class < 0 {
		t.Fatalf("a %d-byte body was not pooled", len(sent))
	}
	data := rb.b
	unpin := rb.pin() // an upstream body
	rb.release()      // the handler returns
	if !bytes.Equal(data, sent) {
		t.Fatal("the body changed while an upstream body still held it")
	}
	unpin()
	unpin() // the transport may close a body twice
	if !bytes.Equal(data, bytes.Repeat([]byte{0xA5}, len(data))) {
		t.Error("the last release did not hand the buffer back")
	}
	defer func() {
		if recover() == nil {
			t.Error("releasing more often than held did not panic")
		}
	}()
	rb.release()
}

// TestSmallAndUnsizedBodiesAreNotPooled: a body under pooledMin, or without a
// Content-Length, is its own allocation, left to the garbage collector.
func TestSmallAndUnsizedBodiesAreNotPooled(t *testing.T) {
	defer func(m int64) { pooledMin = m }(pooledMin)
	pooledMin = 32 << 10
	unsized := httptest.NewRequest("POST", "/", bytes.NewReader(bytes.Repeat([]byte("b"), 100<<10)))
	unsized.ContentLength = -1
	for name, req := range map[string]*http.Request{
		"small":   httptest.NewRequest("POST", "/", bytes.NewReader(bytes.Repeat([]byte("a"), 1000))),
		"unsized": unsized,
	} {
		rb, err := readBody(httptest.NewRecorder(), req, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		kept, data := rb.b, bytes.Clone(rb.b)
		rb.release()
		if rb.class >= 0 || !bytes.Equal(kept, data) {
			t.Errorf("%s body: class %d, changed on release: %v", name, rb.class, !bytes.Equal(kept, data))
		}
	}
}
