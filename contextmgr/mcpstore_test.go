package contextmgr

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
	"github.com/nanogpt-proxy/nanogpt-proxy/mcp"
)

// fakeServer answers every tool with a fixed result and records the arguments.
type fakeServer struct {
	res  *mcp.Result
	args map[string]any
}

func (f *fakeServer) CallTool(_ context.Context, name string, args any) (*mcp.Result, error) {
	b, _ := json.Marshal(args)
	_ = json.Unmarshal(b, &f.args)
	return f.res, nil
}

func TestMCPSearchResultShapes(t *testing.T) {
	a := `{"conversation_id":"a","role":"user","content":"index invoices","timestamp":"2026-01-02T03:04:05Z","similarity_score":0.9}`
	a2 := `{"conversation_id":"a","role":"assistant","content":"by customer","similarity_score":0.8}`
	b := `{"conversation_id":"b","role":"user","content":"invoice totals","similarity_score":0.75}`
	low := `{"conversation_id":"c","role":"user","content":"weak","similarity_score":0.2}`
	self := `{"conversation_id":"me","role":"user","content":"mine","similarity_score":0.99}`
	want := []struct {
		Conv  string
		Turns []Turn
	}{
		{"a", []Turn{{Role: "user", Content: "index invoices"}, {Role: "assistant", Content: "by customer"}}},
		{"b", []Turn{{Role: "user", Content: "invoice totals"}}},
	}
	for _, tc := range []struct {
		name string
		res  *mcp.Result
	}{
		{"one JSON array text item", &mcp.Result{Texts: []string{"[" + a + "," + b + "," + a2 + "," + low + "," + self + "]"}}},
		{"one object with results", &mcp.Result{Texts: []string{`{"results":[` + a + "," + b + "," + a2 + "," + low + "," + self + `],"count":5}`}}},
		{"one item per entry", &mcp.Result{Texts: []string{a, b, a2, low, self, "not json"}}},
		{"structured content", &mcp.Result{Structured: json.RawMessage(`{"results":[` + a + "," + b + "," + a2 + `]}`), Texts: []string{"3 results"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeServer{res: tc.res}
			st := NewMCPStore(f, config.Default().Context.MCPStore)
			got, err := st.Similar(context.Background(), "invoices <environment_details>noise</environment_details>", "me", "personal", 3)
			if err != nil {
				t.Fatal(err)
			}
			var gotS []struct {
				Conv  string
				Turns []Turn
			}
			for _, it := range got {
				gotS = append(gotS, struct {
					Conv  string
					Turns []Turn
				}{it.ConversationID, it.Turns})
			}
			if diff := cmp.Diff(want, gotS); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if f.args["query"] != "invoices" || f.args["min_score"] != 0.7 || f.args["limit"] != float64(4) {
				t.Errorf("search arguments %v", f.args)
			}
		})
	}
}

func TestMCPHistoryShapes(t *testing.T) {
	msgs := `[{"role":"user","content":"hi"},{"role":"assistant","content":"hello","timestamp":"2026-01-02T03:04:05Z"}]`
	for _, res := range []*mcp.Result{
		{Texts: []string{`{"conversation_id":"x","messages":` + msgs + `}`}},
		{Texts: []string{msgs}},
		{Texts: []string{`{"role":"user","content":"hi"}`, `{"role":"assistant","content":"hello"}`}},
	} {
		st := NewMCPStore(&fakeServer{res: res}, config.Default().Context.MCPStore)
		got, err := st.History(context.Background(), "x", 10)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]rc{{"user", "hi"}, {"assistant", "hello"}}, turnsRC(got)); diff != "" {
			t.Errorf("%v (-want +got):\n%s", res.Texts, diff)
		}
	}
}
