#!/usr/bin/env bash
# bench/ab.sh: compares two builds of the proxy on phases of the load benchmark. One table
# from bench/run.sh moves by about ±10 % from run to run on a shared machine, more than
# most changes; here the two builds run interleaved (A, B, A, B, ...), each time freshly
# started against the same mock, so that the machine's drift hits both alike, and the
# medians are compared.
#
# Usage: bench/ab.sh A B
#   A, B: a git revision (built from a clean export of it), "." (the working tree's tracked
#   files, built the same way), or the path of a built binary. Binaries built elsewhere
#   differ in layout: one built in the working tree and one exported from the same commit
#   measured 5 MiB of peak RSS apart.
# Settings (environment): AB_RUNS (runs of each, default 3), AB_BODIES (default roo-60k),
# AB_PHASES (default rate2000,max64; also rate500, stream), AB_DURATION (per phase, 6s),
# BENCH_PORT (first of two loopback ports, default 18491).
set -euo pipefail

if [ $# -ne 2 ]; then
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${AB_RUNS:-3}
bodies=${AB_BODIES:-roo-60k}
phases=${AB_PHASES:-rate2000,max64}
dur=${AB_DURATION:-6s}
port=${BENCH_PORT:-18491}
mock_addr=127.0.0.1:$port
proxy_addr=127.0.0.1:$((port + 1))

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nanogpt-ab.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

build() { # what out
	if [ -f "$1" ] && [ -x "$1" ]; then
		cp "$1" "$2"
		return
	fi
	local src rev=$1
	if [ "$rev" = . ]; then
		rev=$(git stash create) # a commit of the working tree, which stays as it is
		rev=${rev:-HEAD}
	fi
	src=$(mktemp -d "$tmp/src.XXXXXX")
	git archive "$rev" | tar -x -C "$src"
	(cd "$src" && go build -o "$2" .)
}
echo "building A ($1), B ($2), mock and load driver ..." >&2
build "$1" "$tmp/A"
build "$2" "$tmp/B"
(cd bench && go build -o "$tmp/mock" ./mock && go build -o "$tmp/load" ./load)

# shellcheck source=bench/lib.sh
. bench/lib.sh

start_mock "$tmp/mock" "$mock_addr" "$tmp/mock.log"

# One run of build $1: the proxy as bench/run.sh starts it, fresh, then the driver.
run() {
	local home
	home=$(mktemp -d "$tmp/home.XXXXXX")
	start_proxy "$tmp/$1" "$proxy_addr" "$mock_addr" "$home" "$home/proxy.log"
	local pid=$proxy_pid
	"$tmp/load" -direct "http://$mock_addr" -floor "http://$proxy_addr" -proxy "http://$proxy_addr" \
		-mock-pid "$mock_pid" -floor-pid "$pid" -proxy-pid "$pid" -targets proxy \
		-bodies "$bodies" -phases "$phases" -testdata testdata -out "$home/out" \
		-duration "$dur" -ttfb-duration "$dur" 2>&1 | grep ' proxy ' | sed "s/^/$1 /"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	rm -rf "$home"
}

for i in $(seq 1 "$runs"); do
	for b in A B; do
		echo "run $i of $runs: $b" >&2
		run "$b" >>"$tmp/lines"
	done
done

# Lines: "A 2026/11/28 12:09:43 roo-60k rate2000 proxy req=.. err=.. p50=..µs p99=..µs rps=.. cpu=..µs/req user=..µs/req rss=..MiB anon=..MiB"
# (stream: "... ttfb p50=..µs p99=..µs rss=..MiB anon=..MiB"); rss is the phase's peak (VmHWM), anon
# the peak of its anonymous part (RssAnon).
# The table: the median of each number, A and B.
echo "A = $1, B = $2; $runs runs of each, interleaved, $dur per phase; medians (all runs in brackets)"
echo
echo "| body | phase | metric | A | B | B vs A |"
echo "|---|---|---|---:|---:|---:|"
awk '
function median(s,   a, n, i, j, t) {
	n = split(s, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	build = $1; body = $4; phase = $5
	for (i = 7; i <= NF; i++) {
		if (split($i, kv, "=") != 2) continue
		m = kv[1]; if (m == "req") continue
		v = kv[2]; gsub(/[^0-9.]/, "", v)
		if (m == "p50" || m == "p99") m = (phase == "stream" ? "TTFB " : "latency ") m " (µs)"
		else if (m == "cpu") m = "CPU per request (µs)"
		else if (m == "user") m = "of it user (µs)"
		else if (m == "rps") m = "req/s"
		else if (m == "rss") m = "peak RSS (MiB)"
		else if (m == "anon") m = "of it anonymous (MiB)"
		else if (m == "err") m = "errors"
		k = body SUBSEP phase SUBSEP m
		if (!(k in seen)) { seen[k] = 1; order[++n] = k }
		vals[k, build] = vals[k, build] (vals[k, build] == "" ? "" : " ") v
	}
}
END {
	for (o = 1; o <= n; o++) {
		k = order[o]; split(k, p, SUBSEP)
		a = median(vals[k, "A"]); b = median(vals[k, "B"])
		d = (a + 0 != 0) ? sprintf("%+.1f %%", (b - a) * 100 / a) : "–"
		printf "| %s | %s | %s | %s [%s] | %s [%s] | %s |\n", p[1], p[2], p[3], a, vals[k, "A"], b, vals[k, "B"], d
	}
}' "$tmp/lines"
