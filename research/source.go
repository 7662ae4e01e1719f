// Package research owns the monthly model research: the data sources (public
// benchmarks, catalogs and the backends' own model lists), matching model names across
// them, scoring models per role, rewriting the rankings file atomically (keeping the
// previous version) and reloading the router, the in-process cron scheduler, and the
// run state shown by the admin API and /status.
package research

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/config"
)

// Metric names an observation may carry. Higher is better except where noted.
const (
	MetricAAIntelligence    = "aa_intelligence"             // Artificial Analysis intelligence index (via OpenRouter)
	MetricAACoding          = "aa_coding"                   // Artificial Analysis coding index
	MetricAAAgentic         = "aa_agentic"                  // Artificial Analysis agentic index
	MetricArenaOverall      = "arena_overall"               // LMArena Elo
	MetricArenaCoding       = "arena_coding"                // LMArena Elo
	MetricArenaMath         = "arena_math"                  // LMArena Elo
	MetricArenaHardPrompts  = "arena_hard_prompts"          // LMArena Elo
	MetricArenaInstructions = "arena_instruction_following" // LMArena Elo
	MetricArenaCreative     = "arena_creative_writing"      // LMArena Elo
	MetricAiderPolyglot     = "aider_polyglot"              // percent of cases solved
	MetricAiderCost         = "aider_cost"                  // USD for the run; lower is better
	MetricSecondsPerCase    = "seconds_per_case"            // lower is better (speed)
	MetricPrice             = "price_per_mtok"              // blended USD per 1M tokens; lower is better
)

// Observation is what one source says about one model name.
type Observation struct {
	// Name is the name as the source spells it.
	Name string `json:"name"`
	// AltNames are further names of the same entry (e.g. Aider's --model id).
	AltNames []string `json:"alt_names,omitempty"`
	// Metrics by metric name.
	Metrics map[string]float64 `json:"metrics"`
	// ContextWindow in tokens, 0 when unknown.
	ContextWindow int `json:"context_window,omitempty"`
	// Free reports a free variant (price 0).
	Free bool `json:"free,omitempty"`
}

// Offer is a model a backend serves: only offered models are eligible for rankings.
type Offer struct {
	Backend       string  `json:"backend"`
	Model         string  `json:"model"`
	ContextWindow int     `json:"context_window,omitempty"`
	Subscription  bool    `json:"subscription,omitempty"`
	PricePerMTok  float64 `json:"price_per_mtok,omitempty"` // blended; 0 unknown or free
	Free          bool    `json:"free,omitempty"`
}

// Result is what one source returned.
type Result struct {
	Observations []Observation
	Offers       []Offer
	// Subscription lists model ids a subscription covers (NanoGPT).
	Subscription []string
}

// Source is one place research reads from.
type Source interface {
	// Name is the short name used in status, logs and model "sources".
	Name() string
	// Fetch reads and parses the source. Errors name the source and the problem.
	Fetch(ctx context.Context) (*Result, error)
}

// Getter fetches one document. name is a stable file name for the document (used by
// the saved-files getter of the CLI); url is where it lives on the network.
type Getter interface {
	Get(ctx context.Context, name, url string, s config.ResearchSource, header http.Header) ([]byte, error)
}

// HTTPGetter fetches over HTTP with per-source timeout, size limit, retries with
// backoff and a descriptive User-Agent.
type HTTPGetter struct {
	Client    *http.Client
	UserAgent string
	// Sleep waits between retries; nil means a timer honouring ctx.
	Sleep func(ctx context.Context, d time.Duration) error
}

// ErrTooLarge is returned when a response exceeds the source's size limit.
var ErrTooLarge = errors.New("response exceeds the size limit")

type statusError struct {
	code int
	body string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.code, e.body)
}

// Get implements Getter.
func (g *HTTPGetter) Get(ctx context.Context, name, url string, s config.ResearchSource, header http.Header) ([]byte, error) {
	if url == "" {
		return nil, errors.New("no URL configured")
	}
	sleep := g.Sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	backoff := s.Backoff
	var err error
	for attempt := 0; attempt <= s.Retries; attempt++ {
		if attempt > 0 {
			// Full jitter keeps many proxies from hitting a source in step.
			d := backoff/2 + rand.N(backoff/2+1)
			if serr := sleep(ctx, d); serr != nil {
				return nil, errors.Join(err, serr)
			}
			backoff *= 2
		}
		var b []byte
		b, err = g.once(ctx, url, s, header)
		if err == nil {
			return b, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("after %d attempts: %w", s.Retries+1, err)
}

func retryable(err error) bool {
	var se *statusError
	if errors.As(err, &se) {
		return se.code == 429 || se.code >= 500
	}
	return !errors.Is(err, ErrTooLarge)
}

func (g *HTTPGetter) once(ctx context.Context, url string, s config.ResearchSource, header http.Header) ([]byte, error) {
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("User-Agent", g.UserAgent)
	req.Header.Set("Accept", "application/json, application/yaml, text/html;q=0.9, */*;q=0.5")
	client := g.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := readLimited(resp.Body, s.MaxBytes)
	if resp.StatusCode != http.StatusOK {
		snippet := string(b)
		if len(snippet) > 200 {
			snippet = snippet[:200] + "…"
		}
		return nil, &statusError{code: resp.StatusCode, body: snippet}
	}
	if err != nil {
		return nil, fmt.Errorf("reading body: %w", err)
	}
	return b, nil
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	if limit <= 0 {
		return io.ReadAll(r)
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return b, err
	}
	if int64(len(b)) > limit {
		return b[:limit], fmt.Errorf("%w of %d bytes", ErrTooLarge, limit)
	}
	return b, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DirGetter reads saved documents from a directory instead of the network: document
// name N is the file DIR/N (the CLI's --sources-dir).
type DirGetter struct{ Dir string }

// Get implements Getter.
func (d DirGetter) Get(_ context.Context, name, _ string, s config.ResearchSource, _ http.Header) ([]byte, error) {
	f, err := os.Open(filepath.Join(d.Dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readLimited(f, s.MaxBytes)
}

// parseNumber reads "51.6%", "$14.41", "1,234", "0.5"; ok is false for "?", "-", "".
func parseNumber(s string) (float64, bool) {
	clean := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '$', '%', ',', ' ', '\t', '\n':
		default:
			clean = append(clean, c)
		}
	}
	f, err := strconv.ParseFloat(string(clean), 64)
	if err != nil {
		return 0, false
	}
	return f, true
}
