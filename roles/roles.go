// Package roles owns the vocabulary of request roles shared by every pipeline stage:
// the eight roles, their order and their validation.
package roles

import "strings"

// Role is what a request is for; it picks the prompt strategy and the model ranking.
type Role string

// The roles, in the order they are listed to users.
const (
	Architect      Role = "architect"
	Implementation Role = "implementation"
	CodeReview     Role = "code_review"
	Debugging      Role = "debugging"
	Testing        Role = "testing"
	Documentation  Role = "documentation"
	Research       Role = "research"
	General        Role = "general"
)

// All lists every role in display order.
var All = []Role{Architect, Implementation, CodeReview, Debugging, Testing, Documentation, Research, General}

// Parse returns the role named s (case-insensitive, "-" accepted for "_").
func Parse(s string) (Role, bool) {
	s = strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")
	for _, r := range All {
		if string(r) == s {
			return r, true
		}
	}
	return "", false
}

// List returns the valid role names joined by ", " (for error messages).
func List() string {
	names := make([]string, len(All))
	for i, r := range All {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}
