package routing

import (
	"testing"

	"github.com/nanogpt-proxy/nanogpt-proxy/data"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// BenchmarkSelect measures selection as the handler calls it, with the shipped rankings,
// a quota, circuits and stickiness in play. Goal: ≤ 2 µs and at most 1 allocation.
func BenchmarkSelect(b *testing.B) {
	for _, bc := range []struct {
		name string
		req  Request
	}{
		{"auto_role", Request{Role: roles.Implementation, Model: "auto", Profile: "personal", ConversationID: "h-0123456789abcdef"}},
		{"auto_pinned", Request{Role: roles.Architect, Model: "auto:architect", Profile: "work", ConversationID: "pinned"}},
		{"explicit", Request{Role: roles.General, Model: "zai-org/glm-4.6", Profile: "personal"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f := newFixture(b, func(c *Config) { c.Default = data.DefaultRouting; c.Profiles = nil })
			f.q.add(96, f.clock.Now()) // near the limit: the reordered list
			f.r.Pin("pinned", Candidate{Backend: "nanogpt", Model: "qwen/qwen3-coder"})
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := f.r.Select(bc.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestSelectAllocations(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Default = data.DefaultRouting; c.Profiles = nil })
	req := Request{Role: roles.Implementation, Model: "auto", Profile: "personal", ConversationID: "h-1"}
	if n := testing.AllocsPerRun(100, func() { _, _ = f.r.Select(req) }); n > 1 {
		t.Errorf("Select allocates %v times per call; want at most 1", n)
	}
}
