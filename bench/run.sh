#!/usr/bin/env bash
# bench/run.sh: the load benchmark (make load). Builds the proxy, the mock upstream, the
# floor (httputil.ReverseProxy) and the vegeta-based driver; starts mock, floor and proxy on
# loopback; measures all three in one run; prints a markdown table and writes it, with the
# raw numbers, to bench/results/<UTC timestamp>/. Everything it starts is stopped on exit.
#
# Settings (environment): BENCH_DURATION (per phase, default 8s), BENCH_TTFB_DURATION
# (default 4s), BENCH_PORT (first of three loopback ports, default 18481).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dur=${BENCH_DURATION:-8s}
ttfb_dur=${BENCH_TTFB_DURATION:-4s}
port=${BENCH_PORT:-18481}
mock_addr=127.0.0.1:$port
floor_addr=127.0.0.1:$((port + 1))
proxy_addr=127.0.0.1:$((port + 2))

out=
tmp=$(mktemp -d "${TMPDIR:-/tmp}/nanogpt-bench.XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ -n "${out:-}" ] && [ -d "$out" ]; then
		cp "$tmp/mock.log" "$tmp/floor.log" "$out/" 2>/dev/null || true
		grep -m20 -E 'level=(WARN|ERROR)' "$tmp/proxy.log" >"$out/proxy-warnings.log" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building (proxy, mock, floor, load driver) ..." >&2
go build -o "$tmp/nanogpt-proxy" .
(cd bench && go build -o "$tmp/mock" ./mock && go build -o "$tmp/floor" ./floor && go build -o "$tmp/load" ./load)

# shellcheck source=bench/lib.sh
. bench/lib.sh

start_mock "$tmp/mock" "$mock_addr" "$tmp/mock.log"

"$tmp/floor" -addr "$floor_addr" -upstream "http://$mock_addr" 2>"$tmp/floor.log" &
pids+=($!)
floor_pid=$!
wait_ready "http://$floor_addr/served" floor

start_proxy "$tmp/nanogpt-proxy" "$proxy_addr" "$mock_addr" "$tmp" "$tmp/proxy.log"

out="bench/results/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "running: $dur per phase, results in $out ..." >&2
# In the background, so that a signal runs the trap at once instead of after the driver.
timeout 600 "$tmp/load" -direct "http://$mock_addr" -floor "http://$floor_addr" -proxy "http://$proxy_addr" \
	-mock-pid "$mock_pid" -floor-pid "$floor_pid" -proxy-pid "$proxy_pid" \
	-testdata testdata -out "$out" -duration "$dur" -ttfb-duration "$ttfb_dur" >"$out/table.md" 2>"$out/phases.log" &
pids+=($!)
wait $!
cat "$out/phases.log" >&2
cat "$out/table.md"
echo "proxy log lines: $(wc -l <"$tmp/proxy.log"); warnings/errors: $(grep -c -E 'level=(WARN|ERROR)' "$tmp/proxy.log" || true)" | tee -a "$out/table.md"
cp "$out/table.md" bench/results/latest.md
