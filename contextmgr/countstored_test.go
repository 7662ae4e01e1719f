package contextmgr

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The embedded store counts stored turns through its index exactly as counting its whole
// history would, repeats included, and across the query's chunks.
func TestCountStoredAgreesWithHistory(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	var turns []Turn
	for i := range 450 { // more than one chunk of hashes
		turns = append(turns, Turn{Role: "user", Content: "yes"}, Turn{Role: "assistant", Content: string(rune('a' + i%26))})
	}
	if err := st.Append(ctx, "c1", turns, Meta{}); err != nil {
		t.Fatal(err)
	}
	if err := st.Append(ctx, "c2", []Turn{{Role: "user", Content: "other conversation"}}, Meta{}); err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for _, tt := range append(turns, Turn{Role: "user", Content: "never stored"}, Turn{Role: "user", Content: "other conversation"}) {
		hashes = append(hashes, tt.hash())
	}
	got, err := st.CountStored(ctx, "c1", hashes)
	if err != nil {
		t.Fatal(err)
	}
	want, err := countFromHistory(ctx, st, "c1", hashes)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("CountStored differs from counting the history (-history +index):\n%s", d)
	}
	if got[Turn{Role: "user", Content: "yes"}.hash()] != 450 {
		t.Errorf("repeated turn counted %d times, want 450", got[Turn{Role: "user", Content: "yes"}.hash()])
	}
}

// CountStored pads its IN list to a power of two by repeating a hash: every list length
// counts exactly what counting the history does.
func TestCountStoredPaddedWidths(t *testing.T) {
	st, _ := openStore(t)
	ctx := context.Background()
	var turns []Turn
	for i := range 300 {
		turns = append(turns, Turn{Role: "user", Content: string(rune('a' + i%7))}, Turn{Role: "assistant", Content: "ok"})
	}
	if err := st.Append(ctx, "c", turns, Meta{}); err != nil {
		t.Fatal(err)
	}
	var all []string
	for i := range 300 {
		all = append(all, Turn{Role: "user", Content: string(rune('a' + i%9))}.hash())
	}
	all[1] = Turn{Role: "assistant", Content: "ok"}.hash()
	for _, n := range []int{1, 2, 3, 5, 8, 9, 100, 255, 256, 257, 300} {
		got, err := st.CountStored(ctx, "c", all[:n])
		if err != nil {
			t.Fatal(err)
		}
		want, err := countFromHistory(ctx, st, "c", all[:n])
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("%d hashes: CountStored differs from the history (-history +index):\n%s", n, d)
		}
	}
}
