package contextmgr

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRememberedHashesChangeNothing: a writer that remembers turn hashes by the messages'
// bytes from one save to the next stores exactly what a writer that forgets them before
// every save stores, over a conversation that grows (text parts, a tool call and its
// result, escapes) and after the conversation was deleted between two saves: its turns,
// remembered but no longer stored, are made again from the messages and saved again.
func TestRememberedHashesChangeNothing(t *testing.T) {
	ctx := context.Background()
	u1 := `{"role":"user","content":[{"type":"text","text":"<task>fix the bug in a.go</task>"}]}`
	call := `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"a.go\"}"}}]}`
	result := `{"role":"tool","tool_call_id":"c1","content":"package a\n\n// \"quoted\" \u00e9"}`
	fixed := `{"role":"assistant","content":"fixed"}`
	u2 := `{"role":"user","content":"thanks"}`
	meta := Meta{RequestID: "r", Role: "code", Profile: "p"}
	jobs := []job{
		{conv: "c", msgs: rawMessages(u1), answer: ans("reading a.go"), meta: meta},
		{conv: "c", msgs: rawMessages(u1, call, result), answer: ans("fixed"), meta: meta},
		{conv: "c", msgs: rawMessages(u1, call, result, fixed, u2), answer: ans("bye"), meta: meta},
	}
	for _, deleteBeforeLast := range []bool{false, true} {
		memSt, memDB := openStore(t)
		freshSt, freshDB := openStore(t)
		mem, fresh := testWriter(memSt), testWriter(freshSt)
		for i, j := range jobs {
			if deleteBeforeLast && i == len(jobs)-1 {
				for _, st := range []*SQLiteStore{memSt, freshSt} {
					if _, err := st.Delete(ctx, "c"); err != nil {
						t.Fatal(err)
					}
				}
			}
			if !mem.saveBatch([]job{j}) {
				t.Fatal("save failed")
			}
			fresh.rawHashes = nil
			if !fresh.saveBatch([]job{j}) {
				t.Fatal("save failed")
			}
		}
		if len(mem.rawHashes) < 4 {
			t.Fatalf("the writer remembered %d messages, want the conversation's", len(mem.rawHashes))
		}
		want, got := readState(t, freshDB), readState(t, memDB)
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("deleted=%v: stored differently with remembered hashes (-forgotten +remembered):\n%s", deleteBeforeLast, d)
		}
		if deleteBeforeLast {
			var contents []string
			for _, r := range got.Messages {
				contents = append(contents, r.Role+":"+r.Content)
			}
			all := strings.Join(contents, "|")
			for _, s := range []string{"user:<task>fix the bug in a.go</task>", `tool:package a`, "assistant:fixed", "user:thanks", "assistant:bye"} {
				if !strings.Contains(all, s) {
					t.Errorf("after the deletion the last save did not store %q again: %s", s, all)
				}
			}
		}
	}
}

// Messages the validation cache keeps (long ones, seen before) carry their turn hash as a
// memo, which the writer reads instead of its own memory; a conversation growing turn by
// turn, each request parsed from its full body as the handler does and detached as Finish
// does, is stored exactly once per turn, and again in full after a deletion.
func TestTurnHashMemosStoreEachTurnOnce(t *testing.T) {
	ctx := context.Background()
	long := func(s string) string {
		b, _ := json.Marshal(s + strings.Repeat(" (details follow)", 20) + fmt.Sprint(time.Now().UnixNano()))
		return string(b)
	}
	u1 := `{"role":"user","content":[{"type":"text","text":` + long("<task>fix the bug in a.go</task>") + `}]}`
	call := `{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"a.go\"}"}}]}`
	result := `{"role":"tool","tool_call_id":"c1","content":` + long("package a") + `}`
	fixed := `{"role":"assistant","content":` + long("fixed it") + `}`
	u2 := `{"role":"user","content":"thanks"}`
	turns := [][]string{{u1}, {u1, call, result}, {u1, call, result, fixed, u2}, {u1, call, result, fixed, u2}}
	answers := []string{"reading a.go", "fixed it", "bye", "bye again"}
	st, _ := openStore(t)
	w := testWriter(st)
	for round := range 2 { // the second round after a deletion: everything is new again
		for i, msgs := range turns {
			detached := rawMessages(msgs...)
			for k := range detached {
				detached[k] = detached[k].Detach()
			}
			if !w.saveBatch([]job{{conv: "c", msgs: detached, answer: ans(answers[i]), meta: Meta{RequestID: "r", Role: "code", Profile: "p"}}}) {
				t.Fatal("save failed")
			}
		}
		got, err := st.History(ctx, "c", 0)
		if err != nil {
			t.Fatal(err)
		}
		var roles []string
		for _, tn := range got {
			roles = append(roles, tn.Role+":"+strings.SplitN(tn.Content, " (details", 2)[0])
		}
		want := []string{"user:<task>fix the bug in a.go</task>", "assistant:reading a.go", "assistant:", "tool:package a",
			"assistant:fixed it", "assistant:fixed it", "user:thanks", "assistant:bye", "assistant:bye again"}
		if d := cmp.Diff(want, roles); d != "" {
			t.Errorf("round %d: stored turns (-want +got):\n%s", round, d)
		}
		if _, err := st.Delete(ctx, "c"); err != nil {
			t.Fatal(err)
		}
	}
}
