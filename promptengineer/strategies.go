package promptengineer

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Marker is the tag of the block that carries role guidance in the system prompt. A
// request whose system area already holds it never gets a second block.
const Marker = "proxy_role_guidance"

// Strategies is a parsed, validated prompt strategies file. It is immutable once built.
type Strategies struct {
	// MinScore is the content-classification score a role needs to win over general.
	MinScore float64
	// MaxBytes is how much of the latest user text classification reads.
	MaxBytes int

	roles   [numRoles]*strategy
	special []*special
	// agentNames are the names in "You are <name>, <role definition>".
	agentNames []string
	// openings maps a mode's role definition to its slug, in file order.
	openings []opening
	// kwIndex finds keywords by the first (up to) three bytes of their first word, so
	// classification looks at each word of the text once instead of searching the text
	// for every keyword. kwScan holds keywords the index cannot serve.
	kwIndex map[string][]kwRef
	kwScan  []kwRef
	nKW     int
}

// kwRef locates a keyword: its role's index and its index in that role's keywords; id
// numbers every keyword of the file.
type kwRef struct{ role, kw, id int }

const numRoles = 8

type strategy struct {
	role        roles.Role
	guidance    string
	techniques  []string
	constraints []string
	examples    []string
	keywords    []keyword
	patterns    []pattern
	// block is the rendered guidance block; built once so every turn gets the same bytes
	// (prompt caches upstream stay valid).
	block string
}

type keyword struct {
	word   string
	prefix bool
	weight float64
}

type pattern struct {
	re     *regexp.Regexp
	weight float64
	// lits, when set, are literals one of which every match starts with: a text holding
	// none of them cannot match, and strings.Contains is far cheaper than the regexp.
	lits []string
}

// match reports whether the pattern matches lower-cased text.
func (p *pattern) match(text string) bool {
	if p.lits != nil {
		found := false
		for _, l := range p.lits {
			if strings.Contains(text, l) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return p.re.MatchString(text)
}

type special struct {
	name     string
	role     roles.Role
	inject   bool
	patterns []pattern
	block    string
}

type opening struct {
	slug, phrase string
}

func roleIndex(r roles.Role) int {
	for i, x := range roles.All {
		if x == r {
			return i
		}
	}
	return len(roles.All) - 1 // general
}

// strategyFor returns the strategy of r.
func (s *Strategies) strategyFor(r roles.Role) *strategy { return s.roles[roleIndex(r)] }

// Guidance returns the guidance block added to requests of role r.
func (s *Strategies) Guidance(r roles.Role) string { return s.strategyFor(r).block }

// ParseStrategies parses and validates a strategies file. Every problem is reported with
// the line it is on, prefixed by name (a path or "embedded").
func ParseStrategies(name string, b []byte) (*Strategies, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("promptengineer: %s: %w", name, err)
	}
	p := &strategyParser{name: name, s: &Strategies{MinScore: 2, MaxBytes: 2048}}
	if len(doc.Content) == 0 {
		return nil, fmt.Errorf("promptengineer: %s: the file is empty", name)
	}
	p.top(doc.Content[0])
	for i, st := range p.s.roles {
		if st == nil && p.rolesSeen {
			p.errf(p.rolesLine, "role %q has no strategy (every role needs one: %s)", roles.All[i], roles.List())
		}
	}
	if !p.rolesSeen {
		p.errf(doc.Content[0].Line, "missing \"roles\"")
	}
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	for _, st := range p.s.roles {
		st.block = renderBlock(st.role, st.guidance, st.techniques, st.constraints, st.examples)
	}
	p.s.indexKeywords()
	for _, sp := range p.s.special {
		if sp.inject && sp.block != "" {
			sp.block = renderBlock(sp.role, sp.block, nil, nil, nil)
		}
	}
	return p.s, nil
}

type strategyParser struct {
	name      string
	s         *Strategies
	errs      []error
	rolesSeen bool
	rolesLine int
}

func (p *strategyParser) errf(line int, format string, a ...any) {
	p.errs = append(p.errs, fmt.Errorf("promptengineer: %s:%d: %s", p.name, line, fmt.Sprintf(format, a...)))
}

// pairs returns the key/value nodes of a mapping, or reports that n is not one.
func (p *strategyParser) pairs(n *yaml.Node, what string) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		p.errf(n.Line, "%s must be a mapping", what)
		return nil
	}
	out := make([][2]*yaml.Node, 0, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, [2]*yaml.Node{n.Content[i], n.Content[i+1]})
	}
	return out
}

