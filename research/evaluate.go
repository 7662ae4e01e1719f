package research

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// dimensions maps each scoring dimension to the metrics that feed it.
var dimensions = map[string][]string{
	"reasoning": {MetricAAIntelligence, MetricArenaHardPrompts, MetricArenaMath},
	"coding":    {MetricAiderPolyglot, MetricAACoding, MetricArenaCoding},
	"agentic":   {MetricAAAgentic},
	"writing":   {MetricArenaCreative, MetricArenaInstructions},
	"overall":   {MetricArenaOverall},
	"speed":     {MetricSecondsPerCase},
	"cost":      {MetricPrice},
}

// metricKind says how a metric is normalised within the candidate pool.
func metricKind(m string) string {
	switch {
	case strings.HasPrefix(m, "arena_"):
		return "elo"
	case m == MetricPrice || m == MetricSecondsPerCase || m == MetricAiderCost:
		return "log_lower"
	}
	return "linear"
}

// Candidate is an eligible model (a backend serves it) with what the sources say of it.
type Candidate struct {
	Offer
	Key     Key                `json:"key"`
	Metrics map[string]float64 `json:"metrics"`
	Sources []string           `json:"sources"`
}

// RoleScore is one candidate's score for one role.
type RoleScore struct {
	Model   string  `json:"model"`
	Backend string  `json:"backend"`
	Score   float64 `json:"score"`
	// Coverage is the share of the role's weight the model has data for.
	Coverage float64            `json:"coverage"`
	Dims     map[string]float64 `json:"dims"`
	cand     *Candidate
}

// Explain is a one-line reason for the rankings file.
func (s RoleScore) Explain(role string) string {
	dims := make([]string, 0, len(s.Dims))
	for d, v := range s.Dims {
		dims = append(dims, fmt.Sprintf("%s %.2f", d, v))
	}
	sort.Strings(dims)
	src := "no benchmark"
	if s.cand != nil && len(s.cand.Sources) > 0 {
		src = strings.Join(s.cand.Sources, ", ")
	}
	return fmt.Sprintf("research: %s score %.3f (%s; coverage %.0f%%) from %s", role, s.Score, strings.Join(dims, ", "), s.Coverage*100, src)
}

