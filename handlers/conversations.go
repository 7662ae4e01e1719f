package handlers

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/contextmgr"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// ConversationDeleter removes a stored conversation (the context manager).
type ConversationDeleter interface {
	DeleteConversation(ctx context.Context, id string) error
}

// ConversationRoutes mounts DELETE /admin/conversations/{id} (for Deps.Admin): it removes
// the conversation's stored messages, after any save already queued for it.
func ConversationRoutes(d ConversationDeleter, log *slog.Logger) func(chi.Router) {
	es := &Server{d: Deps{Log: log}}
	if es.d.Log == nil {
		es.d.Log = slog.New(slog.DiscardHandler)
	}
	return func(r chi.Router) {
		r.Delete("/conversations/{id}", es.wrap(func(w http.ResponseWriter, r *http.Request) error {
			id := chi.URLParam(r, "id")
			err := d.DeleteConversation(r.Context(), id)
			switch {
			case errors.Is(err, contextmgr.ErrNotFound):
				return &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "conversation_not_found",
					Param: "id", Message: "No stored conversation with id " + id + "."}
			case errors.Is(err, contextmgr.ErrNoLocalStore):
				return &backends.APIError{Status: 409, Type: "invalid_request_error", Code: "no_embedded_store",
					Message: "Conversations are not kept in the embedded store (context.store is not \"embedded\" or the database is unavailable)."}
			case err != nil:
				return &backends.APIError{Status: 500, Type: "server_error", Message: "deleting the conversation failed", Err: err}
			}
			es.d.Log.Info("conversation deleted", "request_id", RequestID(r.Context()), "conversation_id", id)
			return writeJSON(w, http.StatusOK, map[string]any{"id": id, "object": "conversation.deleted", "deleted": true})
		}))
	}
}

// contextWindow is the context window of the first candidate's model from the rankings,
// 0 when unknown.
func contextWindow(rt Router, cands []routing.Candidate) int {
	if len(cands) == 0 || rt == nil {
		return 0
	}
	rk := rt.Rankings()
	if rk == nil {
		return 0
	}
	return rk.Models[cands[0].Model].ContextWindow
}