func (p *strategyParser) top(n *yaml.Node) {
	for _, kv := range p.pairs(n, "the file") {
		k, v := kv[0], kv[1]
		switch k.Value {
		case "version":
			var ver int
			if v.Decode(&ver) != nil || ver != 1 {
				p.errf(v.Line, "version must be 1")
			}
		case "classify":
			for _, c := range p.pairs(v, "classify") {
				switch c[0].Value {
				case "min_score":
					if c[1].Decode(&p.s.MinScore) != nil || p.s.MinScore <= 0 {
						p.errf(c[1].Line, "classify.min_score must be a positive number")
					}
				case "max_bytes":
					if c[1].Decode(&p.s.MaxBytes) != nil || p.s.MaxBytes < 64 || p.s.MaxBytes > 65536 {
						p.errf(c[1].Line, "classify.max_bytes must be a whole number between 64 and 65536")
					}
				default:
					p.errf(c[0].Line, "unknown key classify.%s", c[0].Value)
				}
			}
		case "roles":
			p.rolesSeen, p.rolesLine = true, k.Line
			for _, r := range p.pairs(v, "roles") {
				p.role(r[0], r[1])
			}
		case "special":
			p.specials(v)
		case "agents":
			p.agents(v)
		default:
			p.errf(k.Line, "unknown key %q (expected version, classify, roles, special, agents)", k.Value)
		}
	}
}

func (p *strategyParser) role(k, v *yaml.Node) {
	r, ok := roles.Parse(k.Value)
	if !ok || string(r) != k.Value {
		p.errf(k.Line, "unknown role %q (valid roles: %s)", k.Value, roles.List())
		return
	}
	if p.s.roles[roleIndex(r)] != nil {
		p.errf(k.Line, "role %q is defined twice", r)
		return
	}
	st := &strategy{role: r}
	for _, f := range p.pairs(v, "role "+k.Value) {
		fk, fv := f[0], f[1]
		switch fk.Value {
		case "guidance":
			st.guidance = strings.TrimSpace(p.str(fv, k.Value+".guidance"))
		case "techniques":
			st.techniques = p.strs(fv, k.Value+".techniques")
		case "constraints":
			st.constraints = p.strs(fv, k.Value+".constraints")
		case "examples":
			st.examples = p.strs(fv, k.Value+".examples")
		case "keywords":
			for _, kw := range p.pairs(fv, k.Value+".keywords") {
				word := strings.ToLower(strings.TrimSpace(kw[0].Value))
				var w float64
				if kw[1].Decode(&w) != nil || w <= 0 {
					p.errf(kw[1].Line, "keyword %q: weight must be a positive number", kw[0].Value)
					continue
				}
				prefix := strings.HasSuffix(word, "*")
				word = strings.TrimSuffix(word, "*")
				if word == "" {
					p.errf(kw[0].Line, "empty keyword")
					continue
				}
				st.keywords = append(st.keywords, keyword{word: word, prefix: prefix, weight: w})
			}
		case "patterns":
			if fv.Kind != yaml.SequenceNode {
				p.errf(fv.Line, "%s.patterns must be a list", k.Value)
				continue
			}
			for _, pn := range fv.Content {
				var raw struct {
					Pattern string  `yaml:"pattern"`
					Weight  float64 `yaml:"weight"`
				}
				if err := pn.Decode(&raw); err != nil || raw.Pattern == "" {
					p.errf(pn.Line, "a pattern needs \"pattern\" (a regular expression) and \"weight\"")
					continue
				}
				if raw.Weight <= 0 {
					p.errf(pn.Line, "pattern %q: weight must be a positive number", raw.Pattern)
					continue
				}
				pat, err := compilePattern(raw.Pattern)
				if err != nil {
					p.errf(pn.Line, "bad pattern %q: %v", raw.Pattern, err)
					continue
				}
				pat.weight = raw.Weight
				st.patterns = append(st.patterns, pat)
			}
		default:
			p.errf(fk.Line, "unknown key %q in role %s (expected guidance, techniques, constraints, examples, keywords, patterns)", fk.Value, k.Value)
		}
	}
	if st.guidance == "" {
		p.errf(k.Line, "role %s: guidance must not be empty", k.Value)
	}
	p.s.roles[roleIndex(r)] = st
}

