package research

import (
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Key is a normalised model name: Base identifies the model, Variant a way of running
// it that changes its results ("thinking", a reasoning effort like "high"). Pricing
// variants (":free", ":batch") do not change results and are dropped.
type Key struct {
	Base    string `json:"base"`
	Variant string `json:"variant,omitempty"`
}

func (k Key) String() string {
	if k.Variant == "" {
		return k.Base
	}
	return k.Base + " (" + k.Variant + ")"
}

var (
	reParen      = regexp.MustCompile(`\s*\(([^)]*)\)`)
	reDotVersion = regexp.MustCompile(`(\d)\.(\d)`)
	reDate       = regexp.MustCompile(`(?:[-@](?:20\d\d-?[01]\d-?[0-3]\d|[01]\d-[0-3]\d|(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])))(?:-v\d+)?(?::\d+)?$`)
	reRevision   = regexp.MustCompile(`-v\d+$`)
	reThinking   = regexp.MustCompile(`-thinking(?:-\d+k)?$`)
	reEffort     = regexp.MustCompile(`-(minimal|low|medium|high|xhigh)$`)
	reProviderDo = regexp.MustCompile(`^(?:anthropic|amazon|meta|mistral|cohere|ai21|google)\.`)
	reSpaces     = regexp.MustCompile(`[\s_]+`)
)

var efforts = []string{"minimal", "low", "medium", "high", "xhigh", "max"}

// Normalize turns a model name from any source into a Key: lower case, provider
// prefixes ("openrouter/anthropic/", "vertex_ai/", "anthropic.") and "~" removed,
// release dates (-20241022, -2024-07-18, @20241022, -0905, -06-05) with their "-v2"
// revision and ":0" suffix removed, "-latest", "-preview" and "-instruct" removed,
// "3.5" written "3-5", spaces as dashes; and the variant read from "(32k thinking)",
// "(high)", "-thinking", "-high".
func Normalize(name string) Key {
	s := strings.ToLower(strings.TrimSpace(name))
	variant := ""
	if m := reParen.FindStringSubmatch(s); m != nil {
		variant = parenVariant(m[1])
		s = reParen.ReplaceAllString(s, "")
	}
	s = strings.TrimPrefix(s, "~")
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	s = reProviderDo.ReplaceAllString(s, "")
	for _, p := range []string{":free", ":batch", ":beta", ":extended", ":nitro", ":floor", ":online"} {
		s = strings.TrimSuffix(s, p)
	}
	if strings.HasSuffix(s, ":thinking") {
		s, variant = strings.TrimSuffix(s, ":thinking"), "thinking"
	}
	s = reSpaces.ReplaceAllString(s, "-")
	for changed := true; changed; {
		before := s
		if reDate.MatchString(s) {
			s = reDate.ReplaceAllString(s, "")
		}
		if reThinking.MatchString(s) {
			s, variant = reThinking.ReplaceAllString(s, ""), "thinking"
		}
		if m := reEffort.FindStringSubmatch(s); m != nil && variant == "" {
			s, variant = strings.TrimSuffix(s, "-"+m[1]), m[1]
		}
		for _, suf := range []string{"-latest", "-preview", "-instruct", "-exp"} {
			s = strings.TrimSuffix(s, suf)
		}
		changed = s != before
	}
	// "claude-3-5-sonnet-v2@20241022": a revision right before a date stamp.
	if strings.Contains(name, "@") || reDate.MatchString(strings.ToLower(name)) {
		s = reRevision.ReplaceAllString(s, "")
	}
	for reDotVersion.MatchString(s) {
		s = reDotVersion.ReplaceAllString(s, "$1-$2")
	}
	return Key{Base: strings.Trim(s, "-"), Variant: variant}
}

// parenVariant reads Aider-style "(…)" annotations.
func parenVariant(p string) string {
	p = strings.TrimSpace(p)
	switch {
	case p == "" || p == "chat" || strings.Contains(p, "no thinking") || strings.Contains(p, "no think"):
		return ""
	case strings.Contains(p, "think") || strings.Contains(p, "reason"):
		return "thinking"
	}
	if slices.Contains(efforts, p) {
		return p
	}
	return strings.ReplaceAll(p, " ", "-")
}

//go:embed aliases.yaml
var defaultAliases []byte

// Matcher resolves names across sources: Normalize, then aliases (built in and from
// the user's file) map a normalised base to its canonical base.
type Matcher struct {
	alias map[string]string // normalised base -> canonical base
	log   *slog.Logger
}

// NewMatcher builds a Matcher from the built-in aliases plus the YAML file at path
// (canonical: [names]); an empty path means built-ins only.
func NewMatcher(path string, log *slog.Logger) (*Matcher, error) {
	m := &Matcher{alias: map[string]string{}, log: log}
	if err := m.addAliases(defaultAliases); err != nil {
		return nil, fmt.Errorf("research: built-in aliases: %w", err)
	}
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("research: alias file: %w", err)
		}
		if err := m.addAliases(b); err != nil {
			return nil, fmt.Errorf("research: alias file %s: %w", path, err)
		}
	}
	return m, nil
}

