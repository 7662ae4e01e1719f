package backends

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// requestBodies are the recorded agent requests and the Roo-Code-sized benchmark body.
func requestBodies(tb testing.TB) map[string][]byte {
	tb.Helper()
	files, _ := filepath.Glob("../testdata/clients/*.json")
	files = append(files, "../testdata/bench/roo-code-60k.json")
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

// splitResult renders what splitting gave, error text included, for comparison.
func splitResult(fields []Field, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	var sb strings.Builder
	for _, f := range fields {
		fmt.Fprintf(&sb, "%q=%s\n", f.Key, f.Value)
	}
	return sb.String()
}

// wantMessages asks for the elements of "messages", as ParseChatRequest does: they are
// looked up one by one, every other array whole first.
func wantMessages(key string) func(from, to int, kept *validEntry) {
	if key == "messages" {
		return func(int, int, *validEntry) {}
	}
	return nil
}

// checkSame splits b with the warmed cache and without any, and wants the same answer.
func checkSame(t *testing.T, vc *validCache, name string, b []byte) {
	t.Helper()
	want := splitResult(SplitObject(b))
	if got := splitResult(splitObject(b, vc, nil)); got != want {
		t.Errorf("%s: with the cache:\n%.400s\nwithout:\n%.400s", name, got, want)
	}
}

// TestValidCacheChangesNoAnswer: after a cache has kept the elements of every recorded
// request, splitting those requests, and copies of them cut short or with one byte
// changed anywhere (inside a kept element or not), gives what splitting without a cache
// gives: the same members, or the same error at the same offset.
func TestValidCacheChangesNoAnswer(t *testing.T) {
	vc := newValidCache(4 << 20)
	bodies := requestBodies(t)
	for _, b := range bodies {
		for range 2 { // kept from the second sighting on
			if _, err := splitObject(b, vc, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(vc.ring) == 0 {
		t.Fatal("the cache kept nothing from the recorded requests")
	}
	for name, b := range bodies {
		checkSame(t, vc, name, b)
		step := max(1, len(b)/120)
		for cut := 0; cut < len(b); cut += step {
			checkSame(t, vc, fmt.Sprintf("%s cut at %d", name, cut), b[:cut])
		}
		for at := 0; at < len(b); at += step {
			for _, c := range []byte{'"', '\\', 0x01, 0xff, '}', ']', ',', 'x'} {
				m := bytes.Clone(b)
				m[at] = c
				checkSame(t, vc, fmt.Sprintf("%s byte %d = %q", name, at, c), m)
			}
		}
	}
}

// TestValidCacheAnswersFromKeptValues: a kept value is recognised where it comes again,
// in another request and at another offset, and nowhere it is not whole.
func TestValidCacheAnswersFromKeptValues(t *testing.T) {
	vc := newValidCache(1 << 20)
	elem := []byte(`{"role":"system","content":"` + strings.Repeat("Be brief. ", 60) + `"}`)
	first := []byte(`{"messages":[` + string(elem) + `]}`)
	if _, fp, kept := vc.lookupEntry(first, 13); kept != nil || fp == 0 {
		t.Fatalf("lookup before anything was kept: kept=%v fp=%d", kept != nil, fp)
	}
	for n := range 2 {
		if _, err := splitObject(first, vc, wantMessages); err != nil {
			t.Fatal(err)
		}
		if kept := len(vc.ring); kept != n {
			t.Fatalf("after sighting %d the cache keeps %d values, want %d", n+1, kept, n)
		}
	}
	later := []byte(`{"model":"auto", "messages" : [ ` + string(elem) + ` ,{"role":"user","content":"hi"}]}`)
	at := bytes.Index(later, elem)
	if end, _, kept := vc.lookupEntry(later, at); kept == nil || end != at+len(elem) {
		t.Errorf("lookup of the kept element = %d, kept=%v; want %d, kept", end, kept != nil, at+len(elem))
	}
	cut := later[:at+len(elem)-1]
	if _, _, kept := vc.lookupEntry(cut, at); kept != nil {
		t.Error("a value cut short was taken for the kept one")
	}
	checkSame(t, vc, "later", later)
	checkSame(t, vc, "cut", cut)
}

// TestValidCacheKeepsArraysWhole: an array member whose elements are not wanted (tools)
// is kept whole and recognised in one lookup where it comes again; the same array with a
// tool more, or cut short, is not taken for it, and its elements are still found one by
// one.
func TestValidCacheKeepsArraysWhole(t *testing.T) {
	vc := newValidCache(1 << 20)
	tool := func(name string) string {
		return `{"type":"function","function":{"name":"` + name + `","description":"` + strings.Repeat("Reads a file. ", 20) + `","parameters":{"type":"object"}}}`
	}
	tools := `[` + tool("read_file") + `,` + tool("write_file") + `]`
	body := func(tools string) []byte {
		return []byte(`{"model":"auto","messages":[{"role":"user","content":"hi"}],"tools":` + tools + `}`)
	}
	for range 2 {
		if _, err := splitObject(body(tools), vc, wantMessages); err != nil {
			t.Fatal(err)
		}
	}
	again := []byte(`{"tools" : ` + tools + `, "model":"auto","messages":[{"role":"user","content":"hi"}]}`)
	at := bytes.IndexByte(again, '[')
	if end, _, kept := vc.lookupEntry(again, at); kept == nil || end != at+len(tools) {
		t.Errorf("lookup of the kept tools = %d, kept=%v; want %d, kept", end, kept != nil, at+len(tools))
	}
	more := tools[:len(tools)-1] + `,` + tool("list_files") + `]`
	b := body(more)
	at = bytes.LastIndex(b, []byte(`"tools":`)) + len(`"tools":`)
	if end, _, kept := vc.lookupEntry(b, at); kept != nil {
		t.Errorf("the tools with one more were taken for the kept ones (end %d)", end)
	}
	if end, _, kept := vc.lookupEntry(b, at+1); kept == nil || end != at+1+len(tool("read_file")) {
		t.Errorf("the first tool of a changed array was not found on its own: end %d, kept=%v", end, kept != nil)
	}
	checkSame(t, vc, "again", again)
	checkSame(t, vc, "one tool more", b)
	checkSame(t, vc, "cut short", body(tools[:len(tools)-1]))
}

// TestValidCacheStaysWithinItsSize: many distinct values never make the cache hold more
// than its size, and values used since the hand last passed outlive the others.
func TestValidCacheStaysWithinItsSize(t *testing.T) {
	vc := newValidCache(16 << 10)
	hot := []byte(`{"messages":[{"content":"` + strings.Repeat("hot ", 100) + `"}]}`)
	for i := range 200 {
		body := []byte(fmt.Sprintf(`{"messages":[{"content":"%d %s"}]}`, i, strings.Repeat("cold ", 100)))
		for range 2 {
			if _, err := splitObject(body, vc, wantMessages); err != nil {
				t.Fatal(err)
			}
			if _, err := splitObject(hot, vc, wantMessages); err != nil {
				t.Fatal(err)
			}
		}
		if vc.bytes > vc.maxBytes {
			t.Fatalf("after %d values the cache holds %d bytes, more than its %d", i+1, vc.bytes, vc.maxBytes)
		}
		total := 0
		for _, e := range vc.ring {
			total += len(e.val)
		}
		if total != vc.bytes {
			t.Fatalf("the cache counts %d bytes but holds %d", vc.bytes, total)
		}
	}
	if _, _, kept := vc.lookupEntry(hot, 13); kept == nil {
		t.Error("the value used on every round was evicted")
	}
}

// TestValidCacheConcurrent parses the same requests from many goroutines at once (run
// with -race): every answer is right.
func TestValidCacheConcurrent(t *testing.T) {
	vc := newValidCache(64 << 10)
	var bodies [][]byte
	for _, b := range requestBodies(t) {
		bodies = append(bodies, b)
	}
	want := make([]string, len(bodies))
	for i, b := range bodies {
		want[i] = splitResult(SplitObject(b))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 40 {
				i := (g + k) % len(bodies)
				if got := splitResult(splitObject(bodies[i], vc, nil)); got != want[i] {
					t.Errorf("goroutine %d, body %d: answer differs", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzValidCache: whatever a cache kept from one text, splitting another with it gives
// what splitting without a cache gives.
func FuzzValidCache(f *testing.F) {
	for _, b := range requestBodies(f) {
		f.Add(b, b)
		f.Add(b, bytes.Replace(b, []byte(`"content"`), []byte(`"content" `), 1))
	}
	elem := `{"role":"user","content":"` + strings.Repeat("a", 300) + `"}`
	f.Add([]byte(`{"messages":[`+elem+`]}`), []byte(`{"messages":[`+elem[:len(elem)-2]+`]}`))
	f.Add([]byte(`{"messages":[`+elem+`]}`), []byte(`{"tools":[`+elem+`,1],"x":[`+elem+`}`))
	f.Fuzz(func(t *testing.T, seen, b []byte) {
		vc := newValidCache(1 << 20)
		for range 2 {
			_, _ = splitObject(seen, vc, nil)
		}
		checkSame(t, vc, "fuzzed", b)
	})
}

// BenchmarkValidCacheMiss is what an element seen for the first time costs on top of its
// scan: the fingerprint, the lookup and noting the sighting.
func BenchmarkValidCacheMiss(b *testing.B) {
	vc := newValidCache(4 << 20)
	vals := make([][]byte, 1<<16)
	for i := range vals {
		vals[i] = []byte(fmt.Sprintf(`{"role":"user","content":"%08d %0300d"}`, i, i))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		v := vals[i%len(vals)]
		i++
		if _, fp, kept := vc.lookupEntry(v, 0); kept == nil {
			vc.note(v, fp)
		}
	}
}
