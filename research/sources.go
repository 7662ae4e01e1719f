package research

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/PuerkitoBio/goquery"
	"go.yaml.in/yaml/v3"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// Compile-time guards.
var (
	_ Source = (*OpenRouter)(nil)
	_ Source = (*LMArena)(nil)
	_ Source = (*Aider)(nil)
	_ Source = (*HTMLTable)(nil)
	_ Source = (*NanoGPT)(nil)
	_ Source = (*Vertex)(nil)
)

var errEmpty = errors.New("empty response")

// decodeJSON decodes b into v, naming truncation and empty bodies plainly.
func decodeJSON(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return errEmpty
	}
	if err := json.Unmarshal(b, v); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) && strings.Contains(err.Error(), "unexpected end") {
			return fmt.Errorf("truncated JSON: %w", err)
		}
		return fmt.Errorf("malformed JSON: %w", err)
	}
	return nil
}

// blended is the price per 1M tokens of a 3:1 input:output mix.
func blended(in, out float64) float64 { return 0.75*in + 0.25*out }

// OpenRouter reads GET /api/v1/models: prices, context length, free variants and the
// Artificial Analysis indices in "benchmarks".
type OpenRouter struct {
	Cfg config.ResearchSource
	Get Getter
}

// Name implements Source.
func (s *OpenRouter) Name() string { return "openrouter" }

type orModel struct {
	ID            string `json:"id"`
	ContextLength int    `json:"context_length"`
	AliasTarget   *struct {
		Slug string `json:"slug"`
	} `json:"alias_target"`
	Pricing struct {
		Prompt     string `json:"prompt"`
		Completion string `json:"completion"`
	} `json:"pricing"`
	Benchmarks *struct {
		AA *struct {
			Intelligence *float64 `json:"intelligence_index"`
			Coding       *float64 `json:"coding_index"`
			Agentic      *float64 `json:"agentic_index"`
		} `json:"artificial_analysis"`
	} `json:"benchmarks"`
}

// Fetch implements Source.
func (s *OpenRouter) Fetch(ctx context.Context) (*Result, error) {
	b, err := s.Get.Get(ctx, "openrouter_models.json", s.Cfg.URL, s.Cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("research: openrouter: %w", err)
	}
	var doc struct {
		Data []orModel `json:"data"`
	}
	if err := decodeJSON(b, &doc); err != nil {
		return nil, fmt.Errorf("research: openrouter: %w", err)
	}
	if doc.Data == nil {
		return nil, errors.New(`research: openrouter: response has no "data" list`)
	}
	res := &Result{}
	for _, m := range doc.Data {
		if m.ID == "" || m.AliasTarget != nil || strings.HasPrefix(m.ID, "openrouter/") {
			continue // aliases duplicate their target; openrouter/* are routers, not models
		}
		o := Observation{Name: m.ID, Metrics: map[string]float64{}, ContextWindow: m.ContextLength}
		in, errIn := strconv.ParseFloat(m.Pricing.Prompt, 64)
		out, errOut := strconv.ParseFloat(m.Pricing.Completion, 64)
		if errIn == nil && errOut == nil && in >= 0 && out >= 0 {
			p := blended(in, out) * 1e6
			o.Free = p == 0
			if p > 0 {
				o.Metrics[MetricPrice] = p
			}
		}
		if m.Benchmarks != nil && m.Benchmarks.AA != nil {
			aa := m.Benchmarks.AA
			for k, v := range map[string]*float64{MetricAAIntelligence: aa.Intelligence, MetricAACoding: aa.Coding, MetricAAAgentic: aa.Agentic} {
				if v != nil {
					o.Metrics[k] = *v
				}
			}
		}
		res.Observations = append(res.Observations, o)
	}
	return res, nil
}

// LMArena reads the LMArena leaderboard dataset through the Hugging Face
// datasets-server /rows API, 100 rows a page.
type LMArena struct {
	Cfg                    config.ResearchSource
	Dataset, Config, Split string
	Get                    Getter
	// PageSize is the rows per request (at most 100, the API's limit); 0 means 100.
	PageSize int
}

// Name implements Source.
func (s *LMArena) Name() string { return "lmarena" }

var arenaCategories = map[string]string{
	"overall":               MetricArenaOverall,
	"coding":                MetricArenaCoding,
	"math":                  MetricArenaMath,
	"hard_prompts":          MetricArenaHardPrompts,
	"instruction_following": MetricArenaInstructions,
	"creative_writing":      MetricArenaCreative,
}

// maxArenaPages bounds pagination against a server that never ends.
const maxArenaPages = 200