// indexKeywords builds kwIndex and kwScan.
func (s *Strategies) indexKeywords() {
	s.kwIndex = map[string][]kwRef{}
	for ri, st := range s.roles {
		for ki, k := range st.keywords {
			ref := kwRef{role: ri, kw: ki, id: s.nKW}
			s.nKW++
			first := k.word
			for i := 0; i < len(first); i++ {
				if !isWordByte(first[i]) {
					first = first[:i]
					break
				}
			}
			switch {
			case first == "" || (k.prefix && len(first) < 3 && first == k.word):
				s.kwScan = append(s.kwScan, ref)
			case len(first) >= 3:
				s.kwIndex[first[:3]] = append(s.kwIndex[first[:3]], ref)
			default:
				s.kwIndex[first] = append(s.kwIndex[first], ref)
			}
		}
	}
}

// compilePattern compiles a detection pattern. Patterns see lower-cased text, so they are
// written in lower case, which lets leading literals serve as a prefilter.
func compilePattern(s string) (pattern, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return pattern{}, err
	}
	pat := pattern{re: re}
	if tree, err := syntax.Parse(s, syntax.Perl); err == nil {
		if hasUpperLiteral(tree) {
			return pattern{}, fmt.Errorf("it has upper-case letters, but patterns are matched on lower-cased text")
		}
		pat.lits = firstLiterals(tree.Simplify())
	}
	return pat, nil
}

// hasUpperLiteral reports whether re would need an upper-case letter (case-sensitively).
func hasUpperLiteral(re *syntax.Regexp) bool {
	if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase == 0 {
		for _, r := range re.Rune {
			if unicode.IsUpper(r) {
				return true
			}
		}
	}
	for _, sub := range re.Sub {
		if hasUpperLiteral(sub) {
			return true
		}
	}
	return false
}

// firstLiterals returns literals one of which starts every match of re, or nil when it
// cannot tell (then the regexp always runs). Leading parts that match exact strings are
// joined, so "(add|implement) (a|the)" gives "add a", "add the", "implement a", ...
func firstLiterals(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpCapture:
		return firstLiterals(re.Sub[0])
	case syntax.OpConcat:
		prefixes := []string{""}
		for _, sub := range re.Sub {
			switch sub.Op {
			case syntax.OpBeginLine, syntax.OpBeginText, syntax.OpWordBoundary, syntax.OpNoWordBoundary, syntax.OpEmptyMatch:
				if len(prefixes) == 1 && prefixes[0] == "" {
					continue
				}
			}
			exact := exactStrings(sub)
			if exact == nil || len(exact)*len(prefixes) > 16 {
				if len(prefixes) == 1 && prefixes[0] == "" {
					return firstLiterals(sub)
				}
				return prefixes
			}
			next := make([]string, 0, len(prefixes)*len(exact))
			for _, p := range prefixes {
				for _, e := range exact {
					next = append(next, p+e)
				}
			}
			prefixes = next
		}
		if len(prefixes) == 1 && prefixes[0] == "" {
			return nil
		}
		return prefixes
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			l := firstLiterals(sub)
			if l == nil {
				return nil
			}
			out = append(out, l...)
		}
		return out
	}
	return exactStrings(re)
}

