package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nanogpt-proxy/nanogpt-proxy/backends"
	"github.com/nanogpt-proxy/nanogpt-proxy/roles"
	"github.com/nanogpt-proxy/nanogpt-proxy/storage"
)

// Candidate is one backend+model to try, in order.
type Candidate struct {
	Backend string
	Model   string
	// Reason says why this candidate is on the list (for logs and explain mode).
	Reason string
	// Subscription reports that the model is covered by the NanoGPT subscription, so a
	// served request counts against the quota.
	Subscription bool
}

// Request is what selection needs to know of a request.
type Request struct {
	Role roles.Role
	// Model is the client's model: "auto", "auto:<role>" or a model id.
	Model string
	// Profile names the profile; empty means the configured default.
	Profile string
	// ConversationID is the conversation key; a conversation stays on the model that
	// served it while that model is healthy. Empty: no stickiness.
	ConversationID string
}

// Config configures a Router. The zero value of every optional field has a documented
// default.
type Config struct {
	// RankingsPath is the rankings file; when it does not exist the embedded default is used.
	RankingsPath string
	// Default is the embedded rankings.
	Default []byte
	// Enabled reports whether a backend is configured; disabled backends are skipped.
	// nil: every backend.
	Enabled func(backend string) bool
	// Profiles are the selectable profiles (nil: DefaultProfiles).
	Profiles []Profile
	// DefaultProfile is used when a request names none (default "personal").
	DefaultProfile string
	// ExplicitFallback lets a request for an explicit model fall back to its role's
	// chain when that model fails. Default false: an explicit model is the only candidate.
	ExplicitFallback bool
	// Circuit configures the circuit breaker.
	Circuit CircuitConfig
	// StickyTTL is how long a conversation stays pinned after its last request (default 2h);
	// StickyMax bounds the number of pinned conversations (default 10000).
	StickyTTL time.Duration
	StickyMax int
	// Quota is the NanoGPT subscription quota; nil: none.
	Quota *Quota
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Router selects candidates. It is safe for concurrent use; the rankings are swapped
// atomically, so a request sees the old or the new rankings, never a mix.
type Router struct {
	cfg      Config
	log      *slog.Logger
	mu       sync.Mutex // serialises reloads and recompiles
	cur      atomic.Pointer[compiled]
	source   atomic.Value // string: where the rankings came from
	stamp    fileStamp    // guarded by mu
	circuits circuits
	sticky   *sticky
	catalog  atomic.Pointer[map[string]modelRef]
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// New loads the rankings (file if present, else the embedded default) and returns a Router.
func New(cfg Config, log *slog.Logger) (*Router, error) {
	if cfg.Enabled == nil {
		cfg.Enabled = func(string) bool { return true }
	}
	if cfg.Profiles == nil {
		cfg.Profiles = DefaultProfiles()
	}
	if err := validateProfiles(cfg.Profiles); err != nil {
		return nil, err
	}
	if cfg.DefaultProfile == "" {
		cfg.DefaultProfile = cfg.Profiles[0].Name
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Circuit.defaults()
	r := &Router{cfg: cfg, log: log, sticky: newSticky(cfg.StickyTTL, cfg.StickyMax)}
	if _, ok := r.profileIndex(cfg.DefaultProfile); !ok {
		return nil, fmt.Errorf("routing: default profile %q is not defined", cfg.DefaultProfile)
	}
	if cfg.Quota != nil {
		cfg.Quota.onChange = r.recompile
	}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Router) profileIndex(name string) (int, bool) {
	for i, p := range r.cfg.Profiles {
		if p.Name == name {
			return i, true
		}
	}
	return 0, false
}

// Reload re-reads the rankings file. An invalid file is rejected and the rankings in
// force stay; the error names the problem.
func (r *Router) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloadLocked()
}

func (r *Router) reloadLocked() error {
	b, src, err := r.read()
	if err != nil {
		return err
	}
	rk, err := ParseRankings(b)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	r.cur.Store(r.compile(rk))
	r.source.Store(src)
	return nil
}

// recompile rebuilds the selection tables from the rankings in force (after the
// subscription list changed).
func (r *Router) recompile() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cp := r.cur.Load(); cp != nil {
		r.cur.Store(r.compile(cp.rk))
	}
}

func (r *Router) read() ([]byte, string, error) {
	if r.cfg.RankingsPath != "" {
		b, err := os.ReadFile(r.cfg.RankingsPath)
		if err == nil {
			if fi, err := os.Stat(r.cfg.RankingsPath); err == nil {
				r.stamp = fileStamp{fi.ModTime(), fi.Size()}
			}
			return b, r.cfg.RankingsPath, nil
		}
		if !os.IsNotExist(err) {
			return nil, r.cfg.RankingsPath, fmt.Errorf("routing: reading rankings: %w", err)
		}
	}
	if len(r.cfg.Default) == 0 {
		return nil, "", fmt.Errorf("routing: no rankings file at %q and no embedded default", r.cfg.RankingsPath)
	}
	return r.cfg.Default, "embedded", nil
}

// Watch reloads the rankings whenever the file's modification time or size changes,
// checking on every tick until ctx ends. An invalid file is logged with its problem and
// ignored; the last good rankings stay in force.
func (r *Router) Watch(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			r.checkFile()
		}
	}
}

