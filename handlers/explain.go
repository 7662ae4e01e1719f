package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/nanogpt-proxy/nanogpt-proxy/promptengineer"
	"github.com/nanogpt-proxy/nanogpt-proxy/routing"
)

// Explain mode: header X-Proxy-Dry-Run: true on a chat request, or POST /v1/route/explain
// with a chat body, runs the pipeline up to the upstream call and answers with what would
// happen instead of calling any backend.

// dryRun reports whether the request asks for an explanation instead of an answer.
func dryRun(r *http.Request) bool {
	return strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Proxy-Dry-Run")), "true")
}

// routeExplain is POST /v1/route/explain: a chat body, explained.
func (s *Server) routeExplain(w http.ResponseWriter, r *http.Request) error {
	r.Header.Set("X-Proxy-Dry-Run", "true")
	return s.chat(w, r)
}

// Explanation is the body of an explain-mode answer.
type Explanation struct {
	Object    string          `json:"object"` // "proxy.explanation"
	RequestID string          `json:"request_id"`
	Role      ExplainedRole   `json:"role"`
	Profile   string          `json:"profile"`
	Model     string          `json:"model"`   // the first candidate that would be tried
	Backend   string          `json:"backend"` // its backend
	Candidate []ExplainedCand `json:"candidates"`
	// ConversationID is the key history and similar interactions are stored under.
	ConversationID string `json:"conversation_id"`
	// UpstreamRequest is the body exactly as it would be sent to the first candidate, byte
	// for byte (OpenAI format; the Vertex backend translates it on the way out). It is
	// written last, unescaped and unreformatted.
	UpstreamRequest json.RawMessage `json:"-"`
}

// MarshalJSON writes the explanation with upstream_request as its exact bytes
// (encoding/json would compact it and escape "<" in the guidance block).
func (e Explanation) MarshalJSON() ([]byte, error) {
	type plain Explanation
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(plain(e)); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(bytes.TrimSuffix(buf.Bytes(), []byte("\n")), []byte("}"))
	b = append(b, `,"upstream_request":`...)
	b = append(b, e.UpstreamRequest...)
	return append(b, '}'), nil
}

// ExplainedRole is the resolved role and why.
type ExplainedRole struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
	Signal string `json:"signal"`
	// Guidance says where the role guidance went (or why none was added).
	Guidance string `json:"guidance"`
	// Rewrite is the optimizer's outcome; empty when no optimizer is configured.
	Rewrite string `json:"rewrite,omitempty"`
}

// ExplainedCand is one fallback candidate, in the order it would be tried.
type ExplainedCand struct {
	Backend string `json:"backend"`
	Model   string `json:"model"`
	Reason  string `json:"reason"`
	// Available is false when the backend is not configured (it would be skipped).
	Available bool `json:"available"`
}

// explain answers a dry run: role, candidates and the upstream body, no backend called.
func (s *Server) explain(w http.ResponseWriter, ex *exchange, pr promptengineer.Result, cands []routing.Candidate) error {
	out := Explanation{
		Object: "proxy.explanation", RequestID: ex.id, Profile: ex.profile, ConversationID: ex.convID,
		Role:      ExplainedRole{Name: string(pr.Role), Reason: pr.Reason, Signal: pr.Signal, Guidance: pr.Injection, Rewrite: pr.Rewrite},
		Candidate: make([]ExplainedCand, 0, len(cands)),
	}
	for _, c := range cands {
		_, ok := s.d.Backends[c.Backend]
		out.Candidate = append(out.Candidate, ExplainedCand{Backend: c.Backend, Model: c.Model, Reason: c.Reason, Available: ok})
		if ok && out.Model == "" {
			out.Model, out.Backend = c.Model, c.Backend
		}
	}
	model := out.Model
	if model == "" && len(cands) > 0 {
		model = cands[0].Model
	}
	out.UpstreamRequest = ex.req.UpstreamBody(model)
	h := w.Header()
	h.Set("X-Proxy-Dry-Run", "true")
	if out.Model != "" {
		h.Set("X-Proxy-Model", out.Model)
		h.Set("X-Proxy-Backend", out.Backend)
	}
	b, err := out.MarshalJSON()
	if err != nil {
		return fmt.Errorf("handlers: encoding explanation: %w", err)
	}
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(b, '\n'))
	return nil
}
