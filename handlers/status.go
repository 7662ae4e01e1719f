package handlers

import (
	"fmt"
	"net/http"
	"time"
)

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// status is GET /status: version, uptime, request counters and every registered section.
func (s *Server) status(w http.ResponseWriter, r *http.Request) error {
	out := map[string]any{
		"status":         "ok",
		"version":        s.cfg.Version,
		"started_at":     s.started.UTC().Format(time.RFC3339),
		"uptime_seconds": int64(s.d.Now().Sub(s.started).Seconds()),
		"requests": map[string]int64{
			"total":             s.stats.requests.Load(),
			"errors":            s.stats.errors.Load(),
			"streams_in_flight": s.stats.streaming.Load(),
		},
	}
	for name, f := range s.d.Status {
		out[name] = f()
	}
	return writeJSON(w, http.StatusOK, out)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