// checkFile reloads the rankings file if it changed; it reports whether it tried.
func (r *Router) checkFile() bool {
	if r.cfg.RankingsPath == "" {
		return false
	}
	fi, err := os.Stat(r.cfg.RankingsPath)
	if err != nil {
		return false // gone or unreadable: keep what is in force
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := fileStamp{fi.ModTime(), fi.Size()}
	if st == r.stamp {
		return false
	}
	r.stamp = st
	if err := r.reloadLocked(); err != nil {
		r.log.Error("rankings file rejected; the rankings in force stay", "path", r.cfg.RankingsPath, "err", err)
		return true
	}
	rk := r.cur.Load().rk
	r.log.Info("rankings reloaded", "path", r.cfg.RankingsPath, "version", rk.Version, "updated_at", rk.UpdatedAt)
	return true
}

// Rankings returns the rankings in force.
func (r *Router) Rankings() *Rankings { return r.cur.Load().rk }

// Source says where the rankings in force came from (a path or "embedded").
func (r *Router) Source() string { s, _ := r.source.Load().(string); return s }

// SetCatalog records the models a backend serves, so explicit ids that no ranking names
// still reach the right backend.
func (r *Router) SetCatalog(backend string, ids []string) {
	for {
		old := r.catalog.Load()
		m := map[string]modelRef{}
		if old != nil {
			for k, v := range *old {
				m[k] = v
			}
		}
		for _, id := range ids {
			m[strings.ToLower(id)] = modelRef{backend, id}
		}
		if r.catalog.CompareAndSwap(old, &m) {
			return
		}
	}
}

// ParseAlias reports whether model is "auto" or "auto:<role>"; role is empty for plain
// "auto". An unknown role after "auto:" is an error.
func ParseAlias(model string) (role roles.Role, isAlias bool, err error) {
	if model == "auto" {
		return "", true, nil
	}
	if rest, ok := strings.CutPrefix(model, "auto:"); ok {
		role, ok := roles.Parse(rest)
		if !ok {
			return "", true, &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
				Message: fmt.Sprintf("The model %q does not exist: unknown role %q (valid roles: %s)", model, rest, roles.List())}
		}
		return role, true, nil
	}
	return "", false, nil
}

