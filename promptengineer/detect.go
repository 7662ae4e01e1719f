package promptengineer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
)

// Bounds of what resolution reads: large system prompts and file dumps are never decoded
// in full.
const (
	// openingBytes is how much of the system prompt is read for the role definition.
	openingBytes = 320
	// envWindow is how much of an environment_details block is searched for "# Current Mode".
	envWindow = 16 << 10
	// specialBytes is how much of the latest user text special patterns see.
	specialBytes = 256
)

// systemIndex returns the index of the first system (or developer) message, or -1.
func systemIndex(req *backends.ChatRequest) int {
	for i := range req.Messages {
		if r := req.Messages[i].Role; r == "system" || r == "developer" {
			return i
		}
	}
	return -1
}

// lastUserIndex returns the index of the last user message, or -1.
func lastUserIndex(req *backends.ChatRequest) int {
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			return i
		}
	}
	return -1
}

// userText is the user's own words in a user message's leading text: agents wrap them
// in tags (<user_message>, <task>, <feedback>) and follow them with <environment_details>.
func userText(s string) string {
	if i := strings.Index(s, "<environment_details>"); i >= 0 {
		s = s[:i]
	}
	for _, tag := range [...]string{"user_message", "task", "feedback", "answer"} {
		open := "<" + tag + ">"
		if i := strings.Index(s, open); i >= 0 {
			inner := s[i+len(open):]
			if j := strings.Index(inner, "</"+tag+">"); j >= 0 {
				inner = inner[:j]
			}
			return strings.TrimSpace(inner)
		}
	}
	return strings.TrimSpace(s)
}

// envMode finds the agent's mode in the environment_details of a user message's content:
// Roo Code and Kilo Code write "# Current Mode\n<slug>code</slug>", Cline writes
// "# Current Mode\nACT MODE". It works on the raw JSON and reads a bounded window.
func envMode(content json.RawMessage) string {
	if len(content) == 0 {
		return ""
	}
	if content[0] == '"' {
		// A string content: the details close the message.
		win := content
		if len(win) > envWindow {
			win = win[len(win)-envWindow:]
		}
		return modeIn(win)
	}
	if content[0] != '[' {
		return ""
	}
	// Parts: the details are a text part near the end; look from the back.
	parts := splitParts(content)
	for i := len(parts) - 1; i >= 0; i-- {
		t := partText(parts[i])
		if !bytes.HasPrefix(t, []byte(`"<environment_details>`)) {
			continue
		}
		if len(t) > envWindow {
			t = t[:envWindow]
		}
		if slug := modeIn(t); slug != "" {
			return slug
		}
	}
	return ""
}

var currentMode = []byte(`# Current Mode\n`)

// modeIn parses the mode after "# Current Mode\n" in raw JSON string bytes.
func modeIn(raw []byte) string {
	i := bytes.Index(raw, currentMode)
	if i < 0 {
		return ""
	}
	rest := raw[i+len(currentMode):]
	if len(rest) > 256 {
		rest = rest[:256]
	}
	if v, ok := bytes.CutPrefix(rest, []byte("<slug>")); ok {
		if j := bytes.Index(v, []byte("</slug>")); j > 0 {
			return strings.ToLower(string(v[:j]))
		}
		return ""
	}
	// Cline: "ACT MODE" / "PLAN MODE" on its own line.
	if j := bytes.Index(rest, []byte(`\n`)); j >= 0 {
		rest = rest[:j]
	}
	line := strings.ToLower(strings.TrimSpace(string(rest)))
	if m, ok := strings.CutSuffix(line, " mode"); ok && m != "" && !strings.ContainsAny(m, " <\\\"") {
		return m
	}
	return ""
}

// splitParts splits a raw JSON array of already validated content parts without
// re-validating them: it only tracks strings and nesting, so it costs one fast pass.
func splitParts(b []byte) [][]byte {
	var out [][]byte
	depth, start := 0, -1
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = backends.StringEnd(b, i) - 1
		case '{', '[':
			depth++
			if depth == 2 {
				start = i
			}
		case '}', ']':
			if depth == 2 && start >= 0 {
				out = append(out, b[start:i+1])
				start = -1
			}
			depth--
		}
	}
	return out
}

// partText returns the raw JSON string of a text part's "text" member ("" when there is none).
func partText(part []byte) []byte {
	// Members of a part object: find "text": that is a key (followed by a colon).
	depth := 0
	for i := 0; i < len(part); i++ {
		switch part[i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			end := backends.StringEnd(part, i)
			if depth == 1 && string(part[i:end]) == `"text"` {
				j := end
				for j < len(part) && (part[j] == ' ' || part[j] == '\n' || part[j] == '\t' || part[j] == '\r') {
					j++
				}
				if j < len(part) && part[j] == ':' {
					j++
					for j < len(part) && (part[j] == ' ' || part[j] == '\n' || part[j] == '\t' || part[j] == '\r') {
						j++
					}
					if j < len(part) && part[j] == '"' {
						return part[j:backends.StringEnd(part, j)]
					}
					return nil
				}
			}
			i = end - 1
		}
	}
	return nil
}

// openingMode matches the opening of a system prompt, "You are <agent>, <role definition>",
// against the known role definitions. It returns the mode slug and the agent's name.
func (s *Strategies) openingMode(opening string) (slug, agent string) {
	rest, ok := strings.CutPrefix(opening, "You are ")
	if !ok {
		return "", ""
	}
	for _, name := range s.agentNames {
		def, ok := strings.CutPrefix(rest, name+", ")
		if !ok {
			continue
		}
		for _, o := range s.openings {
			if strings.HasPrefix(def, o.phrase) {
				return o.slug, name
			}
		}
		return "", name
	}
	return "", ""
}

