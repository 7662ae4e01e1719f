// Package promptengineer owns the first pipeline stage: it works out the role of each
// request (explicit field, header, model alias, the coding agent's mode, content) and
// adds that role's guidance to the system area without touching what the client sent.
package promptengineer

import (
	"context"
	"fmt"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Input is what the handler knows of a request beyond its body.
type Input struct {
	// HeaderRole is the X-Proxy-Role header (empty when absent).
	HeaderRole string
	// AliasRole is the role of an "auto:<role>" model alias (empty otherwise).
	AliasRole roles.Role
}

// Result is the outcome of Prepare.
type Result struct {
	Role roles.Role
	// Reason says which signal decided the role ("body role field", "X-Proxy-Role header", ...).
	Reason string
	// Guidance reports whether role guidance was added to the request.
	Guidance bool
}

// InvalidRoleError is an explicit role that is not one of the eight.
type InvalidRoleError struct {
	Source string
	Value  string
}

func (e *InvalidRoleError) Error() string {
	return fmt.Sprintf("Invalid %s %q: expected one of %s", e.Source, e.Value, roles.List())
}

// Engineer resolves roles and applies strategies.
type Engineer struct{}

// New returns an Engineer.
func New() *Engineer { return &Engineer{} }

// Prepare resolves the role of req and edits req for it. An unknown explicit role is an
// *InvalidRoleError.
func (e *Engineer) Prepare(ctx context.Context, req *backends.ChatRequest, in Input) (Result, error) {
	if req.Role != "" {
		r, ok := roles.Parse(req.Role)
		if !ok {
			return Result{}, &InvalidRoleError{Source: "'role'", Value: req.Role}
		}
		return Result{Role: r, Reason: "body role field"}, nil
	}
	if in.HeaderRole != "" {
		r, ok := roles.Parse(in.HeaderRole)
		if !ok {
			return Result{}, &InvalidRoleError{Source: "X-Proxy-Role header", Value: in.HeaderRole}
		}
		return Result{Role: r, Reason: "X-Proxy-Role header"}, nil
	}
	if in.AliasRole != "" {
		return Result{Role: in.AliasRole, Reason: "model alias auto:" + string(in.AliasRole)}, nil
	}
	return Result{Role: roles.General, Reason: "default"}, nil
}