// Fetch implements Source.
func (s *LMArena) Fetch(ctx context.Context) (*Result, error) {
	size := s.PageSize
	if size <= 0 || size > 100 {
		size = 100
	}
	type row struct {
		Model    string   `json:"model_name"`
		Rating   *float64 `json:"rating"`
		Category string   `json:"category"`
		Date     string   `json:"leaderboard_publish_date"`
	}
	latest := map[string]string{} // model|category -> date of the value kept
	byModel := map[string]*Observation{}
	var order []string
	for page, offset := 0, 0; ; page++ {
		if page == maxArenaPages {
			return nil, fmt.Errorf("research: lmarena: more than %d pages", maxArenaPages)
		}
		q := url.Values{"dataset": {s.Dataset}, "config": {s.Config}, "split": {s.Split},
			"offset": {strconv.Itoa(offset)}, "length": {strconv.Itoa(size)}}
		u := s.Cfg.URL
		if u != "" {
			u += "?" + q.Encode()
		}
		b, err := s.Get.Get(ctx, fmt.Sprintf("lmarena_rows.offset%d.json", offset), u, s.Cfg, nil)
		if err != nil {
			return nil, fmt.Errorf("research: lmarena: page at offset %d: %w", offset, err)
		}
		var doc struct {
			Rows []struct {
				Row row `json:"row"`
			} `json:"rows"`
			Total *int `json:"num_rows_total"`
		}
		if err := decodeJSON(b, &doc); err != nil {
			return nil, fmt.Errorf("research: lmarena: page at offset %d: %w", offset, err)
		}
		if doc.Total == nil || doc.Rows == nil {
			return nil, fmt.Errorf("research: lmarena: page at offset %d: not a datasets-server /rows response (no rows or num_rows_total)", offset)
		}
		for _, r := range doc.Rows {
			metric, ok := arenaCategories[r.Row.Category]
			if !ok || r.Row.Model == "" || r.Row.Rating == nil {
				continue
			}
			k := r.Row.Model + "|" + metric
			if d, seen := latest[k]; seen && d > r.Row.Date {
				continue
			}
			latest[k] = r.Row.Date
			o := byModel[r.Row.Model]
			if o == nil {
				o = &Observation{Name: r.Row.Model, Metrics: map[string]float64{}}
				byModel[r.Row.Model] = o
				order = append(order, r.Row.Model)
			}
			o.Metrics[metric] = *r.Row.Rating
		}
		offset += len(doc.Rows)
		if len(doc.Rows) == 0 || offset >= *doc.Total {
			break
		}
	}
	res := &Result{}
	for _, n := range order {
		res.Observations = append(res.Observations, *byModel[n])
	}
	return res, nil
}

// Aider reads the Aider polyglot leaderboard YAML.
type Aider struct {
	Cfg config.ResearchSource
	Get Getter
}

// Name implements Source.
func (s *Aider) Name() string { return "aider" }

var aiderModelFlag = regexp.MustCompile(`--model\s+(\S+)`)

