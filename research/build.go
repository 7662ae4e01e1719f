package research

import (
	"strings"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// Backends is what the sources need to know of the configured backends.
type Backends struct {
	// NanoGPT is the NanoGPT backend's config; its model list is read only when it has
	// an API key. Vertex likewise with a project.
	NanoGPT config.NanoGPT
	Vertex  config.Vertex
}

// BuildSources returns the enabled sources of rc, all fetching through g.
func BuildSources(rc config.Research, be Backends, g Getter) []Source {
	s := rc.Sources
	var out []Source
	if s.OpenRouter.Enabled {
		out = append(out, &OpenRouter{Cfg: s.OpenRouter, Get: g})
	}
	if s.LMArena.Enabled {
		out = append(out, &LMArena{Cfg: s.LMArena, Dataset: s.LMArenaDataset, Config: s.LMArenaConfig, Split: s.LMArenaSplit, Get: g})
	}
	if s.Aider.Enabled {
		out = append(out, &Aider{Cfg: s.Aider, Get: g})
	}
	for _, t := range s.HTMLTables {
		if t.Enabled {
			out = append(out, &HTMLTable{Cfg: t, Get: g})
		}
	}
	if be.NanoGPT.Enabled() && s.NanoGPTModels.Enabled {
		models, sub := s.NanoGPTModels, s.NanoGPTSubscription
		if models.URL == "" {
			models.URL = strings.TrimSuffix(be.NanoGPT.BaseURL, "/") + "/models?detailed=true"
		}
		if sub.URL == "" && be.NanoGPT.SubscriptionURL != "" {
			sub.URL = strings.TrimSuffix(be.NanoGPT.SubscriptionURL, "/") + "/models"
		}
		out = append(out, &NanoGPT{Models: models, Subscription: sub, APIKey: be.NanoGPT.APIKey, Get: g})
	}
	if be.Vertex.Enabled() {
		out = append(out, &Vertex{Models: rc.VertexModels})
	}
	return out
}