// firstSpecial returns the index of the first special request before the one at before
// with a pattern that matches t (already lower-cased); before when there is none.
func (s *Strategies) firstSpecial(t string, before int) int {
	if t == "" {
		return before
	}
	for i, sp := range s.special[:before] {
		for k := range sp.patterns {
			if sp.patterns[k].match(t) {
				return i
			}
		}
	}
	return before
}

// openingFacts is what role resolution reads from a system prompt's opening: which
// special request matches it first (special; len(st.special): none) and the agent mode
// it names. It depends on the prompt's bytes and the strategies alone, so it is a memo of
// the message (an agent sends the same system prompt every turn).
type openingFacts struct {
	st          *Strategies
	special     int
	slug, agent string
}

var openingSlot = backends.NewMemoSlot()

// openingOf returns the opening facts of the system message m.
func (s *Strategies) openingOf(m *backends.Message) openingFacts {
	if f, ok := m.Memo(openingSlot).(openingFacts); ok && f.st == s {
		return f
	}
	opening := headText(m.ContentJSON(), openingBytes)
	f := openingFacts{st: s, special: s.firstSpecial(strings.ToLower(opening), len(s.special))}
	f.slug, f.agent = s.openingMode(opening)
	m.SetMemo(openingSlot, f)
	return f
}

// hit is one classification signal that matched.
type hit struct {
	what   string
	weight float64
}

// classify scores text against every role's keywords and patterns. It returns the best
// role, its score and the signals that gave it; ok is false when no role reaches MinScore.
func (s *Strategies) classify(text string) (best roles.Role, score float64, hits []hit, ok bool) {
	if len(text) > s.MaxBytes {
		text = text[:s.MaxBytes]
	}
	lower := strings.ToLower(text)
	var scores [numRoles]float64
	var found [numRoles][]hit
	seen := make([]bool, s.nKW)
	credit := func(ref kwRef) {
		k := s.roles[ref.role].keywords[ref.kw]
		seen[ref.id] = true
		scores[ref.role] += k.weight
		found[ref.role] = append(found[ref.role], hit{what: k.word, weight: k.weight})
	}
	// Each word of the text: the keywords that start with it.
	for i := 0; i < len(lower); {
		if !isWordByte(lower[i]) {
			i++
			continue
		}
		j := i
		for j < len(lower) && isWordByte(lower[j]) {
			j++
		}
		key := lower[i:min(j, i+3)]
		for _, ref := range s.kwIndex[key] {
			if seen[ref.id] {
				continue
			}
			k := &s.roles[ref.role].keywords[ref.kw]
			end := i + len(k.word)
			if strings.HasPrefix(lower[i:], k.word) && (k.prefix || end == len(lower) || !isWordByte(lower[end])) {
				credit(ref)
			}
		}
		i = j
	}
	for _, ref := range s.kwScan {
		k := &s.roles[ref.role].keywords[ref.kw]
		if !seen[ref.id] && containsWord(lower, k.word, k.prefix) {
			credit(ref)
		}
	}
	for ri, st := range s.roles {
		for i := range st.patterns {
			if p := &st.patterns[i]; p.match(lower) {
				scores[ri] += p.weight
				what := strings.TrimSpace(p.re.FindString(lower))
				if len(what) > 40 {
					what = what[:40] + "…"
				}
				found[ri] = append(found[ri], hit{what: what, weight: p.weight})
			}
		}
	}
	for ri, sc := range scores {
		if sc > score {
			best, score, hits = s.roles[ri].role, sc, found[ri]
		}
	}
	if score < s.MinScore {
		return roles.General, score, hits, false
	}
	return best, score, hits, true
}

// containsWord reports whether w occurs in s on word boundaries (prefix: any ending).
func containsWord(s, w string, prefix bool) bool {
	for off := 0; ; {
		i := strings.Index(s[off:], w)
		if i < 0 {
			return false
		}
		i += off
		end := i + len(w)
		if (i == 0 || !isWordByte(s[i-1])) && (prefix || end == len(s) || !isWordByte(s[end])) {
			return true
		}
		off = i + 1
	}
}

func isWordByte(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// describeHits renders the strongest signals for a reason string.
func describeHits(hits []hit) string {
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].weight > hits[j].weight })
	if len(hits) > 4 {
		hits = hits[:4]
	}
	parts := make([]string, len(hits))
	for i, h := range hits {
		parts[i] = fmt.Sprintf("%q", h.what)
	}
	return strings.Join(parts, ", ")
}

// headText returns about the first limit bytes of a raw content's text (a string, or the
// text parts of an array joined by newlines). Unlike backends.ContentText it does not
// validate the parts: the body was validated when it was parsed, and a long array (file
// dumps, environment details) is only skimmed for its part boundaries.
func headText(content json.RawMessage, limit int) string {
	if len(content) == 0 {
		return ""
	}
	if content[0] != '[' {
		return backends.ContentText(content, limit)
	}
	var sb strings.Builder
	for _, p := range splitParts(content) {
		raw := partText(p)
		if raw == nil {
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('\n')
		}
		rest := limit - sb.Len()
		if rest <= 0 {
			break
		}
		sb.WriteString(backends.ContentText(raw, rest))
	}
	return sb.String()
}
