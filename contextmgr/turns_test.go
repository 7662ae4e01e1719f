package contextmgr

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// lastMessage returns the last message of body, as Prepare hands back the client's
// original when the optimizer rewrote it.
func lastMessage(t *testing.T, body string) *backends.Message {
	t.Helper()
	req := parse(t, body)
	m := req.Messages[len(req.Messages)-1]
	return &m
}

// wantStored compares the stored conversation with want.
func wantStored(t *testing.T, st Store, conv string, want []rc) {
	t.Helper()
	got, err := st.History(context.Background(), conv, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, turnsRC(got)); diff != "" {
		t.Errorf("stored conversation (-want +got):\n%s", diff)
	}
}

// With the prompt optimizer on, the request goes upstream with the rewritten words but
// the store keeps the client's own, which the client sends back next turn: three turns
// store exactly the three exchanges, nothing twice.
func TestRewrittenTurnStoredAsSent(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	sys := "You are Roo."
	u1, u1rw := "fix the bug", "Fix the nil-pointer bug in ListOrders (src/orders/service.go)."
	u2, u2rw := "add a test", "Add a table-driven test for ListOrders covering an empty result."
	u3 := "thanks"
	conv := ConversationID(parse(t, body("system", sys, "user", u1)), "")
	in := func(id, sent string) Input {
		return Input{RequestID: id, ConversationID: conv, Role: roles.Implementation, Original: lastMessage(t, sent)}
	}

	sent1 := body("system", sys, "user", u1)
	turn(t, m, parse(t, body("system", sys, "user", u1rw)), in("r1", sent1), streamChunks("Done A."))
	sync_(t, m)
	sent2 := body("system", sys, "user", u1, "assistant", "Done A.", "user", u2)
	turn(t, m, parse(t, body("system", sys, "user", u1, "assistant", "Done A.", "user", u2rw)), in("r2", sent2), streamChunks("Done B."))
	sync_(t, m)
	sent3 := body("system", sys, "user", u1, "assistant", "Done A.", "user", u2, "assistant", "Done B.", "user", u3)
	turn(t, m, parse(t, sent3), Input{RequestID: "r3", ConversationID: conv, Role: roles.Implementation}, streamChunks("Welcome."))
	sync_(t, m)

	wantStored(t, st, conv, []rc{{"user", u1}, {"assistant", "Done A."}, {"user", u2}, {"assistant", "Done B."}, {"user", u3}, {"assistant", "Welcome."}})
}

// A turn the store already holds is skipped wherever it is in the request: one stored
// turn that differs from what the client resends (here a rewrite stored by an older
// version) no longer makes every later turn a duplicate, and a repeated short answer
// ("yes") after the last stored turn is still saved.
func TestSaveSkipsEveryStoredTurn(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	conv := "c-legacy"
	in := func(id string) Input { return Input{RequestID: id, ConversationID: conv, Role: roles.General} }
	turn(t, m, parse(t, body("user", "Fix the nil-pointer bug in ListOrders.")), in("r1"), streamChunks("Done A."))
	sync_(t, m)
	turn(t, m, parse(t, body("user", "fix the bug", "assistant", "Done A.", "user", "shall I add a test? yes")), in("r2"), streamChunks("Should I run it?"))
	sync_(t, m)
	turn(t, m, parse(t, body("user", "fix the bug", "assistant", "Done A.", "user", "shall I add a test? yes", "assistant", "Should I run it?", "user", "yes")), in("r3"), streamChunks("Passed."))
	sync_(t, m)
	turn(t, m, parse(t, body("user", "fix the bug", "assistant", "Done A.", "user", "shall I add a test? yes", "assistant", "Should I run it?",
		"user", "yes", "assistant", "Passed.", "user", "yes")), in("r4"), streamChunks("Committed."))
	sync_(t, m)

	wantStored(t, st, conv, []rc{
		{"user", "Fix the nil-pointer bug in ListOrders."}, {"assistant", "Done A."},
		{"user", "fix the bug"}, {"user", "shall I add a test? yes"}, {"assistant", "Should I run it?"},
		{"user", "yes"}, {"assistant", "Passed."}, {"user", "yes"}, {"assistant", "Committed."},
	})
}

// Helper requests (Roo Code's enhance prompt, a commit message) are one-shots that are
// not the task: they get no past interactions and are not saved, so they never come back
// as "similar" either.
func TestHelperRequestNotEnrichedNorSaved(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	u := "Generate an enhanced version of this prompt (reply with only the enhanced prompt - no conversation, explanations, lead-in, bullet points, placeholders, or surrounding quotes):\n\nadd limit offset pagination to ListOrders in the orders service"
	// An earlier enhance-prompt exchange, saved as a conversation before the fix.
	seed(t, m, "earlier-helper", u, "Add limit and offset parameters to ListOrders and pass them to the repository query.")
	sync_(t, m)
	for _, helper := range []bool{false, true} {
		req := parse(t, body("user", u))
		conv := ConversationID(req, "")
		_, res := turn(t, m, req, Input{RequestID: "h", ConversationID: conv, Role: roles.General, Helper: helper}, streamChunks("Add limit/offset pagination..."))
		sync_(t, m)
		saved, _ := st.History(context.Background(), conv, 0)
		switch {
		case helper && (res.SimilarItems > 0 || len(saved) > 0 || len(req.Messages) != 1):
			t.Errorf("helper request enriched (%d items) or saved (%d turns)", res.SimilarItems, len(saved))
		case !helper && (res.SimilarItems == 0 || len(saved) == 0):
			// Without the flag the same request is enriched and saved: the flag decides.
			t.Errorf("task request: %d similar items, %d saved turns; want both", res.SimilarItems, len(saved))
		}
		if !helper {
			if err := m.DeleteConversation(context.Background(), conv); err != nil {
				t.Fatal(err)
			}
		}
	}
}