// Select returns the candidates for req in the order they should be tried: the role's
// ranking ordered by the profile, models near or over the quota moved back or dropped,
// benched models left out, and the conversation's model first while it is healthy.
// It allocates only the returned slice.
func (r *Router) Select(req Request) ([]Candidate, error) {
	cp := r.cur.Load()
	pname := req.Profile
	if pname == "" {
		pname = r.cfg.DefaultProfile
	}
	pi, ok := cp.profileIdx[pname]
	if !ok {
		return nil, r.unknownProfile(pname)
	}
	now := r.cfg.Now()
	level := r.cfg.Quota.levelAt(now)
	role, isAlias, err := ParseAlias(req.Model)
	if err != nil {
		return nil, err
	}
	if isAlias {
		if req.Role != "" {
			role = req.Role
		}
		return r.forRole(cp, pi, role, req.ConversationID, level, now, make([]Candidate, 0, cp.maxLen+1))
	}
	return r.explicit(cp, pi, req, level, now)
}

func (q *Quota) levelAt(now time.Time) int {
	if q == nil {
		return quotaOK
	}
	return q.level(now)
}

func (r *Router) explicit(cp *compiled, pi int, req Request, level int, now time.Time) ([]Candidate, error) {
	backend, model, ok := r.resolveModel(cp, req.Model)
	if !ok {
		return nil, &backends.APIError{Status: 404, Type: "invalid_request_error", Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model %q does not exist or is not routable. Use \"auto\", \"auto:<role>\", a model from GET /v1/models, or prefix a model id with \"nanogpt/\" or \"vertex/\".", req.Model)}
	}
	p := cp.profiles[pi]
	if !p.allows(backend) {
		return nil, &backends.APIError{Status: 400, Type: "invalid_request_error", Code: "backend_excluded", Param: "model",
			Message: fmt.Sprintf("The profile %q excludes the %s backend, which serves %q. Use another profile (X-Profile) or model.", p.Name, backend, req.Model)}
	}
	if !r.cfg.Enabled(backend) {
		return nil, unavailable(backend)
	}
	c := Candidate{Backend: backend, Model: model, Reason: "explicit model", Subscription: cp.isSubscription(backend, model)}
	overQuota := c.Subscription && level == quotaExhausted
	if !r.cfg.ExplicitFallback {
		if overQuota {
			return nil, r.quotaError(now)
		}
		return []Candidate{c}, nil
	}
	out := make([]Candidate, 0, cp.maxLen+1)
	if !overQuota {
		out = append(out, c)
	}
	return r.forRole(cp, pi, req.Role, "", level, now, out)
}

// forRole appends the role's candidates to out (which may hold an explicit model).
func (r *Router) forRole(cp *compiled, pi int, role roles.Role, conv string, level int, now time.Time, out []Candidate) ([]Candidate, error) {
	t := &cp.tables[pi][roleIndex(role)]
	list := t.normal
	if level != quotaOK {
		list = t.near
	}
	nowNS := now.UnixNano()
	cool := r.cfg.Circuit.Cooldown
	if conv != "" && len(out) == 0 {
		if sc, ok := r.sticky.get(conv, nowNS); ok && cp.profiles[pi].allows(sc.Backend) && r.cfg.Enabled(sc.Backend) &&
			!(sc.Subscription && level != quotaOK) && r.circuits.get(sc.Backend, sc.Model).available(nowNS, cool) {
			sc.Reason = "conversation stays on its model"
			out = append(out, sc)
		}
	}
	first := len(out)
	benched, quotaDropped := false, false
	for i := range list {
		rt := &list[i]
		if level == quotaExhausted && rt.c.Subscription {
			quotaDropped = true
			continue
		}
		if contains(out, rt.c) {
			continue
		}
		if !rt.circ.available(nowNS, cool) {
			benched = true
			continue
		}
		out = append(out, rt.c)
	}
	if len(out) == first && benched {
		// Every candidate is benched: try them anyway rather than fail without trying.
		for i := range list {
			if rt := &list[i]; !(level == quotaExhausted && rt.c.Subscription) && !contains(out, rt.c) {
				out = append(out, rt.c)
			}
		}
	}
	if len(out) == 0 {
		if quotaDropped {
			return nil, r.quotaError(now)
		}
		return nil, r.noCandidate(cp, pi, role)
	}
	return out, nil
}