// exactStrings returns every string re matches when that is a small finite set of
// non-empty strings, else nil.
func exactStrings(re *syntax.Regexp) []string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return nil
		}
		return []string{string(re.Rune)}
	case syntax.OpCapture:
		return exactStrings(re.Sub[0])
	case syntax.OpCharClass:
		var out []string
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i+1]-re.Rune[i] > 8 || len(out) > 16 {
				return nil
			}
			for r := re.Rune[i]; r <= re.Rune[i+1]; r++ {
				out = append(out, string(r))
			}
		}
		return out
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			e := exactStrings(sub)
			if e == nil || len(out)+len(e) > 64 {
				return nil
			}
			out = append(out, e...)
		}
		return out
	case syntax.OpConcat:
		out := []string{""}
		for _, sub := range re.Sub {
			e := exactStrings(sub)
			if e == nil || len(out)*len(e) > 64 {
				return nil
			}
			next := make([]string, 0, len(out)*len(e))
			for _, p := range out {
				for _, x := range e {
					next = append(next, p+x)
				}
			}
			out = next
		}
		return out
	}
	return nil
}

func (p *strategyParser) str(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode {
		p.errf(n.Line, "%s must be text", what)
		return ""
	}
	return n.Value
}

func (p *strategyParser) strs(n *yaml.Node, what string) []string {
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, "%s must be a list of text", what)
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		if s := strings.TrimSpace(p.str(e, what)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (p *strategyParser) specials(n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		p.errf(n.Line, "special must be a list")
		return
	}
	for _, e := range n.Content {
		sp := &special{inject: true}
		for _, f := range p.pairs(e, "a special request") {
			switch f[0].Value {
			case "name":
				sp.name = p.str(f[1], "special.name")
			case "role":
				r, ok := roles.Parse(f[1].Value)
				if !ok {
					p.errf(f[1].Line, "unknown role %q (valid roles: %s)", f[1].Value, roles.List())
				}
				sp.role = r
			case "inject":
				if f[1].Decode(&sp.inject) != nil {
					p.errf(f[1].Line, "special.inject must be true or false")
				}
			case "guidance":
				sp.block = strings.TrimSpace(p.str(f[1], "special.guidance"))
			case "patterns":
				for i, s := range p.strs(f[1], "special.patterns") {
					pat, err := compilePattern(s)
					if err != nil {
						p.errf(f[1].Content[i].Line, "bad pattern %q: %v", s, err)
						continue
					}
					sp.patterns = append(sp.patterns, pat)
				}
			default:
				p.errf(f[0].Line, "unknown key %q in special (expected name, role, inject, guidance, patterns)", f[0].Value)
			}
		}
		if sp.name == "" || sp.role == "" || len(sp.patterns) == 0 {
			p.errf(e.Line, "a special request needs name, role and at least one pattern")
			continue
		}
		p.s.special = append(p.s.special, sp)
	}
}

func (p *strategyParser) agents(n *yaml.Node) {
	for _, f := range p.pairs(n, "agents") {
		switch f[0].Value {
		case "names":
			p.s.agentNames = p.strs(f[1], "agents.names")
		case "modes":
			for _, m := range p.pairs(f[1], "agents.modes") {
				phrase := strings.TrimSpace(p.str(m[1], "agents.modes."+m[0].Value))
				if phrase == "" {
					p.errf(m[1].Line, "mode %q: role definition must not be empty", m[0].Value)
					continue
				}
				p.s.openings = append(p.s.openings, opening{slug: strings.ToLower(m[0].Value), phrase: phrase})
			}
		default:
			p.errf(f[0].Line, "unknown key agents.%s (expected names, modes)", f[0].Value)
		}
	}
}

// renderBlock builds the delimited guidance block for a role.
func renderBlock(r roles.Role, guidance string, techniques, constraints, examples []string) string {
	var b strings.Builder
	b.WriteString("<" + Marker + ` role="` + string(r) + `">` + "\n")
	b.WriteString(guidance)
	b.WriteByte('\n')
	list := func(title string, items []string) {
		if len(items) == 0 {
			return
		}
		b.WriteString(title + ":\n")
		for _, it := range items {
			b.WriteString("- " + it + "\n")
		}
	}
	list("Techniques", techniques)
	list("Constraints", constraints)
	list("Example", examples)
	b.WriteString("</" + Marker + ">")
	return b.String()
}
