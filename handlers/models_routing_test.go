package handlers

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode
}

func TestModelsShowRoutes(t *testing.T) {
	e := newFOEnv(t, foOptions{}, "sub-ok", "vertex/ok-v")
	e.router.SetCatalog("nanogpt", []string{"openai/gpt-5"})
	var list struct {
		Data []Model `json:"data"`
	}
	if code := getJSON(t, e.proxy.URL+"/v1/models", &list); code != 200 {
		t.Fatalf("status %d", code)
	}
	got := map[string]Model{}
	for _, m := range list.Data {
		got[m.ID] = m
	}
	for _, id := range []string{"auto", "auto:architect", "auto:general", "sub-ok", "ok-v", "openai/gpt-5"} {
		if _, ok := got[id]; !ok {
			t.Errorf("/v1/models lacks %q", id)
		}
	}
	if m := got["ok-v"]; m.Backend != "vertex" || len(m.Roles) != 8 || m.Roles[0] != "architect:fallback" || m.Subscription {
		t.Errorf("ok-v = %+v", m)
	}
	if m := got["sub-ok"]; m.Backend != "nanogpt" || !m.Subscription {
		t.Errorf("sub-ok = %+v", m)
	}
	if m := got["openai/gpt-5"]; m.Backend != "nanogpt" || m.Roles != nil {
		t.Errorf("catalog model = %+v", m)
	}

	var one Model
	if code := getJSON(t, e.proxy.URL+"/v1/models/sub-ok", &one); code != 200 {
		t.Fatalf("status %d", code)
	}
	want := []string{"architect:primary", "implementation:primary", "code_review:primary", "debugging:primary",
		"testing:primary", "documentation:primary", "research:primary", "general:primary"}
	if d := cmp.Diff(want, one.Roles); d != "" || one.Backend != "nanogpt" {
		t.Errorf("/v1/models/sub-ok backend %q roles (-want +got):\n%s", one.Backend, d)
	}
}

// Models of a backend that is not configured are not offered: a client that picked one
// would only get a 503. A backend-prefixed id shows the roles of the model it names.
func TestModelsOnlyFromConfiguredBackends(t *testing.T) {
	e := newFOEnv(t, foOptions{noVertex: true}, "sub-ok", "vertex/ok-v")
	var list struct {
		Data []Model `json:"data"`
	}
	if code := getJSON(t, e.proxy.URL+"/v1/models", &list); code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, m := range list.Data {
		if m.Backend == "vertex" {
			t.Errorf("/v1/models offers %q on vertex, which is not configured", m.ID)
		}
	}
	var miss struct {
		Error struct{ Code string } `json:"error"`
	}
	if code := getJSON(t, e.proxy.URL+"/v1/models/vertex/ok-v", &miss); code != 404 || miss.Error.Code != "model_not_found" {
		t.Errorf("/v1/models/vertex/ok-v with vertex off: %d %+v, want 404 model_not_found", code, miss)
	}

	e2 := newFOEnv(t, foOptions{}, "sub-ok", "vertex/ok-v")
	var one Model
	if code := getJSON(t, e2.proxy.URL+"/v1/models/vertex/ok-v", &one); code != 200 {
		t.Fatalf("status %d", code)
	}
	if one.ID != "vertex/ok-v" || one.Backend != "vertex" || len(one.Roles) != 8 {
		t.Errorf("/v1/models/vertex/ok-v = %+v, want the ranked model's roles", one)
	}
}

func TestUnknownProfileHeader(t *testing.T) {
	e := newFOEnv(t, foOptions{}, "ok-a")
	req, _ := http.NewRequest("POST", e.proxy.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("X-Profile", "holiday")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `Unknown profile \"holiday\": expected one of \"personal\", \"work\".`) {
		t.Errorf("%d %s", resp.StatusCode, b)
	}
	if e.up.count("ok-a") != 0 {
		t.Error("upstream called for a request with an unknown profile")
	}
}