func contains(cs []Candidate, c Candidate) bool {
	for i := range cs {
		if cs[i].Backend == c.Backend && cs[i].Model == c.Model {
			return true
		}
	}
	return false
}

func (r *Router) noCandidate(cp *compiled, pi int, role roles.Role) error {
	p := cp.profiles[pi]
	for _, b := range KnownBackends {
		if p.allows(b) && !r.cfg.Enabled(b) {
			return unavailable(b)
		}
	}
	return &backends.APIError{Status: 503, Type: "server_error", Code: "no_candidate",
		Message: fmt.Sprintf("No model can serve role %s under profile %q: every ranked model is on a backend the profile excludes or that is not configured.", role, p.Name)}
}

func (r *Router) unknownProfile(name string) error {
	names := make([]string, len(r.cfg.Profiles))
	for i, p := range r.cfg.Profiles {
		names[i] = strconv.Quote(p.Name)
	}
	return &backends.APIError{Status: 400, Type: "invalid_request_error", Code: "invalid_profile",
		Message: fmt.Sprintf("Unknown profile %q: expected one of %s.", name, strings.Join(names, ", "))}
}

// quotaError is the 429 for a request that only subscription models could serve after
// the subscription ran out; clients are told not to retry.
func (r *Router) quotaError(now time.Time) error {
	msg, reset := r.cfg.Quota.exhaustedMessage(now)
	secs := int64(reset.Sub(now).Seconds()) + 1
	return &backends.APIError{Status: http.StatusTooManyRequests, Type: "insufficient_quota", Code: "quota_exceeded", NoRetry: true,
		RetryAfter: strconv.FormatInt(secs, 10),
		Message:    "Quota exhausted: " + msg + ", and no model outside the subscription is available for this request under the current profile."}
}

// resolveModel maps an explicit model id to its backend: a "nanogpt/" or "vertex/" prefix
// forces one; otherwise the rankings, then the backend catalogs and the subscription's
// model list say which backend serves it.
func (r *Router) resolveModel(cp *compiled, model string) (backend, id string, ok bool) {
	for _, b := range KnownBackends {
		if rest, found := strings.CutPrefix(model, b+"/"); found && rest != "" {
			return b, rest, true
		}
	}
	if ref, found := cp.rk.lookup(model); found {
		return ref.backend, ref.id, true
	}
	if c := r.catalog.Load(); c != nil {
		if ref, found := (*c)[strings.ToLower(model)]; found {
			return ref.backend, ref.id, true
		}
	}
	if cp.covered[strings.ToLower(model)] {
		return "nanogpt", model, true
	}
	// Google's own spelling of a Gemini id ("google/gemini-2.5-pro") addresses Vertex.
	if rest, found := strings.CutPrefix(model, "google/"); found && strings.HasPrefix(rest, "gemini") {
		if ref, ok := cp.rk.lookup(rest); ok {
			return ref.backend, ref.id, true
		}
		return "vertex", rest, true
	}
	return "", "", false
}

func unavailable(backend string) *backends.APIError {
	msg := fmt.Sprintf("The %s backend is not configured.", backend)
	switch backend {
	case "nanogpt":
		msg = "The NanoGPT backend is disabled: NANOGPT_API_KEY is not set. Set it and restart the proxy."
	case "vertex":
		msg = "The Vertex AI backend is disabled: VERTEX_PROJECT_ID is not set."
	}
	return &backends.APIError{Status: 503, Type: "server_error", Code: "backend_not_configured", Message: msg}
}

// Observe records the outcome of one upstream attempt: a success closes the model's
// circuit and counts against the quota when the model is on the subscription; a failure
// that says something about the upstream counts towards opening the circuit, and a
// Retry-After benches the model for that long.
func (r *Router) Observe(c Candidate, err error, latency time.Duration) {
	now := r.cfg.Now()
	circ := r.circuits.get(c.Backend, c.Model)
	if err == nil {
		circ.success()
		if c.Subscription {
			r.cfg.Quota.CountRequest(now)
		}
		return
	}
	counts, ra := healthFailure(err, now)
	if !counts {
		return
	}
	was := circ.state.Load()
	if ra > 0 {
		circ.bench(now.UnixNano(), ra, err, r.cfg.Circuit)
	} else {
		circ.failure(now.UnixNano(), err, r.cfg.Circuit)
	}
	if was != circuitOpen && circ.state.Load() == circuitOpen {
		r.log.Warn("circuit opened: model benched", "backend", c.Backend, "model", c.Model,
			"until", time.Unix(0, circ.until.Load()).UTC().Format(time.RFC3339), "err", err)
	}
}

