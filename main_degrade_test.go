package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A database that cannot be opened costs usage tracking and the conversation store, not
// the proxy: requests are still served and /status says what is degraded and why.
func TestUnusableDatabaseDegradesNotFails(t *testing.T) {
	sse, err := os.ReadFile("testdata/nanogpt/chat-stream-text.sse")
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(sse)
	}))
	defer up.Close()

	dir := t.TempDir()
	blocker := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(blocker, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, _ := startProxy(t, dir, map[string]string{
		"DB_PATH":         filepath.Join(blocker, "usage.db"), // a file stands where the folder should be
		"NANOGPT_API_KEY": "test-key", "NANOGPT_BASE_URL": up.URL,
		"NANOGPT_MONTHLY_QUOTA": "0",
	})

	resp, err := http.Post(base+"/v1/chat/completions", "application/json",
		bytes.NewReader([]byte(`{"model":"auto","stream":true,"messages":[{"role":"user","content":"hi"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(out), "data: [DONE]") {
		t.Fatalf("request not served without a database: %d\n%s", resp.StatusCode, out)
	}

	resp, err = http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Usage struct {
			Enabled bool   `json:"enabled"`
			Error   string `json:"error"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Usage.Enabled || !strings.Contains(st.Usage.Error, "not-a-dir") {
		t.Errorf("/status usage = %+v, want disabled with the reason naming the path", st.Usage)
	}
}

// Command-line arguments other than the subcommands never start the server.
func TestArgumentsDoNotStartTheServer(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr bool
		want    string
	}{
		{[]string{"--help"}, false, "Usage:"},
		{[]string{"help"}, false, "nanogpt-proxy research"},
		{[]string{"version"}, false, "nanogpt-proxy " + version},
		{[]string{"--port=1"}, true, ""},
	} {
		var out strings.Builder
		env := map[string]string{"PORT": "1", "DB_PATH": filepath.Join(t.TempDir(), "must-not-exist", "u.db")}
		err := run(t.Context(), tc.args, func(k string) string { return env[k] }, &out)
		if (err != nil) != tc.wantErr || !strings.Contains(out.String(), tc.want) {
			t.Errorf("run(%q) = %v, output %q", tc.args, err, out.String())
		}
		if _, statErr := os.Stat(filepath.Dir(env["DB_PATH"])); statErr == nil {
			t.Errorf("run(%q) created the database folder: it started the proxy", tc.args)
		}
	}
}

// /status says how many threads run the proxy's Go code and why: adapted to the load by
// default, the operator's number when GOMAXPROCS is set.
func TestStatusGOMAXPROCS(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	runtime.SetDefaultGOMAXPROCS() // the controller's max, whatever GOMAXPROCS the test process got
	def := runtime.GOMAXPROCS(0)
	// The section as a client reads it (the JSON names are the contract).
	type section struct {
		Mode    string `json:"mode"`
		Reason  string `json:"reason"`
		Current int    `json:"current"`
		Max     int    `json:"max"`
	}
	adaptive := section{Mode: "adaptive", Current: 1, Max: def}
	if def == 1 {
		adaptive = section{Mode: "fixed", Reason: "one CPU: nothing to adapt", Current: 1, Max: 1}
	}
	off := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(off, []byte("server:\n  adaptive_procs: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		want section
	}{
		{"default", nil, adaptive},
		// The runtime applied the variable at startup; here the test process's own setting stands for it.
		{"GOMAXPROCS set", map[string]string{"GOMAXPROCS": "1"}, section{Mode: "fixed", Reason: "GOMAXPROCS is set", Current: def, Max: def}},
		{"switched off in the YAML file", map[string]string{"CONFIG_PATH": off}, section{Mode: "fixed", Reason: "server.adaptive_procs is false", Current: def, Max: def}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, stop := startProxy(t, t.TempDir(), tt.env)
			defer stop()
			resp, err := http.Get(base + "/status")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var st struct {
				Procs section `json:"gomaxprocs"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
				t.Fatal(err)
			}
			// The test process's own load: busy starting up, it may have had every core.
			if tt.want.Mode == "adaptive" && st.Procs.Current == def {
				st.Procs.Current = 1
			}
			if d := cmp.Diff(tt.want, st.Procs); d != "" {
				t.Errorf("/status gomaxprocs (-want +got):\n%s", d)
			}
		})
	}
}