func (m *Matcher) addAliases(b []byte) error {
	var doc map[string][]string
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	for canon, names := range doc {
		c := Normalize(canon).Base
		for _, n := range names {
			m.alias[Normalize(n).Base] = c
		}
	}
	return nil
}

// Key normalises name and applies the aliases.
func (m *Matcher) Key(name string) Key {
	k := Normalize(name)
	if c, ok := m.alias[k.Base]; ok {
		k.Base = c
	}
	return k
}

// index is one source's observations by key. A key two different entries claim is
// ambiguous and never used.
type index struct {
	source    string
	primary   map[Key][]int // from Name
	alternate map[Key][]int // from AltNames
	obs       []Observation
}

func (m *Matcher) newIndex(source string, obs []Observation) *index {
	ix := &index{source: source, primary: map[Key][]int{}, alternate: map[Key][]int{}, obs: obs}
	for i, o := range obs {
		k := m.Key(o.Name)
		ix.primary[k] = appendDistinct(ix.primary[k], i, obs)
		for _, a := range o.AltNames {
			ak := m.Key(a)
			// "gpt-5 (high)" run as --model openai/gpt-5 is still the high run.
			if ak.Variant == "" && (k.Variant == "thinking" || slices.Contains(efforts, k.Variant)) {
				ak.Variant = k.Variant
			}
			ix.alternate[ak] = appendDistinct(ix.alternate[ak], i, obs)
		}
	}
	return ix
}

// appendDistinct adds i unless an entry with the same metrics is already there (the
// same model listed twice, e.g. "openai/gpt-5" and "openai/gpt-5:batch").
func appendDistinct(list []int, i int, obs []Observation) []int {
	for _, j := range list {
		if sameMetrics(obs[i].Metrics, obs[j].Metrics) || (len(obs[i].Metrics) == 0) {
			return list
		}
	}
	return append(list, i)
}

func sameMetrics(a, b map[string]float64) bool {
	for k, v := range a {
		if k == MetricPrice {
			continue
		}
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok && k != MetricPrice {
			return false
		}
	}
	return true
}

// MatchStatus is the outcome of looking a model up in one source.
type MatchStatus int

// Match outcomes.
const (
	NoMatch MatchStatus = iota
	Matched
	Ambiguous
)

// lookup finds the observation for key k. A plain model (no variant) also matches
// the source's "medium" effort entry (the default effort) when there is no plain one;
// thinking variants are never used for a plain model.
func (ix *index) lookup(k Key) (*Observation, string, MatchStatus) {
	tries := []Key{k}
	if k.Variant == "" {
		tries = append(tries, Key{Base: k.Base, Variant: "medium"})
	}
	for _, table := range []map[Key][]int{ix.primary, ix.alternate} {
		for _, t := range tries {
			switch hits := table[t]; len(hits) {
			case 0:
				continue
			case 1:
				return &ix.obs[hits[0]], ix.obs[hits[0]].Name, Matched
			default:
				names := make([]string, len(hits))
				for i, h := range hits {
					names[i] = ix.obs[h].Name
				}
				sort.Strings(names)
				return nil, strings.Join(names, " | "), Ambiguous
			}
		}
	}
	return nil, "", NoMatch
}

// MatchReport says how well one source's names matched the candidate models.
type MatchReport struct {
	Source string `json:"source"`
	// Candidates is how many eligible models were looked up; Matched how many found
	// an entry; Rate is Matched/Candidates.
	Candidates int     `json:"candidates"`
	Matched    int     `json:"matched"`
	Rate       float64 `json:"rate"`
	// Ambiguous lists "model: entry | entry" lookups refused because several entries fit.
	Ambiguous []string `json:"ambiguous,omitempty"`
	// Unmatched lists candidate models the source has no entry for.
	Unmatched []string `json:"unmatched,omitempty"`
}
