# bench/lib.sh: what bench/run.sh and bench/ab.sh share, sourced by both: waiting for a
# server, starting the mock upstream, and starting the proxy the way the benchmark
# measures it. The callers keep the started pids in their array `pids` and stop them.

wait_ready() { # url name
	for _ in $(seq 1 100); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "bench: $2 did not come up at $1 (port busy? set BENCH_PORT)" >&2
	return 1
}

# start_mock BIN ADDR LOG: the mock NanoGPT answering with the testdata fixtures; sets mock_pid.
start_mock() {
	"$1" -addr "$2" -json testdata/nanogpt/chat-completion.json \
		-sse testdata/nanogpt/chat-stream-text.sse 2>"$3" &
	mock_pid=$!
	pids+=("$mock_pid")
	wait_ready "http://$2/served" mock
}

# start_proxy BIN ADDR MOCK_ADDR HOME LOG: the proxy's binary with its defaults: full
# pipeline, usage rows in SQLite under HOME, one log line per request (to LOG). The
# monthly quota is raised: a run sends more than the default 60,000 requests, and a 429
# after it would measure the quota, not the proxy. Sets proxy_pid.
start_proxy() {
	env -u CONFIG_PATH -u MODEL_ROUTING_PATH -u PROMPT_STRATEGIES_PATH -u VERTEX_PROJECT_ID \
		HOME="$4" HOST=127.0.0.1 PORT="${2##*:}" DB_PATH="$4/db/usage.db" \
		NANOGPT_API_KEY=bench-key NANOGPT_BASE_URL="http://$3/v1" NANOGPT_MONTHLY_QUOTA=1000000000 \
		"$1" 2>"$5" &
	proxy_pid=$!
	pids+=("$proxy_pid")
	wait_ready "http://$2/health" proxy
}
