// Command load is the benchmark driver: with vegeta's attacker it sends the same chat
// requests to the mock directly, to the floor (httputil.ReverseProxy) and to the proxy,
// phase by phase and target by target, and measures latency at fixed rates, maximum
// throughput with 64 connections, streaming time to first byte, CPU time per request and
// peak RSS (from /proc). It prints a markdown table and writes results.json and
// results.md to -out.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type target struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	PID  int    `json:"pid,omitempty"`
}

// phaseResult is one (body, phase, target) measurement.
type phaseResult struct {
	Body     string  `json:"body"`
	Phase    string  `json:"phase"`
	Target   string  `json:"target"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	RPS      float64 `json:"rps"`
	// CPUus is the target process's utime+stime during the phase per request, in µs;
	// UserCPUus its utime alone (the rest is the kernel's work for it: system calls, the
	// loopback TCP stack).
	CPUus     float64 `json:"cpu_us_per_req,omitempty"`
	UserCPUus float64 `json:"user_cpu_us_per_req,omitempty"`
	// PeakRSSKiB is the target process's VmHWM during the phase (reset before it);
	// PeakAnonKiB the largest anonymous part of its RSS (RssAnon: heap, stacks, the C
	// allocator) sampled every 20 ms: the rest is mapped files, mostly the binary's own
	// code and read-only data.
	PeakRSSKiB  int64    `json:"peak_rss_kib,omitempty"`
	PeakAnonKiB int64    `json:"peak_anon_kib,omitempty"`
	ErrorMsg    []string `json:"error_samples,omitempty"`
}

type report struct {
	Date      string            `json:"date"`
	Machine   string            `json:"machine"`
	Duration  string            `json:"phase_duration"`
	Bodies    map[string]int    `json:"body_bytes"`
	Results   []phaseResult     `json:"results"`
	PeakRSS   map[string]int64  `json:"peak_rss_kib"`
	Extra     map[string]string `json:"extra,omitempty"`
	targets   []target
	bodyOrder []string
}

func main() {
	direct := flag.String("direct", "http://127.0.0.1:18481", "mock base URL")
	floor := flag.String("floor", "http://127.0.0.1:18482", "floor base URL")
	proxy := flag.String("proxy", "http://127.0.0.1:18483", "proxy base URL")
	floorPID := flag.Int("floor-pid", 0, "floor process id (for CPU and RSS)")
	proxyPID := flag.Int("proxy-pid", 0, "proxy process id (for CPU and RSS)")
	mockPID := flag.Int("mock-pid", 0, "mock process id (for RSS)")
	testdata := flag.String("testdata", "../testdata", "testdata directory")
	out := flag.String("out", "results", "results directory")
	dur := flag.Duration("duration", 8*time.Second, "duration of each fixed-rate and max-throughput phase")
	ttfbDur := flag.Duration("ttfb-duration", 4*time.Second, "duration of each streaming phase")
	only := flag.String("targets", "direct,floor,proxy", "comma-separated targets to measure (for profiling runs)")
	bodyList := flag.String("bodies", "small,roo-60k", "comma-separated bodies to use")
	phaseList := flag.String("phases", "rate500,rate2000,max64,stream", "comma-separated phases to run")
	writeFixture := flag.String("write-fixture", "", "write the ~60 KB body (non-streaming) to this file and exit (refreshes testdata/bench/roo-code-60k.json for the Go benchmarks)")
	flag.Parse()

	bodies, err := makeBodies(*testdata)
	if err != nil {
		log.Fatal(err)
	}
	if *writeFixture != "" {
		if err := os.WriteFile(*writeFixture, bodies["roo-60k"].json, 0o644); err != nil {
			log.Fatal(err)
		}
		return
	}
	load0 := loadavg()
	rep := &report{
		Date:     time.Now().UTC().Format(time.RFC3339),
		Machine:  machine(),
		Duration: dur.String(),
		Bodies:   map[string]int{},
		PeakRSS:  map[string]int64{},
		Extra:    map[string]string{},
		targets: []target{
			{Name: "direct", URL: *direct, PID: *mockPID},
			{Name: "floor", URL: *floor, PID: *floorPID},
			{Name: "proxy", URL: *proxy, PID: *proxyPID},
		},
		bodyOrder: strings.Split(*bodyList, ","),
	}
	rep.targets = slices.DeleteFunc(rep.targets, func(t target) bool { return !slices.Contains(strings.Split(*only, ","), t.Name) })
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, name := range rep.bodyOrder {
		b := bodies[name]
		rep.Bodies[name] = len(b.json)
		_ = os.WriteFile(filepath.Join(*out, "body-"+name+".json"), b.json, 0o644)
	}

	phases := strings.Split(*phaseList, ",")
	for _, bname := range rep.bodyOrder {
		b := bodies[bname]
		for _, t := range rep.targets {
			attack(t, b.json, vegeta.Rate{Freq: 200, Per: time.Second}, time.Second, 0) // warm-up
		}
		for _, ph := range []struct {
			name string
			rate int
		}{{"rate500", 500}, {"rate2000", 2000}, {"max64", 0}} {
			if !slices.Contains(phases, ph.name) {
				continue
			}
			for _, t := range rep.targets {
				settle()
				resetHWM(t.PID)
				anon := sampleAnon(t.PID)
				user0, cpu0 := cpuTicks(t.PID)
				r := attack(t, b.json, vegeta.Rate{Freq: ph.rate, Per: time.Second}, *dur, 64)
				r.UserCPUus, r.CPUus = cpuPerReq(t.PID, user0, cpu0, r.Requests)
				r.PeakRSSKiB, r.PeakAnonKiB = vmHWM(t.PID), anon()
				r.Body, r.Phase, r.Target = bname, ph.name, t.Name
				rep.Results = append(rep.Results, r)
				log.Printf("%-8s %-8s %-6s req=%d err=%d p50=%.0fµs p99=%.0fµs rps=%.0f cpu=%.1fµs/req user=%.1fµs/req rss=%.1fMiB anon=%.1fMiB",
					bname, ph.name, t.Name, r.Requests, r.Errors, r.P50us, r.P99us, r.RPS, r.CPUus, r.UserCPUus, float64(r.PeakRSSKiB)/1024,
					float64(r.PeakAnonKiB)/1024)
			}
		}
		for _, t := range rep.targets {
			if !slices.Contains(phases, "stream") {
				break
			}
			settle()
			resetHWM(t.PID)
			anon := sampleAnon(t.PID)
			user0, cpu0 := cpuTicks(t.PID)
			r := ttfb(t, b.stream, 200, *ttfbDur)
			r.UserCPUus, r.CPUus = cpuPerReq(t.PID, user0, cpu0, r.Requests)
			r.PeakRSSKiB, r.PeakAnonKiB = vmHWM(t.PID), anon()
			r.Body, r.Phase, r.Target = bname, "stream", t.Name
			rep.Results = append(rep.Results, r)
			log.Printf("%-8s %-8s %-6s req=%d err=%d ttfb p50=%.0fµs p99=%.0fµs rss=%.1fMiB anon=%.1fMiB", bname, "stream", t.Name, r.Requests, r.Errors,
				r.P50us, r.P99us, float64(r.PeakRSSKiB)/1024, float64(r.PeakAnonKiB)/1024)
		}
	}
	for _, r := range rep.Results {
		rep.PeakRSS[r.Target] = max(rep.PeakRSS[r.Target], r.PeakRSSKiB)
	}
	if st, err := get(*proxy + "/status"); err == nil {
		var s struct {
			Usage struct {
				Writer json.RawMessage `json:"writer"`
			} `json:"usage"`
		}
		if json.Unmarshal(st, &s) == nil && len(s.Usage.Writer) > 0 {
			rep.Extra["proxy_usage_writer"] = string(s.Usage.Writer)
		}
	}

	rep.Extra["loadavg_start"], rep.Extra["loadavg_end"] = load0, loadavg()
	md := rep.markdown()
	fmt.Print(md)
	js, _ := json.MarshalIndent(rep, "", "  ")
	_ = os.WriteFile(filepath.Join(*out, "results.json"), js, 0o644)
	_ = os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644)
}

func settle() {
	runtime.GC()
	time.Sleep(500 * time.Millisecond)
}

type body struct{ json, stream []byte }

// makeBodies builds the two request bodies: a small one (roo-code-one-shot.json) and a
// Roo-Code-sized one (~60 KB: roo-code-code-first-turn.json with its system prompt and
// tool list padded the way a real Roo Code workspace grows them).
func makeBodies(dir string) (map[string]body, error) {
	load := func(name string) (map[string]any, error) {
		b, err := os.ReadFile(filepath.Join(dir, "clients", name))
		if err != nil {
			return nil, err
		}
		var m map[string]any
		return m, json.Unmarshal(b, &m)
	}
	out := map[string]body{}
	small, err := load("roo-code-one-shot.json")
	if err != nil {
		return nil, err
	}
	out["small"], err = variants(small)
	if err != nil {
		return nil, err
	}
	big, err := load("roo-code-code-first-turn.json")
	if err != nil {
		return nil, err
	}
	msgs := big["messages"].([]any)
	sys := msgs[0].(map[string]any)
	base := sys["content"].(string)
	tools := big["tools"].([]any)
	origTools := slices.Clone(tools)
	// System prompt to ~36 KB: Roo Code adds custom instructions, rules files and the
	// workspace file list after its own sections.
	var sb strings.Builder
	sb.WriteString(base)
	for i := 1; sb.Len() < 36_000; i++ {
		fmt.Fprintf(&sb, "\n\n====\n\nRULES FROM .roo/rules/%02d.md\n\n%s", i, base)
	}
	sys["content"] = sb.String()
	// Tools to ~60 KB total: the same tool shapes under MCP-style names.
	for i := 1; ; i++ {
		b, _ := json.Marshal(big)
		if len(b) >= 60_000 {
			break
		}
		for _, t := range origTools {
			c := deepCopy(t).(map[string]any)
			fn := c["function"].(map[string]any)
			fn["name"] = fmt.Sprintf("mcp_server%d_%s", i, fn["name"])
			tools = append(tools, c)
			big["tools"] = tools
			if b, _ := json.Marshal(big); len(b) >= 60_000 {
				break
			}
		}
	}
	out["roo-60k"], err = variants(big)
	return out, err
}

func deepCopy(v any) any {
	b, _ := json.Marshal(v)
	var c any
	_ = json.Unmarshal(b, &c)
	return c
}

// variants returns the body as a non-streaming request and as a streaming one that asks
// for usage (as Roo Code does).
func variants(m map[string]any) (body, error) {
	m = deepCopy(m).(map[string]any)
	m["stream"] = false
	delete(m, "stream_options")
	j, err := json.Marshal(m)
	if err != nil {
		return body{}, err
	}
	m["stream"] = true
	m["stream_options"] = map[string]any{"include_usage": true}
	s, err := json.Marshal(m)
	return body{json: j, stream: s}, err
}

// attack runs vegeta against t at rate for d. Rate 0 means as fast as maxConns
// connections allow.
func attack(t target, b []byte, rate vegeta.Rate, d time.Duration, maxConns int) phaseResult {
	opts := []func(*vegeta.Attacker){
		vegeta.KeepAlive(true),
		vegeta.Timeout(10 * time.Second),
		vegeta.Connections(1024),
		vegeta.Redirects(vegeta.NoFollow),
		vegeta.MaxBody(512),
	}
	if rate.Freq == 0 {
		opts = append(opts, vegeta.Workers(uint64(maxConns)), vegeta.MaxWorkers(uint64(maxConns)), vegeta.MaxConnections(maxConns))
	}
	a := vegeta.NewAttacker(opts...)
	tg := vegeta.NewStaticTargeter(vegeta.Target{
		Method: http.MethodPost, URL: t.URL + "/v1/chat/completions", Body: b,
		Header: http.Header{"Content-Type": {"application/json"}, "Authorization": {"Bearer client-key"}},
	})
	var lat []time.Duration
	var r phaseResult
	var first, last time.Time
	for res := range a.Attack(tg, rate, d, t.Name) {
		r.Requests++
		if res.Code != http.StatusOK || res.Error != "" {
			r.Errors++
			if len(r.ErrorMsg) < 3 {
				r.ErrorMsg = append(r.ErrorMsg, fmt.Sprintf("%d %s %.120s", res.Code, res.Error, res.Body))
			}
			continue
		}
		end := res.End()
		if first.IsZero() || res.Timestamp.Before(first) {
			first = res.Timestamp
		}
		if end.After(last) {
			last = end
		}
		lat = append(lat, res.Latency)
	}
	a.Stop()
	r.P50us, r.P99us = pct(lat, 0.50), pct(lat, 0.99)
	if w := last.Sub(first).Seconds(); w > 0 {
		r.RPS = float64(len(lat)) / w
	}
	return r
}

func pct(d []time.Duration, q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(q*float64(len(d)-1) + 0.5)
	return float64(d[i].Nanoseconds()) / 1e3
}

// ttfb sends streaming requests at rate per second for d and measures the time from
// sending each request to the first byte of the response body. A stream that does not
// end with [DONE] counts as an error.
func ttfb(t target, b []byte, rate int, d time.Duration) phaseResult {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var mu sync.Mutex
	var r phaseResult
	var lat []time.Duration
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	sem := make(chan struct{}, 256)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			lt, err := oneStream(client, t.URL+"/v1/chat/completions", b)
			mu.Lock()
			defer mu.Unlock()
			r.Requests++
			if err != nil {
				r.Errors++
				if len(r.ErrorMsg) < 3 {
					r.ErrorMsg = append(r.ErrorMsg, err.Error())
				}
				return
			}
			lat = append(lat, lt)
		}()
	}
	wg.Wait()
	r.P50us, r.P99us = pct(lat, 0.50), pct(lat, 0.99)
	r.RPS = float64(len(lat)) / d.Seconds()
	return r
}

func oneStream(c *http.Client, url string, b []byte) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer client-key")
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil {
		return 0, err
	}
	first := time.Since(start)
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if !bytes.Contains(rest, []byte("data: [DONE]")) {
		return 0, fmt.Errorf("stream did not end with [DONE]")
	}
	return first, nil
}

// cpuTicks returns utime and utime+stime of pid in clock ticks (0 when pid is 0 or
// unreadable).
func cpuTicks(pid int) (user, total int64) {
	if pid <= 0 {
		return 0, 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// Fields after the command name (which is in parentheses and may hold spaces).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut, ut + st
}

// clkTck is USER_HZ, 100 on every Linux architecture Go supports.
const clkTck = 100

// cpuPerReq returns pid's user and total CPU time per request since user0 and total0 (in
// ticks), in µs.
func cpuPerReq(pid int, user0, total0 int64, n int) (user, total float64) {
	if pid <= 0 || n == 0 {
		return 0, 0
	}
	u, t := cpuTicks(pid)
	per := func(ticks int64) float64 { return float64(ticks) / clkTck * 1e6 / float64(n) }
	return per(u - user0), per(t - total0)
}

// resetHWM resets the peak resident set size of pid (VmHWM) so that the next reading is
// the peak of one phase (Linux: echo 5 > /proc/<pid>/clear_refs).
func resetHWM(pid int) {
	if pid > 0 {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// vmHWM returns the peak resident set size of pid in KiB.
func vmHWM(pid int) int64 { return statusKiB(pid, "VmHWM:") }

// statusKiB returns a KiB field of pid's /proc status (0: none).
func statusKiB(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// sampleAnon samples pid's anonymous resident memory (RssAnon) every 20 ms until the
// function it returns is called, which gives the largest sample in KiB.
func sampleAnon(pid int) func() int64 {
	if pid <= 0 {
		return func() int64 { return 0 }
	}
	stop, done := make(chan struct{}), make(chan int64)
	go func() {
		peak := statusKiB(pid, "RssAnon:")
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				peak = max(peak, statusKiB(pid, "RssAnon:"))
			case <-stop:
				done <- max(peak, statusKiB(pid, "RssAnon:"))
				return
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}

// loadavg returns the first three fields of /proc/loadavg: on a shared machine the
// neighbours' load explains noisy latencies.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (%s), %s/%s, %s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func get(url string) ([]byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func (rep *report) find(body, phase, tgt string) phaseResult {
	for _, r := range rep.Results {
		if r.Body == body && r.Phase == phase && r.Target == tgt {
			return r
		}
	}
	return phaseResult{}
}

func mark(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

// markdown renders the results: one row per metric and body, the three targets side by
// side, the proxy's figure against the floor and the target.
func (rep *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Date %s · machine: %s · %s per phase · bodies: small %d B, roo-60k %d B · load average at start %s, at end %s\n\n",
		rep.Date, rep.Machine, rep.Duration, rep.Bodies["small"], rep.Bodies["roo-60k"], rep.Extra["loadavg_start"], rep.Extra["loadavg_end"])
	b.WriteString("| metric | body | direct | floor | proxy | proxy vs floor | target | met |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---|---|\n")
	us := func(v float64) string { return fmt.Sprintf("%.0f µs", v) }
	sd := func(v float64) string { return fmt.Sprintf("%+.0f µs", v) }
	for _, bn := range rep.bodyOrder {
		d, f, p := rep.find(bn, "rate500", "direct"), rep.find(bn, "rate500", "floor"), rep.find(bn, "rate500", "proxy")
		fmt.Fprintf(&b, "| latency p50 @500 req/s | %s | %s | %s (%s) | %s (%s) | %s | ≤ +50 µs | %s |\n", bn,
			us(d.P50us), us(f.P50us), sd(f.P50us-d.P50us), us(p.P50us), sd(p.P50us-d.P50us), sd(p.P50us-f.P50us), mark(p.P50us-f.P50us <= 50))
		fmt.Fprintf(&b, "| latency p99 @500 req/s | %s | %s | %s (%s) | %s (%s) | %s | ≤ +500 µs | %s |\n", bn,
			us(d.P99us), us(f.P99us), sd(f.P99us-d.P99us), us(p.P99us), sd(p.P99us-d.P99us), sd(p.P99us-f.P99us), mark(p.P99us-f.P99us <= 500))
		d, f, p = rep.find(bn, "rate2000", "direct"), rep.find(bn, "rate2000", "floor"), rep.find(bn, "rate2000", "proxy")
		fmt.Fprintf(&b, "| latency p50 / p99 @2000 req/s | %s | %s / %s | %s / %s | %s / %s | %s / %s | – | |\n", bn,
			us(d.P50us), us(d.P99us), us(f.P50us), us(f.P99us), us(p.P50us), us(p.P99us), sd(p.P50us-f.P50us), sd(p.P99us-f.P99us))
		fmt.Fprintf(&b, "| errors @2000 req/s | %s | %d / %d | %d / %d | %d / %d | | 0 | %s |\n", bn,
			d.Errors, d.Requests, f.Errors, f.Requests, p.Errors, p.Requests, mark(p.Errors == 0))
		d, f, p = rep.find(bn, "max64", "direct"), rep.find(bn, "max64", "floor"), rep.find(bn, "max64", "proxy")
		ratio := 0.0
		if f.RPS > 0 {
			ratio = p.RPS / f.RPS
		}
		fmt.Fprintf(&b, "| max throughput, 64 conns | %s | %.0f req/s | %.0f req/s | %.0f req/s | %.0f %% | ≥ 90 %% | %s |\n", bn,
			d.RPS, f.RPS, p.RPS, ratio*100, mark(ratio >= 0.9))
		d, f, p = rep.find(bn, "stream", "direct"), rep.find(bn, "stream", "floor"), rep.find(bn, "stream", "proxy")
		fmt.Fprintf(&b, "| streaming TTFB p50 (200 req/s) | %s | %s | %s | %s | %s | ≤ +100 µs | %s |\n", bn,
			us(d.P50us), us(f.P50us), us(p.P50us), sd(p.P50us-f.P50us), mark(p.P50us-f.P50us <= 100))
		f, p = rep.find(bn, "rate2000", "floor"), rep.find(bn, "rate2000", "proxy")
		cr := 0.0
		if f.CPUus > 0 {
			cr = p.CPUus / f.CPUus
		}
		fmt.Fprintf(&b, "| CPU time / request @2000 req/s (of it user) | %s | – | %.0f µs (%.0f) | %.0f µs (%.0f) | %.2f× | ≤ 1.2× | %s |\n", bn,
			f.CPUus, f.UserCPUus, p.CPUus, p.UserCPUus, cr, mark(cr > 0 && cr <= 1.2))
	}
	for _, bn := range rep.bodyOrder {
		cols := map[string]string{}
		worst := map[string]int64{}
		for _, tg := range []string{"direct", "floor", "proxy"} {
			var parts, anon []string
			for _, ph := range []string{"rate500", "rate2000", "max64", "stream"} {
				r := rep.find(bn, ph, tg)
				parts = append(parts, fmt.Sprintf("%.0f", float64(r.PeakRSSKiB)/1024))
				anon = append(anon, fmt.Sprintf("%.0f", float64(r.PeakAnonKiB)/1024))
				worst[tg] = max(worst[tg], r.PeakRSSKiB)
			}
			cols[tg] = strings.Join(parts, " / ") + " (" + strings.Join(anon, " / ") + ")"
		}
		fmt.Fprintf(&b, "| peak RSS MiB @500 / @2000 / max64 / stream (of it anonymous) | %s | %s | %s | %s | | ≤ 40 MiB | %s |\n", bn,
			cols["direct"], cols["floor"], cols["proxy"], mark(worst["proxy"] > 0 && worst["proxy"] <= 40*1024))
	}
	fmt.Fprintf(&b, "| peak RSS, whole run | all | %.1f MiB | %.1f MiB | %.1f MiB | | ≤ 40 MiB | %s |\n",
		float64(rep.PeakRSS["direct"])/1024, float64(rep.PeakRSS["floor"])/1024, float64(rep.PeakRSS["proxy"])/1024,
		mark(rep.PeakRSS["proxy"] > 0 && rep.PeakRSS["proxy"] <= 40*1024))
	errs := 0
	for _, r := range rep.Results {
		if r.Target == "proxy" {
			errs += r.Errors
		}
	}
	fmt.Fprintf(&b, "\nProxy errors over all phases: %d.", errs)
	if w := rep.Extra["proxy_usage_writer"]; w != "" {
		fmt.Fprintf(&b, " Proxy usage writer after the run: `%s`.", w)
	}
	b.WriteString("\n")
	return b.String()
}
