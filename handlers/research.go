package handlers

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/research"
)

// ResearchService is the research job as the admin API sees it.
type ResearchService interface {
	// Trigger starts a run in the background; research.ErrRunning when one is running.
	Trigger(force bool) (runID string, err error)
	Status() research.StatusView
}

// ResearchAdmin returns the /admin/research routes for Deps.Admin:
// POST trigger and force-refresh (202 {run_id}, 409 while a run is in progress) and
// GET status. The /admin router in front of them enforces ADMIN_TOKEN.
func ResearchAdmin(svc ResearchService, log *slog.Logger) func(chi.Router) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Errors go through the one error writer (Server.WriteError), which needs only a logger.
	s := &Server{d: Deps{Log: log}}
	trigger := func(force bool) HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			id, err := svc.Trigger(force)
			if errors.Is(err, research.ErrRunning) {
				return &backends.APIError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "research_running",
					Message: "A research run is already in progress; see GET /admin/research/status."}
			}
			if err != nil {
				return err
			}
			log.Info("research: run triggered", "request_id", RequestID(r.Context()), "run_id", id, "force", force)
			return writeJSON(w, http.StatusAccepted, map[string]any{"run_id": id, "force": force, "status_url": "/admin/research/status"})
		}
	}
	return func(ar chi.Router) {
		ar.Post("/research/trigger", s.wrap(trigger(false)))
		ar.Post("/research/force-refresh", s.wrap(trigger(true)))
		ar.Get("/research/status", s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			return writeJSON(w, http.StatusOK, svc.Status())
		}))
	}
}