// Pin keeps the conversation on c, the candidate that just served it.
func (r *Router) Pin(conversationID string, c Candidate) {
	if conversationID != "" {
		r.sticky.put(conversationID, c, r.cfg.Now().UnixNano())
	}
}

// CountUsage counts the tokens of committed usage rows against the quota (when the
// quota's unit is tokens). It is meant for storage.UsageWriter.OnCommit.
func (r *Router) CountUsage(rows []storage.Usage) {
	q := r.cfg.Quota
	if q == nil || q.Unit() != "tokens" {
		return
	}
	cp := r.cur.Load()
	for _, u := range rows {
		if u.StatusCode == http.StatusOK && cp.isSubscription(u.Backend, u.Model) {
			q.CountTokens(u.TotalTokens, r.cfg.Now())
		}
	}
}

// Circuits reports every circuit the router knows, for /status.
func (r *Router) Circuits() []CircuitStatus { return r.circuits.status(r.cfg.Now()) }

// StatusSection is the router's part of /status: profiles, circuits and stickiness.
func (r *Router) StatusSection() any {
	cp := r.cur.Load()
	profiles := map[string]any{}
	for pi, p := range cp.profiles {
		order := map[string][]string{}
		for ri, role := range roles.All {
			for _, rt := range cp.tables[pi][ri].normal {
				order[string(role)] = append(order[string(role)], rt.c.Backend+"/"+rt.c.Model)
			}
		}
		profiles[p.Name] = order
	}
	return map[string]any{
		"default_profile":        r.cfg.DefaultProfile,
		"circuits":               r.Circuits(),
		"sticky_conversations":   r.sticky.len(),
		"explicit_fallback":      r.cfg.ExplicitFallback,
		"candidates_per_profile": profiles,
	}
}

// FirstChoices returns, for every profile, the candidate ("backend/model") a request of
// role tries first when every backend is healthy and the quota has room: what the rankings
// in force mean for each profile (research reports it beside a ranking change).
func (r *Router) FirstChoices(role roles.Role) map[string]string {
	cp := r.cur.Load()
	ri := slices.Index(roles.All, role)
	if ri < 0 {
		return nil
	}
	out := make(map[string]string, len(cp.profiles))
	for pi, p := range cp.profiles {
		if n := cp.tables[pi][ri].normal; len(n) > 0 {
			out[p.Name] = n[0].c.Backend + "/" + n[0].c.Model
		}
	}
	return out
}

// Catalog returns the models routable by explicit id beyond the rankings (backend
// catalogs and the subscription's list), id -> backend.
func (r *Router) Catalog() map[string]string {
	out := map[string]string{}
	cp := r.cur.Load()
	if c := r.catalog.Load(); c != nil {
		for _, ref := range *c {
			out[ref.id] = ref.backend
		}
	}
	for id := range cp.covered {
		if _, ranked := cp.rk.lookup(id); !ranked && !hasFold(out, id) {
			out[id] = "nanogpt"
		}
	}
	for id := range out {
		if _, ranked := cp.rk.lookup(id); ranked {
			delete(out, id)
		}
	}
	return out
}

func hasFold(m map[string]string, id string) bool {
	for k := range m {
		if strings.EqualFold(k, id) {
			return true
		}
	}
	return false
}

// IsSubscription reports whether model on backend is covered by the NanoGPT subscription.
func (r *Router) IsSubscription(backend, model string) bool {
	return r.cur.Load().isSubscription(backend, model)
}
