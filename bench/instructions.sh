#!/usr/bin/env bash
# bench/instructions.sh — instructions stepgate executes per request, counted by valgrind's
# callgrind: a deterministic figure (repeat runs agree within ~1%) for comparing two builds
# on a machine whose timings are noisy (a shared VM) or that exposes no hardware counters
# to `perf stat`.
#
# It runs each stepgate binary under callgrind against a held bench (`HOLD=1 bench/load.sh`
# in another shell: its config, store and signed-in session), twice: once answering one
# request, once answering N more; the difference divided by N is the cost of one request,
# with start-up left out. (One-time work a first request triggers, such as building the
# user-agent parser's tables, still lands in the second run: keep N large.)
#
# Usage: bench/instructions.sh [BINARY...]   (default: target/release/stepgate, or with
#        TARGET=hyper-proxy target/release/examples/bare_proxy)
# env: N=5000 requests; TARGET=proxy|forward-auth|hyper-proxy; BENCH_DIR (default: the newest
#      held bench);
#      SETTLE=5 seconds left for background start-up work before counting
# Needs: valgrind (installed with apt when missing), curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-5000}"
TARGET="${TARGET:-proxy}"
BENCH_DIR="${BENCH_DIR:-$(ls -dt /tmp/stepgate-bench.* 2>/dev/null | head -1)}"
if [ -z "$BENCH_DIR" ] || [ ! -f "$BENCH_DIR/targets.env" ]; then
  echo "instructions: no held bench; start \`HOLD=1 bench/load.sh\` first" >&2
  exit 2
fi
command -v valgrind >/dev/null 2>&1 || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
# shellcheck disable=SC1091
source "$BENCH_DIR/targets.env"
case "$TARGET" in
  proxy) URL=$PROXY_URL; HEADERS=("${PROXY_HEADERS[@]}") ;;
  forward-auth) URL=$FA_URL; HEADERS=("${FA_HEADERS[@]}") ;;
  # The bare hyper proxy (crates/server/examples/bare_proxy.rs), sent the proxy's request
  # (its Host and session cookie) so that both parse the same bytes: stepgate's proxy over
  # this is what stepgate's own work costs (DESIGN.md §6: CPU per request <= 1.3x).
  hyper-proxy) URL=$BARE_URL; HEADERS=("${PROXY_HEADERS[@]}") ;;
  *) echo "instructions: TARGET must be proxy, forward-auth or hyper-proxy, got '$TARGET'" >&2; exit 2 ;;
esac
HEADERS+=(-H "User-Agent: ${UA:-Mozilla/5.0}")
WORK="$(mktemp -d /tmp/stepgate-instr.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
# N requests on one keep-alive connection, each read to its end (a fixed count: wrk's
# duration-bound runs are not).
cat >"$WORK/drive.py" <<'PY'
import http.client, sys, urllib.parse
n, url, headers = int(sys.argv[1]), urllib.parse.urlsplit(sys.argv[2]), {}
for pair in sys.argv[3:]:
    k, v = pair.split(": ", 1)
    headers[k] = v
host = headers.pop("Host", url.netloc)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
for _ in range(n):
    conn.request("GET", url.path or "/", headers={"Host": host, **headers})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"instructions: answer {r.status}, expected 200")
PY
# The held server listens on the port the runs need: it is stopped for them.
if [ "$TARGET" = hyper-proxy ]; then
  kill "$BARE_PID" 2>/dev/null || true
  HELD=bare_proxy
else
  kill "$STEPGATE_PID" 2>/dev/null || true
  HELD=stepgate
fi
sleep 0.5

# Total instructions of one run of $1 that answers 1 + $2 requests.
run() {
  local bin=$1 extra=$2 pid
  local cmd=("$bin" serve --config "$BENCH_DIR/stepgate.yaml")
  if [ "$TARGET" = hyper-proxy ]; then
    cmd=("$bin" "${BARE_URL#http://}" "${HELLO_URL#http://}")
    cmd=("${cmd[@]%/}")
  fi
  STEPGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" \
    "${cmd[@]}" >>"$WORK/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    curl -fs -o /dev/null "${HEADERS[@]}" "$URL" && break
    sleep 0.2
  done
  # Start-up work that runs in the background (the user-agent parser's tables) must end
  # in both runs, or it lands in the difference.
  sleep "${SETTLE:-5}"
  if [ "$extra" -gt 0 ]; then
    local args=() i
    for ((i = 1; i < ${#HEADERS[@]}; i += 2)); do args+=("${HEADERS[i]}"); done
    python3 "$WORK/drive.py" "$extra" "$URL" "${args[@]}"
  fi
  # stepgate ends on SIGINT and callgrind writes its counts at exit. The bare proxy has no
  # handler (and a background job of a script ignores SIGINT): its counts so far are
  # dumped with `callgrind_control -d` (to cg.PID.1), then it gets SIGTERM (cg.PID then
  # holds what ran after the dump).
  if [ "$TARGET" = hyper-proxy ]; then
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid"
  else
    kill -INT "$pid"
  fi
  wait "$pid" 2>/dev/null || true
  # Every file's total (a dump's, and what ran after it until the end), added up.
  awk 'FNR == 1 { got = 0 } !got && /^(summary|totals):/ { s += $2; got = 1 } END { if (s) print s }' "$WORK"/cg.*
  rm -f "$WORK"/cg.*
}

if [ $# -eq 0 ]; then
  if [ "$TARGET" = hyper-proxy ]; then set -- target/release/examples/bare_proxy; else set -- target/release/stepgate; fi
fi
for bin in "$@"; do
  base="$(run "$bin" 0)"
  loaded="$(run "$bin" "$N")"
  if [ -z "$base" ] || [ -z "$loaded" ]; then
    echo "instructions: callgrind wrote no counts for $bin; the end of its log:" >&2
    tail -5 "$WORK/serve.log" >&2
    exit 1
  fi
  echo "$bin: $(( (loaded - base) / N )) instructions per $TARGET request ($N requests)"
done
echo "instructions: the held $HELD was stopped; restart the bench to use it again"
