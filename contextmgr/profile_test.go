package contextmgr

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// similarConvs returns the conversations Enrich would draw similar interactions from for
// a request under profile.
func similarConvs(t *testing.T, st Store, profile string) []string {
	t.Helper()
	got, err := st.Similar(context.Background(), "limit offset pagination for ListOrders in the orders service", "new", profile, 5)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range got {
		out = append(out, it.ConversationID)
	}
	return out
}

// A request gets similar past interactions only from its own profile's conversations: a
// personal request never carries a work conversation to a backend the work profile
// excludes, and a conversation continued under the other profile belongs to neither.
func TestSimilarScopedByProfile(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	q := "How do I add limit offset pagination to ListOrders in the orders service?"
	for _, c := range []struct{ conv, profile string }{{"work-1", "work"}, {"personal-1", "personal"}, {"switched", "work"}} {
		turn(t, m, parse(t, body("user", q)), Input{RequestID: "s", ConversationID: c.conv, Role: roles.General, Profile: c.profile},
			streamChunks("Add limit and offset parameters to ListOrders ("+c.conv+")."))
	}
	sync_(t, m)
	turn(t, m, parse(t, body("user", q, "assistant", "Add limit and offset parameters to ListOrders (switched).", "user", "and sorting?")),
		Input{RequestID: "s2", ConversationID: "switched", Role: roles.General, Profile: "personal"}, streamChunks("Add an order_by parameter."))
	sync_(t, m)

	for _, tc := range []struct {
		profile string
		want    []string
	}{
		{"personal", []string{"personal-1"}},
		{"work", []string{"work-1"}},
	} {
		if diff := cmp.Diff(tc.want, similarConvs(t, st, tc.profile)); diff != "" {
			t.Errorf("%s request: similar conversations (-want +got):\n%s", tc.profile, diff)
		}
	}

	// End to end: the personal request's added block quotes no work conversation.
	req := parse(t, body("system", "S.", "user", "limit offset pagination for ListOrders in the orders service"))
	_, res := turn(t, m, req, Input{RequestID: "p", ConversationID: "new", Role: roles.General, Profile: "personal"}, nil)
	if sys := req.Messages[0].Text(0); res.SimilarItems != 1 || !strings.Contains(sys, "(personal-1)") || strings.Contains(sys, "(work-1)") || strings.Contains(sys, "(switched)") {
		t.Errorf("personal request got %d items:\n%s", res.SimilarItems, sys)
	}
}

// A database from before profiles were stored: its conversations take the profile of
// their latest usage row when the proxy upgrades it; one without usage is offered to no
// profile.
func TestProfileMigrationBackfill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.db")
	db, err := storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	m := New(testConfig(), NewSQLiteStore(db, nil), nil)
	q := "How do I add limit offset pagination to ListOrders in the orders service?"
	for _, conv := range []string{"was-work", "was-personal", "no-usage"} {
		tr := m.Track(parse(t, body("user", q)), Input{RequestID: "r", ConversationID: conv, Role: roles.General})
		for _, c := range streamChunks("Add limit and offset parameters to ListOrders.") {
			tr.Chunk(c)
		}
		tr.Finish(true)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Back to the schema before the profile column, with the usage rows of that time.
	for _, stmt := range []string{
		`ALTER TABLE conversations DROP COLUMN profile`,
		`DELETE FROM schema_migrations WHERE version >= 3`,
		`INSERT INTO usage (created_at, request_id, conversation_id, profile) VALUES
			('2026-11-01T00:00:00Z', 'a', 'was-work', 'personal'), ('2026-11-02T00:00:00Z', 'b', 'was-work', 'work'),
			('2026-11-02T00:00:00Z', 'c', 'was-personal', 'personal')`,
	} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	db.Close()

	db, err = storage.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := NewSQLiteStore(db, nil)
	st.MinScore = config.Default().Context.MinScore
	if diff := cmp.Diff([]string{"was-personal"}, similarConvs(t, st, "personal")); diff != "" {
		t.Errorf("personal after upgrade (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"was-work"}, similarConvs(t, st, "work")); diff != "" {
		t.Errorf("work after upgrade (-want +got):\n%s", diff)
	}
}

// The MCP store saves the profile in the conversation's metadata and drops search results
// the server reports under another profile (as its own member or in metadata).
func TestMCPScopedByProfile(t *testing.T) {
	f := &fakeServer{}
	st := NewMCPStore(f, config.Default().Context.MCPStore)
	if err := st.Append(context.Background(), "c", []Turn{{Role: "user", Content: "x"}}, Meta{RequestID: "r", Profile: "work"}); err != nil {
		t.Fatal(err)
	}
	if md, _ := f.args["metadata"].(map[string]any); md["profile"] != "work" {
		t.Errorf("save_conversation metadata %v lacks the profile", f.args["metadata"])
	}
	f.res = &mcp.Result{Texts: []string{`[` +
		`{"conversation_id":"w","role":"user","content":"invoices at work","similarity_score":0.9,"profile":"work"},` +
		`{"conversation_id":"w2","role":"user","content":"invoices at work","similarity_score":0.9,"metadata":{"profile":"work","source":"nanogpt-proxy"}},` +
		`{"conversation_id":"p","role":"user","content":"invoices at home","similarity_score":0.8,"metadata":{"profile":"personal"}},` +
		`{"conversation_id":"u","role":"user","content":"invoices somewhere","similarity_score":0.75,"metadata":"free text"}]`}}
	got, err := st.Similar(context.Background(), "invoices", "me", "personal", 5)
	if err != nil {
		t.Fatal(err)
	}
	var convs []string
	for _, it := range got {
		convs = append(convs, it.ConversationID)
	}
	if diff := cmp.Diff([]string{"p", "u"}, convs); diff != "" {
		t.Errorf("personal search (-want +got):\n%s", diff)
	}
}
