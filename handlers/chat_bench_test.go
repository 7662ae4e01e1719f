package handlers

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// BenchmarkChatHandler runs POST /v1/chat/completions through the whole pipeline as main
// wires it (real stages, NanoGPT backend against an httptest upstream answering the
// recorded completion, usage rows into a real SQLite file, request logging) for the two
// bodies bench/run.sh uses. cpu-ns/op is the process's CPU time per request (upstream
// included), which a shared machine disturbs far less than ns/op. For a CPU profile:
// go test -run '^$' -bench ChatHandler -cpuprofile cpu.out ./handlers
func BenchmarkChatHandler(b *testing.B) {
	answer, err := os.ReadFile("../testdata/nanogpt/chat-completion.json")
	if err != nil {
		b.Fatal(err)
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer up.Close()

	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := storage.Open(ctx, filepath.Join(b.TempDir(), "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	usage := storage.NewUsageWriter(db, log, 4096, 200*time.Millisecond)
	defer usage.Close(ctx)
	router, err := routing.New(routing.Config{Default: data.DefaultRouting, RankingsPath: filepath.Join(b.TempDir(), "none.json")}, log)
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{MaxBodyBytes: 32 << 20, DefaultProfile: "personal"}, Deps{
		Log: log, Prompt: promptengineer.New(), Router: router, Context: contextmgr.New(), Usage: usage,
		Backends: map[string]backends.Backend{"nanogpt": backends.NewNanoGPT(backends.NanoGPTConfig{
			APIKey: "k", BaseURL: up.URL + "/v1", FirstByteTimeout: time.Minute, IdleTimeout: time.Minute}, nil)},
	})

	for _, bc := range []struct{ name, file string }{
		{"small", "../testdata/clients/roo-code-one-shot.json"},
		{"roo-60k", "../testdata/bench/roo-code-60k.json"},
	} {
		body, err := os.ReadFile(bc.file)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				s.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU returns the CPU time (user+system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