// Fetch implements Source.
func (s *Aider) Fetch(ctx context.Context) (*Result, error) {
	b, err := s.Get.Get(ctx, "aider_polyglot_leaderboard.yml", s.Cfg.URL, s.Cfg, nil)
	if err != nil {
		return nil, fmt.Errorf("research: aider: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("research: aider: %w", errEmpty)
	}
	var items []struct {
		Model          string   `yaml:"model"`
		PassRate2      *float64 `yaml:"pass_rate_2"`
		TotalCost      *float64 `yaml:"total_cost"`
		SecondsPerCase *float64 `yaml:"seconds_per_case"`
		Command        string   `yaml:"command"`
		Date           string   `yaml:"date"`
	}
	if err := yaml.Unmarshal(b, &items); err != nil {
		return nil, fmt.Errorf("research: aider: malformed YAML: %w", err)
	}
	if len(items) == 0 {
		return nil, errors.New("research: aider: no leaderboard entries")
	}
	res := &Result{}
	idx := map[string]int{}
	dates := map[string]string{}
	for _, it := range items {
		if it.Model == "" || it.PassRate2 == nil || strings.Contains(it.Model, " + ") {
			continue // "o3 (high) + gpt-4.1" is an architect/editor pair, not one model
		}
		o := Observation{Name: it.Model, Metrics: map[string]float64{MetricAiderPolyglot: *it.PassRate2}}
		if it.TotalCost != nil && *it.TotalCost > 0 { // 0 means unknown
			o.Metrics[MetricAiderCost] = *it.TotalCost
		}
		if it.SecondsPerCase != nil && *it.SecondsPerCase > 0 {
			o.Metrics[MetricSecondsPerCase] = *it.SecondsPerCase
		}
		if m := aiderModelFlag.FindStringSubmatch(it.Command); m != nil {
			o.AltNames = []string{m[1]}
		}
		if i, ok := idx[it.Model]; ok { // the same model re-run: keep the newest
			if it.Date >= dates[it.Model] {
				res.Observations[i] = o
				dates[it.Model] = it.Date
			}
			continue
		}
		idx[it.Model] = len(res.Observations)
		dates[it.Model] = it.Date
		res.Observations = append(res.Observations, o)
	}
	return res, nil
}

// HTMLTable reads a leaderboard table from an HTML page: a CSS selector picks the
// table, header texts pick the columns, and cells like "51.6%" or "$14.41" are numbers.
type HTMLTable struct {
	Cfg config.HTMLTable
	Get Getter
}

// Name implements Source.
func (s *HTMLTable) Name() string { return "html:" + s.Cfg.Name }

// Fetch implements Source.
func (s *HTMLTable) Fetch(ctx context.Context) (*Result, error) {
	name := s.Name()
	b, err := s.Get.Get(ctx, "html_"+s.Cfg.Name+".html", s.Cfg.URL, s.Cfg.ResearchSource, nil)
	if err != nil {
		return nil, fmt.Errorf("research: %s: %w", name, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("research: %s: %w", name, errEmpty)
	}
	doc, err := goquery.NewDocumentFromReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("research: %s: parsing HTML: %w", name, err)
	}
	table := doc.Find(s.Cfg.Selector).First()
	if table.Length() == 0 {
		return nil, fmt.Errorf("research: %s: no element matches selector %q", name, s.Cfg.Selector)
	}
	col := map[int]string{}
	modelCol := -1
	table.Find("tr").First().Find("th,td").Each(func(i int, h *goquery.Selection) {
		text := strings.TrimSpace(h.Text())
		if strings.EqualFold(text, s.Cfg.ModelColumn) {
			modelCol = i
		}
		for header, metric := range s.Cfg.Columns {
			if strings.EqualFold(text, header) {
				col[i] = metric
			}
		}
	})
	if modelCol < 0 {
		return nil, fmt.Errorf("research: %s: table has no %q column", name, s.Cfg.ModelColumn)
	}
	res := &Result{}
	table.Find("tr").Slice(1, goquery.ToEnd).Each(func(_ int, tr *goquery.Selection) {
		cells := tr.Find("td")
		if cells.Length() <= modelCol {
			return
		}
		o := Observation{Name: strings.TrimSpace(cells.Eq(modelCol).Text()), Metrics: map[string]float64{}}
		for i, metric := range col {
			if v, ok := parseNumber(cells.Eq(i).Text()); ok {
				o.Metrics[metric] = v
			}
		}
		if o.Name != "" {
			res.Observations = append(res.Observations, o)
		}
	})
	if len(res.Observations) == 0 {
		return nil, fmt.Errorf("research: %s: table has no rows", name)
	}
	return res, nil
}

// NanoGPT reads what the NanoGPT backend serves and at what price
// (/api/v1/models?detailed=true) and which models the subscription covers.
type NanoGPT struct {
	Models, Subscription config.ResearchSource
	APIKey               string
	Get                  Getter
}

// Name implements Source.
func (s *NanoGPT) Name() string { return "nanogpt" }

// Fetch implements Source. A failing subscription list costs the subscription flags,
// not the model list.
func (s *NanoGPT) Fetch(ctx context.Context) (*Result, error) {
	h := http.Header{}
	if s.APIKey != "" {
		h.Set("Authorization", "Bearer "+s.APIKey)
	}
	b, err := s.Get.Get(ctx, "nanogpt_models.json", s.Models.URL, s.Models, h)
	if err != nil {
		return nil, fmt.Errorf("research: nanogpt: models: %w", err)
	}
	var doc struct {
		Data []struct {
			ID            string `json:"id"`
			ContextLength int    `json:"context_length"`
			Pricing       *struct {
				Prompt     float64 `json:"prompt"`
				Completion float64 `json:"completion"`
			} `json:"pricing"`
		} `json:"data"`
	}
	if err := decodeJSON(b, &doc); err != nil {
		return nil, fmt.Errorf("research: nanogpt: models: %w", err)
	}
	if len(doc.Data) == 0 {
		return nil, errors.New("research: nanogpt: models: the list is empty")
	}
	sub := map[string]bool{}
	var subErr error
	if s.Subscription.Enabled {
		sb, err := s.Get.Get(ctx, "nanogpt_subscription_models.json", s.Subscription.URL, s.Subscription, h)
		var sdoc struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err == nil {
			err = decodeJSON(sb, &sdoc)
		}
		if err != nil {
			subErr = fmt.Errorf("research: nanogpt: subscription models: %w", err)
		}
		for _, m := range sdoc.Data {
			sub[m.ID] = true
		}
	}
	res := &Result{}
	for _, m := range doc.Data {
		if m.ID == "" {
			continue
		}
		o := Offer{Backend: "nanogpt", Model: m.ID, ContextWindow: m.ContextLength, Subscription: sub[m.ID]}
		if m.Pricing != nil {
			o.PricePerMTok = blended(m.Pricing.Prompt, m.Pricing.Completion)
			o.Free = o.PricePerMTok == 0
		}
		res.Offers = append(res.Offers, o)
	}
	for id := range sub {
		res.Subscription = append(res.Subscription, id)
	}
	return res, subErr
}

// Vertex lists the Gemini models configured for the Vertex backend.
type Vertex struct{ Models []string }

// Name implements Source.
func (s *Vertex) Name() string { return "vertex" }

// Fetch implements Source.
func (s *Vertex) Fetch(context.Context) (*Result, error) {
	if len(s.Models) == 0 {
		return nil, errors.New("research: vertex: no models configured (research.vertex_models)")
	}
	res := &Result{}
	for _, m := range s.Models {
		res.Offers = append(res.Offers, Offer{Backend: "vertex", Model: m})
	}
	return res, nil
}