// Evaluate scores every candidate for every role in weights. Each metric is
// normalised within the pool: Elo ratings as the win probability against the pool's
// mean rating, price and speed on a log scale (cheapest/fastest = 1), others min-max.
// A subscription or free model costs nothing per request, so its cost is the best (1)
// and paid models then share the range 0..0.5.
// A missing metric lowers coverage; it never counts as zero. Result lists are sorted
// best first: models with coverage >= minCoverage, then the rest; models with no data
// for a role are left out.
func Evaluate(cands []*Candidate, weights map[string]map[string]float64, minCoverage float64) map[string][]RoleScore {
	norm := normalise(cands)
	out := map[string][]RoleScore{}
	for role, ws := range weights {
		var total float64
		for _, w := range ws {
			total += w
		}
		if total == 0 {
			continue
		}
		var list []RoleScore
		for i, c := range cands {
			rs := RoleScore{Model: c.Model, Backend: c.Backend, Dims: map[string]float64{}, cand: c}
			var have, sum float64
			for dim, w := range ws {
				v, ok := dimValue(norm[i], dim)
				if !ok || w == 0 {
					continue
				}
				rs.Dims[dim] = round3(v)
				have += w
				sum += w * v
			}
			if have == 0 {
				continue
			}
			rs.Score, rs.Coverage = round3(sum/have), round3(have/total)
			list = append(list, rs)
		}
		sort.SliceStable(list, func(a, b int) bool {
			pa, pb := list[a].Coverage >= minCoverage, list[b].Coverage >= minCoverage
			if pa != pb {
				return pa
			}
			if list[a].Score != list[b].Score {
				return list[a].Score > list[b].Score
			}
			if list[a].Coverage != list[b].Coverage {
				return list[a].Coverage > list[b].Coverage
			}
			return list[a].Model < list[b].Model
		})
		out[role] = list
	}
	return out
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func dimValue(norm map[string]float64, dim string) (float64, bool) {
	var sum float64
	n := 0
	for _, m := range dimensions[dim] {
		if v, ok := norm[m]; ok {
			sum += v
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return sum / float64(n), true
}

// normalise returns, per candidate, each metric mapped to 0..1 within the pool.
func normalise(cands []*Candidate) []map[string]float64 {
	out := make([]map[string]float64, len(cands))
	for i := range out {
		out[i] = map[string]float64{}
	}
	metrics := map[string]bool{}
	for _, c := range cands {
		for m := range c.Metrics {
			metrics[m] = true
		}
	}
	for m := range metrics {
		var vals []float64
		for _, c := range cands {
			if v, ok := c.Metrics[m]; ok && (metricKind(m) != "log_lower" || v > 0) {
				vals = append(vals, v)
			}
		}
		lo, hi := math.Inf(1), math.Inf(-1)
		var mean float64
		// With a free model in the pool, paid ones share the range below it.
		paidScale := 1.0
		for _, c := range cands {
			if v, ok := c.Metrics[m]; ok && v <= 0 && metricKind(m) == "log_lower" {
				paidScale = 0.5
			}
		}
		for _, v := range vals {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
			mean += v
		}
		if len(vals) > 0 {
			mean /= float64(len(vals))
		}
		for i, c := range cands {
			v, ok := c.Metrics[m]
			if !ok {
				continue
			}
			switch metricKind(m) {
			case "elo":
				out[i][m] = 1 / (1 + math.Pow(10, (mean-v)/400))
			case "log_lower":
				switch {
				case v <= 0:
					out[i][m] = 1
				case hi <= lo:
					out[i][m] = paidScale
				default:
					out[i][m] = paidScale * (math.Log(hi) - math.Log(v)) / (math.Log(hi) - math.Log(lo))
				}
			default:
				if hi <= lo {
					out[i][m] = 1
				} else {
					out[i][m] = (v - lo) / (hi - lo)
				}
			}
		}
	}
	return out
}

// BuildCandidates attaches to every offer what each benchmark source says of it and
// reports the match rate per source. Ambiguous lookups are refused and logged.
func (m *Matcher) BuildCandidates(offers []Offer, bench map[string][]Observation) ([]*Candidate, []MatchReport) {
	names := make([]string, 0, len(bench))
	for n := range bench {
		names = append(names, n)
	}
	sort.Strings(names)
	indexes := make([]*index, len(names))
	for i, n := range names {
		indexes[i] = m.newIndex(n, bench[n])
	}
	reports := make([]MatchReport, len(names))
	for i, n := range names {
		reports[i].Source = n
	}
	var cands []*Candidate
	for _, o := range offers {
		c := &Candidate{Offer: o, Key: m.Key(o.Model), Metrics: map[string]float64{}}
		for i, ix := range indexes {
			reports[i].Candidates++
			obs, what, st := ix.lookup(c.Key)
			switch st {
			case Ambiguous:
				reports[i].Ambiguous = append(reports[i].Ambiguous, o.Model+": "+what)
				if m.log != nil {
					m.log.Warn("research: ambiguous name refused", "source", ix.source, "model", o.Model, "entries", what)
				}
				continue
			case NoMatch:
				reports[i].Unmatched = append(reports[i].Unmatched, o.Model)
				continue
			}
			reports[i].Matched++
			c.Sources = append(c.Sources, ix.source)
			for k, v := range obs.Metrics {
				if _, ok := c.Metrics[k]; !ok {
					c.Metrics[k] = v
				}
			}
			if c.ContextWindow == 0 {
				c.ContextWindow = obs.ContextWindow
			}
		}
		// The backend's own price is the one the proxy pays; a subscription model
		// costs nothing per request within the quota.
		switch {
		case o.Subscription || o.Free:
			c.Metrics[MetricPrice] = 0
		case o.PricePerMTok > 0:
			c.Metrics[MetricPrice] = o.PricePerMTok
		}
		slices.Sort(c.Sources)
		cands = append(cands, c)
	}
	for i := range reports {
		if reports[i].Candidates > 0 {
			reports[i].Rate = round3(float64(reports[i].Matched) / float64(reports[i].Candidates))
		}
	}
	return cands, reports
}
