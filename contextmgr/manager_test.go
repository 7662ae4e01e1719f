package contextmgr

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

func testConfig() config.Context {
	c := config.Default().Context
	c.LoadTimeout = 5 * time.Second // local store; the deadline has its own test
	c.EmbeddedLoadTimeout = 0       // the same for the embedded store
	return c
}

func openStore(t testing.TB) (*SQLiteStore, *storage.DB) {
	t.Helper()
	db, err := storage.Open(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st := NewSQLiteStore(db, nil)
	st.MinScore = config.Default().Context.MinScore
	return st, db
}

func newTestManager(t *testing.T, cfg config.Context, st Store) *Manager {
	t.Helper()
	m := New(cfg, st, nil)
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

func parse(t testing.TB, body string) *backends.ChatRequest {
	t.Helper()
	req, err := backends.ParseChatRequest([]byte(body))
	if err != nil {
		t.Fatalf("parse %s: %v", body, err)
	}
	return req
}

// msgs builds a request body from role/content pairs.
func body(pairs ...string) string {
	var ms []string
	for i := 0; i+1 < len(pairs); i += 2 {
		c, _ := json.Marshal(pairs[i+1])
		ms = append(ms, fmt.Sprintf(`{"role":%q,"content":%s}`, pairs[i], c))
	}
	return `{"model":"auto","stream":true,"messages":[` + strings.Join(ms, ",") + `]}`
}

// streamChunks are the data payloads of a streamed answer, split in small deltas.
func streamChunks(answer string) [][]byte {
	out := [][]byte{[]byte(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}`)}
	for len(answer) > 0 {
		n := min(7, len(answer))
		c, _ := json.Marshal(answer[:n])
		out = append(out, []byte(`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":`+string(c)+`}}]}`))
		answer = answer[n:]
	}
	out = append(out, []byte(`{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`), []byte(`[DONE]`))
	return out
}

// turn runs one exchange through the manager the way the handler does: Track, Enrich,
// the streamed answer, Finish. It returns the enriched request.
func turn(t *testing.T, m *Manager, req *backends.ChatRequest, in Input, chunks [][]byte) (*backends.ChatRequest, Result) {
	t.Helper()
	tr := m.Track(req, in)
	res := m.Enrich(context.Background(), req, in)
	if tr != nil {
		for _, c := range chunks {
			buf := append([]byte(nil), c...)
			tr.Chunk(buf)
			for i := range buf { // the handler's buffer is reused after the call
				buf[i] = 'x'
			}
		}
		tr.Finish(true)
	}
	return req, res
}

func sync_(t *testing.T, m *Manager) {
	t.Helper()
	if err := m.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type rc struct{ Role, Content string }

func roleContents(ms []backends.Message) []rc {
	out := make([]rc, 0, len(ms))
	for i := range ms {
		out = append(out, rc{ms[i].Role, ms[i].Text(0)})
	}
	return out
}

func turnsRC(ts []Turn) []rc {
	out := make([]rc, 0, len(ts))
	for _, t := range ts {
		out = append(out, rc{t.Role, t.Content})
	}
	return out
}

// checkStored fails t unless the store holds conv as want, and returns what it holds.
func checkStored(t *testing.T, st Store, conv string, want []rc) []Turn {
	t.Helper()
	got, err := st.History(context.Background(), conv, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want, turnsRC(got)); d != "" {
		t.Errorf("stored conversation %s (-want +got):\n%s", conv, d)
	}
	return got
}

func TestThinClientGetsHistory(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	in := Input{RequestID: "r1", ConversationID: "conv-thin", Role: roles.General}

	turn(t, m, parse(t, body("system", "You are terse.", "user", "My cat is called Miso.")), in, streamChunks("Nice name for a cat."))
	sync_(t, m)

	req, res := turn(t, m, parse(t, body("system", "You are terse.", "user", "What is my cat called?")), in, streamChunks("Miso."))
	want := []rc{
		{"system", "You are terse."},
		{"user", "My cat is called Miso."},
		{"assistant", "Nice name for a cat."},
		{"user", "What is my cat called?"},
	}
	if diff := cmp.Diff(want, roleContents(req.Messages)); diff != "" {
		t.Errorf("request sent upstream (-want +got):\n%s", diff)
	}
	if res.HistoryMessages != 2 || res.Err != nil {
		t.Errorf("result = %+v, want 2 history messages and no error", res)
	}
	// The prepended turns are plain messages upstream.
	up := string(req.UpstreamBody("m"))
	if !strings.Contains(up, `{"role":"assistant","content":"Nice name for a cat."}`) {
		t.Errorf("upstream body lacks the history turn: %s", up)
	}

	sync_(t, m)
	got, err := st.History(context.Background(), "conv-thin", 0)
	if err != nil {
		t.Fatal(err)
	}
	wantStored := []rc{
		{"user", "My cat is called Miso."}, {"assistant", "Nice name for a cat."},
		{"user", "What is my cat called?"}, {"assistant", "Miso."},
	}
	if diff := cmp.Diff(wantStored, turnsRC(got)); diff != "" {
		t.Errorf("stored conversation (-want +got):\n%s", diff)
	}
}

// A thin client that names its conversation says the same words again ("yes"): that is
// its next turn. It goes upstream after the whole conversation, and the store keeps it
// again. A request whose key is derived from its first messages starts its conversation
// instead: sent again, it gets no history, and the store keeps its turn once.
func TestThinClientRepeatsItself(t *testing.T) {
	st, _ := openStore(t)
	cfg := testConfig()
	cfg.SimilarLimit = 0 // only the conversation's own history
	m := newTestManager(t, cfg, st)
	sys := "You are terse."

	named := Input{RequestID: "r", ConversationID: "conv-yes", Role: roles.General}
	var stored []rc
	for i, u := range []string{"yes", "tell me more", "yes", "yes"} {
		a := fmt.Sprintf("answer %d", i)
		req, res := turn(t, m, parse(t, body("system", sys, "user", u)), named, streamChunks(a))
		sent := append(append([]rc{{"system", sys}}, stored...), rc{"user", u})
		if d := cmp.Diff(sent, roleContents(req.Messages)); d != "" || res.HistoryMessages != len(stored) {
			t.Errorf("named conversation, turn %d: %d history messages, sent upstream (-want +got):\n%s", i, res.HistoryMessages, d)
		}
		stored = append(stored, rc{"user", u}, rc{"assistant", a})
		sync_(t, m)
	}
	checkStored(t, st, "conv-yes", stored)

	first := body("system", sys, "user", "yes")
	derived := Input{RequestID: "r", ConversationID: ConversationID(parse(t, first), ""), Role: roles.General, DerivedConversation: true}
	want := []rc{{"user", "yes"}}
	for i := range 3 {
		a := fmt.Sprintf("derived answer %d", i)
		req, res := turn(t, m, parse(t, first), derived, streamChunks(a))
		if d := cmp.Diff([]rc{{"system", sys}, {"user", "yes"}}, roleContents(req.Messages)); d != "" || res.HistoryMessages != 0 {
			t.Errorf("derived conversation, turn %d: %d history messages, sent upstream (-want +got):\n%s", i, res.HistoryMessages, d)
		}
		want = append(want, rc{"assistant", a})
		sync_(t, m)
	}
	checkStored(t, st, derived.ConversationID, want)
}

func toolCallChunks() [][]byte {
	return [][]byte{
		[]byte(`{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"read_file","arguments":""}}]}}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"path\":"}}]}}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"src/orders/service.go\"}"}}]}}]}`),
		[]byte(`{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}`),
		[]byte(`[DONE]`),
	}
}

// A full-history client (Roo Code, Cline) resends the whole conversation every turn: it
// never gets history prepended, and the store keeps every message once.
func TestFullHistoryClientNoDuplication(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	sys := "You are Roo, a highly skilled software engineer."
	u1 := "Add pagination (limit/offset) to ListOrders in src/orders/service.go."
	first := parse(t, body("system", sys, "user", u1))
	conv := ConversationID(first, "")
	in := Input{RequestID: "r1", ConversationID: conv, Role: roles.Implementation, DerivedConversation: true}
	turn(t, m, first, in, toolCallChunks())
	sync_(t, m)

	assistantTC := `{"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function","function":{"name":"read_file","arguments":"{\"path\":\"src/orders/service.go\"}"}}]}`
	toolRes := `{"role":"tool","tool_call_id":"call_1","content":"package orders\n\nfunc (s *Service) ListOrders() {}\n"}`
	second := `{"model":"auto","stream":true,"messages":[{"role":"system","content":` + q(sys) + `},{"role":"user","content":` + q(u1) + `},` + assistantTC + `,` + toolRes + `]}`
	req2 := parse(t, second)
	if got := ConversationID(req2, ""); got != conv {
		t.Fatalf("conversation id changed between turns: %s vs %s", got, conv)
	}
	before := string(req2.UpstreamBody("m"))
	_, res := turn(t, m, req2, Input{RequestID: "r2", ConversationID: conv, Role: roles.Implementation, DerivedConversation: true}, streamChunks("I will add limit and offset."))
	if after := string(req2.UpstreamBody("m")); after != before || res.HistoryMessages != 0 {
		t.Errorf("a tool-result turn of a full-history client was changed:\nbefore %s\nafter  %s", before, after)
	}
	sync_(t, m)

	third := `{"model":"auto","stream":true,"messages":[{"role":"system","content":` + q(sys) + `},{"role":"user","content":` + q(u1) + `},` + assistantTC + `,` + toolRes +
		`,{"role":"assistant","content":"I will add limit and offset."},{"role":"user","content":"Also update the tests."}]}`
	req3 := parse(t, third)
	_, res = turn(t, m, req3, Input{RequestID: "r3", ConversationID: conv, Role: roles.Implementation, DerivedConversation: true}, streamChunks("Done."))
	if res.HistoryMessages != 0 {
		t.Errorf("full-history client got %d history messages", res.HistoryMessages)
	}
	if n := len(req3.Messages); n != 6 {
		t.Errorf("request has %d messages after enrichment, want the client's 6", n)
	}
	sync_(t, m)

	got := checkStored(t, st, conv, []rc{
		{"user", u1}, {"assistant", ""}, {"tool", "package orders\n\nfunc (s *Service) ListOrders() {}\n"},
		{"assistant", "I will add limit and offset."}, {"user", "Also update the tests."}, {"assistant", "Done."},
	})
	// The first turn sent again (a retry, a restarted task) starts the conversation its key
	// is derived from: it gets no history, which would repeat its own question.
	retry := parse(t, body("system", sys, "user", u1))
	if res := m.Enrich(context.Background(), retry, in); res.HistoryMessages != 0 || len(retry.Messages) != 2 {
		t.Errorf("retried first turn got history: %v", roleContents(retry.Messages))
	}
	var calls []struct {
		ID       string `json:"id"`
		Function struct{ Name, Arguments string }
	}
	if err := json.Unmarshal(got[1].ToolCalls, &calls); err != nil || len(calls) != 1 ||
		calls[0].ID != "call_1" || calls[0].Function.Name != "read_file" || calls[0].Function.Arguments != `{"path":"src/orders/service.go"}` {
		t.Errorf("streamed tool call stored as %s (err %v)", got[1].ToolCalls, err)
	}
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }

func seed(t *testing.T, m *Manager, conv, user, answer string) {
	t.Helper()
	turn(t, m, parse(t, body("user", user)), Input{RequestID: "seed-" + conv, ConversationID: conv, Role: roles.General}, streamChunks(answer))
}

func TestSimilarInteractionsRanked(t *testing.T) {
	st, _ := openStore(t)
	cfg := testConfig()
	m := newTestManager(t, cfg, st)
	seed(t, m, "orders-pagination", "How do I add limit offset pagination to ListOrders in the orders service?",
		"Add limit and offset parameters to ListOrders and pass them to the repository query.")
	seed(t, m, "users-pagination", "Add limit offset pagination to the users service listing",
		"Use cursor pagination for ListUsers.")
	seed(t, m, "k8s", "Why does my kubernetes ingress reject TLS certificates?",
		"Check the secret name in the ingress spec.")
	sync_(t, m)

	req := parse(t, body("system", "You are a helpful assistant.", "user", "limit/offset pagination for ListOrders in the orders service"))
	_, res := turn(t, m, req, Input{RequestID: "r", ConversationID: "new-conv", Role: roles.Implementation}, nil)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	sys := req.Messages[0].Text(0)
	if len(req.Messages) != 2 || req.Messages[0].Role != "system" || !strings.HasPrefix(sys, "You are a helpful assistant.\n\n<past_interactions>") {
		t.Fatalf("similar block not appended to the system message:\n%s", sys)
	}
	iOrders := strings.Index(sys, "ListOrders and pass them")
	iUsers := strings.Index(sys, "cursor pagination for ListUsers")
	if iOrders < 0 || iUsers < 0 || iOrders > iUsers {
		t.Errorf("want the orders conversation ranked above the users one:\n%s", sys)
	}
	if strings.Contains(sys, "kubernetes") {
		t.Errorf("unrelated conversation added:\n%s", sys)
	}
	if !strings.HasSuffix(sys, "</past_interactions>") || strings.Count(sys, "<past_interactions>") != 1 {
		t.Errorf("block is not one delimited block:\n%s", sys)
	}
	if res.SimilarItems != 2 {
		t.Errorf("SimilarItems = %d, want 2", res.SimilarItems)
	}
	// The conversation's own past is never "similar": it is excluded.
	got, err := st.Similar(context.Background(), "limit offset pagination ListOrders orders service", "orders-pagination", "", 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range got {
		if it.ConversationID == "orders-pagination" {
			t.Errorf("excluded conversation returned")
		}
	}

	// A stricter threshold keeps only the close match.
	st.MinScore = 0.8
	req = parse(t, body("user", "limit/offset pagination for ListOrders in the orders service"))
	_, res = turn(t, m, req, Input{RequestID: "r2", ConversationID: "newer-conv", Role: roles.Implementation}, nil)
	sys = req.Messages[0].Text(0)
	if req.Messages[0].Role != "system" || !strings.Contains(sys, "ListOrders and pass them") || strings.Contains(sys, "ListUsers") || res.SimilarItems != 1 {
		t.Errorf("with min_score 0.8 want only the orders conversation, got %d items:\n%s", res.SimilarItems, sys)
	}
}

func TestBudgetRespected(t *testing.T) {
	st, _ := openStore(t)
	m0 := newTestManager(t, testConfig(), st)
	long := strings.Repeat("pagination orders service limit offset details ", 10) // ~480 chars
	for i := range 12 {
		conv := "thin"
		turn(t, m0, parse(t, body("user", fmt.Sprintf("question %d about %s", i, long))), Input{ConversationID: conv, Role: roles.General},
			streamChunks(fmt.Sprintf("answer %d: %s", i, long)))
		seed(t, m0, fmt.Sprintf("other-%d", i), "pagination orders service "+long, "answer "+long)
	}
	sync_(t, m0)

	for _, tc := range []struct {
		name   string
		tokens int
	}{{"tiny", 40}, {"small", 300}, {"medium", 1200}, {"large", 4000}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.BudgetTokens = map[string]int{"general": tc.tokens}
			m := New(cfg, st, nil)
			defer m.Close(context.Background())
			req := parse(t, body("system", "S.", "user", "more about pagination orders service limit offset"))
			before := 0
			for i := range req.Messages {
				before += len(req.Messages[i].Text(0))
			}
			res := m.Enrich(context.Background(), req, Input{ConversationID: "thin", Role: roles.General})
			after := 0
			for i := range req.Messages {
				after += len(req.Messages[i].Text(0))
			}
			added := after - before
			if added > tc.tokens*4 {
				t.Errorf("added %d chars (%d history, %d similar), budget %d tokens = %d chars", added, res.HistoryMessages, res.SimilarItems, tc.tokens, tc.tokens*4)
			}
			if tc.tokens >= 1200 && (res.HistoryMessages == 0 || res.SimilarItems == 0) {
				t.Errorf("a %d-token budget should hold some history and similar items: %+v", tc.tokens, res)
			}
		})
	}

	// The default budget is a fraction of the model's window.
	m := New(testConfig(), st, nil)
	defer m.Close(context.Background())
	small := parse(t, body("user", "more about pagination orders service"))
	m.Enrich(context.Background(), small, Input{ConversationID: "thin", Role: roles.General, ContextWindow: 8000})
	added := 0
	for i := range small.Messages {
		added += len(small.Messages[i].Text(0))
	}
	if limit := int(0.05*8000)*4 + len("more about pagination orders service"); added > limit {
		t.Errorf("8k window: request grew to %d chars, limit %d", added, limit)
	}
}

func TestNothingAdded(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	seed(t, m, "c1", "Summarize the conversation about pagination of orders", "Pagination summary of orders.")
	seed(t, m, "thin", "pagination of orders please", "ok, pagination of orders")
	sync_(t, m)
	condense, err := os.ReadFile("../testdata/clients/roo-code-condense.json")
	if err != nil {
		t.Fatal(err)
	}
	onlyArch := testConfig()
	onlyArch.Roles = []string{"architect"}
	off := testConfig()
	off.Enrich = false
	for _, tc := range []struct {
		name string
		cfg  config.Context
		body string
		role roles.Role
	}{
		{"tool result turn", testConfig(), `{"model":"auto","messages":[{"role":"user","content":"pagination of orders"},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"pagination of orders"}]}`, roles.General},
		{"context condensing", testConfig(), string(condense), roles.General},
		{"role not enabled", onlyArch, body("user", "pagination of orders"), roles.General},
		{"enrichment off", off, body("user", "pagination of orders"), roles.General},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mm := New(tc.cfg, st, nil)
			defer mm.Close(context.Background())
			req := parse(t, tc.body)
			before := string(req.UpstreamBody("m"))
			res := mm.Enrich(context.Background(), req, Input{ConversationID: "thin", Role: tc.role, Condensing: IsCondensing(req)})
			if after := string(req.UpstreamBody("m")); after != before || res.HistoryMessages+res.SimilarItems != 0 {
				t.Errorf("request changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	// Condensing requests are not saved either.
	creq := parse(t, string(condense))
	if !IsCondensing(creq) {
		t.Fatalf("Roo Code's condensing request is not recognised")
	}
	if tr := m.Track(creq, Input{ConversationID: "x", Condensing: true}); tr != nil {
		t.Errorf("a condensing request is tracked for saving")
	}
}

func TestPrivacy(t *testing.T) {
	st, _ := openStore(t)
	noSave := testConfig()
	noSave.Save = false
	for _, tc := range []struct {
		name string
		cfg  config.Context
		in   Input
	}{
		{"X-Proxy-No-Store", testConfig(), Input{ConversationID: "p1", NoStore: true}},
		{"save switched off", noSave, Input{ConversationID: "p2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := New(tc.cfg, st, nil)
			turn(t, m, parse(t, body("user", "my secret plan")), tc.in, streamChunks("noted"))
			if err := m.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			got, err := st.History(context.Background(), tc.in.ConversationID, 0)
			if err != nil || len(got) != 0 {
				t.Errorf("stored %v (err %v), want nothing", got, err)
			}
		})
	}

	// Deletion removes the conversation from history and from search.
	m := newTestManager(t, testConfig(), st)
	seed(t, m, "to-delete", "zanzibar quokka migration plan", "the quokka plan")
	seed(t, m, "kept", "unrelated topic entirely", "fine")
	if err := m.DeleteConversation(context.Background(), "to-delete"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if got, _ := st.History(context.Background(), "to-delete", 0); len(got) != 0 {
		t.Errorf("history after delete: %v", got)
	}
	if got, _ := st.Similar(context.Background(), "zanzibar quokka migration", "", "", 5); len(got) != 0 {
		t.Errorf("search after delete found %v", got)
	}
	if err := m.DeleteConversation(context.Background(), "to-delete"); err != ErrNotFound {
		t.Errorf("second delete: %v, want ErrNotFound", err)
	}
	if got, _ := st.History(context.Background(), "kept", 0); len(got) != 2 {
		t.Errorf("other conversation damaged: %v", got)
	}
}

func TestConcurrentWrites(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	const workers, turns = 8, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := fmt.Sprintf("conv-%d", w)
			for i := range turns {
				req := parse(t, body("user", fmt.Sprintf("worker %d question %d", w, i)))
				in := Input{RequestID: fmt.Sprintf("%d-%d", w, i), ConversationID: conv, Role: roles.General}
				m.Enrich(context.Background(), req, in)
				tr := m.Track(req, in)
				for _, c := range streamChunks(fmt.Sprintf("worker %d answer %d", w, i)) {
					tr.Chunk(c)
				}
				tr.Finish(true)
			}
		}()
	}
	wg.Wait()
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := m.Stats()
	if s.Saved != workers*turns || s.Dropped != 0 || s.SaveFailures != 0 {
		t.Errorf("stats = %+v, want %d saved", s, workers*turns)
	}
	for w := range workers {
		got, err := st.History(context.Background(), fmt.Sprintf("conv-%d", w), 0)
		if err != nil {
			t.Fatal(err)
		}
		var want []rc
		for i := range turns {
			want = append(want, rc{"user", fmt.Sprintf("worker %d question %d", w, i)}, rc{"assistant", fmt.Sprintf("worker %d answer %d", w, i)})
		}
		if diff := cmp.Diff(want, turnsRC(got)); diff != "" {
			t.Errorf("conv-%d (-want +got):\n%s", w, diff)
		}
	}
}

// blockingStore never answers until released: it stands for a hung MCP server.
type blockingStore struct{ release chan struct{} }

func (b blockingStore) History(ctx context.Context, _ string, _ int) ([]Turn, error) {
	<-b.release
	return []Turn{{Role: "user", Content: "late"}}, nil
}
func (b blockingStore) Append(context.Context, string, []Turn, Meta) error { return nil }
func (b blockingStore) Similar(ctx context.Context, _, _, _ string, _ int) ([]Interaction, error) {
	<-b.release
	return nil, nil
}

func TestLoadDeadlineHolds(t *testing.T) {
	bs := blockingStore{release: make(chan struct{})}
	defer close(bs.release)
	cfg := testConfig()
	cfg.LoadTimeout = 50 * time.Millisecond
	m := New(cfg, bs, nil)
	req := parse(t, body("user", "hello there friend"))
	res := m.Enrich(context.Background(), req, Input{ConversationID: "c", Role: roles.General})
	// Enrich returned while the store is still blocked: the deadline held.
	if res.Err == nil || res.HistoryMessages != 0 || len(req.Messages) != 1 {
		t.Errorf("result %+v, messages %d: want a deadline error and an unchanged request", res, len(req.Messages))
	}
	if s := m.Stats(); s.LoadTimeouts == 0 || s.LoadFailures == 0 {
		t.Errorf("timeouts not counted: %+v", s)
	}
}

func TestBodyAnswerSaved(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	req := parse(t, `{"model":"auto","messages":[{"role":"user","content":[{"type":"text","text":"What's 2+2?"}]}]}`)
	in := Input{ConversationID: "json", Role: roles.General}
	m.Enrich(context.Background(), req, in)
	tr := m.Track(req, in)
	content, calls, _ := backends.AnswerChoice([]byte(`{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"4","tool_calls":[{"id":"call_9","type":"function","function":{"name":"calc","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}`))
	tr.Answer(content, calls)
	tr.Finish(true)
	sync_(t, m)
	got, _ := st.History(context.Background(), "json", 0)
	if diff := cmp.Diff([]rc{{"user", "What's 2+2?"}, {"assistant", "4"}}, turnsRC(got)); diff != "" || len(got) < 2 || !strings.Contains(string(got[1].ToolCalls), "call_9") {
		t.Errorf("stored %v (-want +got):\n%s", got, diff)
	}
	// An answer that broke off is not saved.
	tr = m.Track(parse(t, body("user", "broken")), Input{ConversationID: "broken"})
	tr.Chunk(streamChunks("partial")[1])
	tr.Finish(false)
	sync_(t, m)
	if got, _ := st.History(context.Background(), "broken", 0); len(got) != 0 {
		t.Errorf("incomplete exchange saved: %v", got)
	}
}

// flakyStore fails its first Append, like a store that is briefly away.
type flakyStore struct {
	*SQLiteStore
	mu    sync.Mutex
	fails int
}

func (f *flakyStore) Append(ctx context.Context, conv string, turns []Turn, meta Meta) error {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return fmt.Errorf("store away")
	}
	return f.SQLiteStore.Append(ctx, conv, turns, meta)
}

func TestSaveRetriedWhenStoreBrieflyAway(t *testing.T) {
	st, _ := openStore(t)
	fs := &flakyStore{SQLiteStore: st, fails: 1}
	m := newTestManager(t, testConfig(), fs)
	seed(t, m, "c", "keep me", "kept")
	sync_(t, m)
	if got, _ := st.History(context.Background(), "c", 0); len(got) != 2 {
		t.Errorf("stored %v, want the exchange saved on retry", got)
	}
	if s := m.Stats(); s.Saved != 1 || s.SaveFailures != 0 {
		t.Errorf("stats %+v", s)
	}
}

// A full-history client gets the same similar-interactions block on every turn, so its
// system prompt (and the upstream's prompt cache) stays stable while the store grows.
func TestFullHistoryClientSystemPromptStable(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	seed(t, m, "orders-pagination", "How do I add limit offset pagination to ListOrders in the orders service?", "Pass limit and offset to the query.")
	sync_(t, m)
	sys, u1 := "You are Roo.", "Add limit offset pagination to ListOrders in the orders service"
	conv := ConversationID(parse(t, body("system", sys, "user", u1)), "")
	in := Input{ConversationID: conv, Role: roles.Implementation}

	req2 := parse(t, body("system", sys, "user", u1, "assistant", "Reading the file.", "user", "go on"))
	_, res := turn(t, m, req2, in, streamChunks("Added."))
	if res.SimilarItems != 1 {
		t.Fatalf("turn 2: %+v", res)
	}
	seed(t, m, "orders-pagination-2", "limit offset pagination for ListOrders orders service again", "Same answer.")
	sync_(t, m)
	req3 := parse(t, body("system", sys, "user", u1, "assistant", "Reading the file.", "user", "go on", "assistant", "Added.", "user", "thanks"))
	turn(t, m, req3, in, nil)
	if a, b := string(req2.Messages[0].JSON()), string(req3.Messages[0].JSON()); a != b {
		t.Errorf("system message changed between turns:\n%s\n%s", a, b)
	}
}

// Whether a system prompt asks to summarise is a memo of its bytes: later requests with
// the same prompt get the first answer, for both answers, and the conversation key (a memo
// of the same message too) stays right.
func TestCondensingMemoAnswersAsFirstRead(t *testing.T) {
	pad := strings.Repeat(" Keep every decision and file path.", 10) + fmt.Sprint(time.Now().UnixNano())
	for _, tc := range []struct {
		system string
		want   bool
	}{
		{"You are tasked with summarizing the conversation so far." + pad, true},
		{"You are a coding agent; report progress as you go." + pad, false},
	} {
		s, _ := json.Marshal(tc.system)
		body := `{"model":"auto","messages":[{"role":"system","content":` + string(s) + `},{"role":"user","content":"go on"}]}`
		var key string
		for round := range 4 {
			req := parse(t, body)
			if got := IsCondensing(req); got != tc.want {
				t.Errorf("round %d: IsCondensing = %v, want %v for %.40q", round, got, tc.want, tc.system)
			}
			k := ConversationID(req, "")
			if round > 0 && k != key {
				t.Errorf("round %d: key %s, first %s", round, k, key)
			}
			key = k
		}
	}
}

// The first turn of a task is read from a memo once its bytes come again: a long first
// message retried (history in the store, the key derived from it) gets no history every
// time, and its similar interactions are asked for with the same query.
func TestFirstTurnMemoEnrichesAlike(t *testing.T) {
	st, _ := openStore(t)
	m := newTestManager(t, testConfig(), st)
	task := "Add limit offset pagination to ListOrders in src/orders/service.go." + strings.Repeat(" Keep the handler tests green.", 12)
	seed(t, m, "other", task, "Use LIMIT and OFFSET in the query.")
	u1 := task + " " + fmt.Sprint(time.Now().UnixNano())
	first := parse(t, body("user", u1))
	conv := ConversationID(first, "")
	in := Input{RequestID: "r1", ConversationID: conv, Role: roles.Implementation, DerivedConversation: true}
	turn(t, m, first, in, streamChunks("I will add limit and offset."))
	sync_(t, m)
	var want []rc
	for round := range 4 {
		retry := parse(t, body("user", u1))
		res := m.Enrich(context.Background(), retry, in)
		if res.HistoryMessages != 0 {
			t.Errorf("round %d: the stored first turn sent again got %d history messages", round, res.HistoryMessages)
		}
		got := roleContents(retry.Messages)
		if round == 0 {
			want = got
			if res.SimilarItems == 0 {
				t.Fatalf("no similar interaction added: the test compares nothing")
			}
			continue
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("round %d enriched otherwise than the first (-first +now):\n%s", round, d)
		}
	}
}
