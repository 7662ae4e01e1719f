package handlers

import "github.com/nanogpt-proxy/nanogpt-proxy/routing"

// ConversationPinner is told which candidate served a conversation, so later turns stay
// on it (stickiness). Optional: a Router that implements it is called after the attempt
// that succeeded.
type ConversationPinner interface {
	Pin(conversationID string, c routing.Candidate)
}

// failoverExhausted reports whether the attempt budget of ex is spent: Config.MaxAttempts
// attempts made, or Config.MaxFailoverTime passed since the request arrived. Zero
// values mean no bound.
func (s *Server) failoverExhausted(ex *exchange) bool {
	if n := s.cfg.MaxAttempts; n > 0 && ex.attempts >= n {
		s.d.Log.Warn("no further fallback: attempt limit reached", "request_id", ex.id, "attempts", ex.attempts)
		return true
	}
	if d := s.cfg.MaxFailoverTime; d > 0 && s.d.Now().Sub(ex.start) >= d {
		s.d.Log.Warn("no further fallback: failover time limit reached", "request_id", ex.id, "attempts", ex.attempts, "limit", d)
		return true
	}
	return false
}
