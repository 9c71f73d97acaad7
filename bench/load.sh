#!/usr/bin/env bash
# bench/load.sh — stepgate's HTTP throughput against a bare hyper server, a bare hyper reverse
# proxy and a tuned nginx, on loopback, every target measured REPEATS times interleaved
# (DESIGN.md §6):
#
#   1. hello          a bare hyper "200 OK" server (crates/server/examples/hello.rs)
#   2. nginx          nginx as a reverse proxy to hello, tuned as a production nginx would be:
#                     `reuseport` listeners, `keepalive_requests 100000` to clients and to the
#                     upstream (it never reconnects where the Rust servers do not), kept
#                     upstream connections, no access log
#   3. stepgate-proxy stepgate's reverse proxy to hello, with a valid session cookie
#   4. forward-auth   stepgate's /_stepgate/auth/forward with a valid session cookie (allow)
#   5. hyper-proxy    a reverse proxy of bare hyper (server + kept client connections, one event
#                     loop per core, nothing else; crates/server/examples/bare_proxy.rs): the
#                     floor for any proxy built on stepgate's HTTP stack, so stepgate's own cost
#                     (proxy vs hyper-proxy) shows apart from the stack's (hyper-proxy vs nginx)
#   6. baseline-proxy, baseline-forward-auth (with BASELINE=/path/to/another/stepgate): the
#                     same two through another stepgate binary (an older build), run with the
#                     same configuration and a copy of the same store and key, so that one run
#                     quotes a change's cost as new/baseline
#
# It signs in through the portal itself (password + TOTP, computed here) to get the session,
# checks every target answers 200 before measuring, and prints for each target the median
# and min–max over the repeats of requests/s, p99 latency and the server's own CPU time per
# request (user + system from /proc before and after each run), then the ratios the targets
# are stated in, computed from the medians.
#
# Usage: bench/load.sh
# env: THREADS=2 CONNS=32 DURATION=10s LAT_DURATION=5s REPEATS=3 BASE_PORT=19400 ASSERTION=on
#      SESSIONS=100000 ROTATE=1000 BASELINE= BUILD=1
# BUILD=0 uses the release binaries already in the target directory instead of building
# them (e.g. to hold a bench for bench/instructions.sh while the next build runs).
# HOLD=1 signs in, checks the targets, writes the URLs, headers and process ids to
# $WORK/targets.env (the path is printed) and waits until interrupted, instead of
# measuring: for profiling by hand (perf record -p <pid>) against a known-good session.
# Needs: wrk, nginx, curl, python3 (wrk and nginx are installed with apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS="${THREADS:-2}"
CONNS="${CONNS:-32}"
DURATION="${DURATION:-10s}"
LAT_DURATION="${LAT_DURATION:-5s}"
# Each target runs REPEATS times, the targets interleaved (all once, then all again, ...,
# each round starting one target further on), so that a burst of load from elsewhere on a
# shared machine lands on every target rather than on one.
REPEATS="${REPEATS:-3}"
# The many-sessions pass: wrk cycles through ROTATE sessions of the bench user; then SESSIONS
# more sessions (also the bench user's, so that they can be requested) are added to the store
# and the same ROTATE sessions, and ROTATE drawn evenly from the added ones, are measured
# again (SESSIONS=0 skips the pass).
SESSIONS="${SESSIONS:-100000}"
ROTATE="${ROTATE:-1000}"
BASE_PORT="${BASE_PORT:-19400}"
# ASSERTION=off measures without the signed identity assertion (an ES256 signature per
# allowed request).
ASSERTION="${ASSERTION:-on}"
# BASELINE=/path/to/stepgate: another stepgate binary measured alongside (see above).
#
# STORE=postgres runs stepgate on PostgreSQL (durable) and Redis (hot state) instead of the
# embedded SQLite store — STEPGATE_TEST_POSTGRES_URL / STEPGATE_TEST_REDIS_URL, by default
# the machine's own, in a schema and key prefix of the run's, dropped at the end — for the
# multi-node capacity figures (docs/deploy.md); with SESSIONS > 0 it also prints how much
# Redis and PostgreSQL grew while the SESSIONS sessions were added. (STORE=sqlite prints the
# SQLite file's growth.) Not with BASELINE.
BASELINE="${BASELINE:-}"
STORE="${STORE:-sqlite}"
PG="${STEPGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS="${STEPGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
RUN="bench$$"
case "$STORE" in
  sqlite) ;;
  postgres)
    if [ -n "$BASELINE" ]; then echo "bench: STORE=postgres does not run with BASELINE" >&2; exit 2; fi
    for tool in psql redis-cli; do
      command -v "$tool" >/dev/null 2>&1 || { echo "bench: STORE=postgres needs $tool" >&2; exit 2; }
    done ;;
  *) echo "bench: STORE=$STORE: expected sqlite or postgres" >&2; exit 2 ;;
esac
HELLO_PORT=$((BASE_PORT))
NGINX_PORT=$((BASE_PORT + 1))
SG_PORT=$((BASE_PORT + 2))
BARE_PORT=$((BASE_PORT + 3))
BASELINE_PORT=$((BASE_PORT + 4))
APP_HOST=app.bench.test
PORTAL_HOST=auth.bench.test

if [ -n "$BASELINE" ] && [ ! -x "$BASELINE" ]; then
  echo "bench: BASELINE=$BASELINE is not an executable stepgate binary" >&2
  exit 2
fi
if ! [ "$REPEATS" -ge 1 ] 2>/dev/null; then
  echo "bench: REPEATS=$REPEATS: expected a whole number, at least 1" >&2
  exit 2
fi

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"

if [ "${BUILD:-1}" = 0 ]; then
  echo "bench: BUILD=0: using the release binaries already built"
else
  echo "bench: building stepgate and the hello server (release)"
  if ! cargo build --quiet --release -p stepgate --bin stepgate -p stepgate-server \
    --example hello --example seed_sessions --example bare_proxy; then
    echo "bench: the build failed (if crates/server is in the middle of a change, retry later)" >&2
    exit 1
  fi
fi
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
STEPGATE="$TARGET_DIR/release/stepgate"
HELLO="$TARGET_DIR/release/examples/hello"
SEED="$TARGET_DIR/release/examples/seed_sessions"
BARE="$TARGET_DIR/release/examples/bare_proxy"

WORK="$(mktemp -d -t stepgate-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$STORE" = postgres ]; then
    psql "$PG" -q -c "DROP SCHEMA IF EXISTS \"$RUN\" CASCADE" >/dev/null 2>&1 || true
    redis-cli -u "$REDIS" --scan --pattern "$RUN:*" | xargs -r -n 1000 redis-cli -u "$REDIS" DEL >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Whether something accepts connections on port $1 of 127.0.0.1.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
  for _ in $(seq 1 100); do
    listening "$1" && return 0
    sleep 0.1
  done
  echo "bench: nothing is listening on port $1" >&2
  return 1
}

# Every port must be free before anything starts: a server another run left behind (an
# interrupted bench, a profile under valgrind) would answer in place of the one started
# here, and the run would fail later for a reason it could not name (the sign-in's TOTP
# step refused by the other server's store).
ports=("$HELLO_PORT" "$NGINX_PORT" "$SG_PORT" "$BARE_PORT")
[ -n "$BASELINE" ] && ports+=("$BASELINE_PORT")
for port in "${ports[@]}"; do
  if listening "$port"; then
    echo "bench: port $port (BASE_PORT=$BASE_PORT + $((port - BASE_PORT))) is already taken:" >&2
    (ss -ltnp "sport = :$port" 2>/dev/null || true) | tail -n +2 >&2
    echo "bench: stop what listens there, or choose other ports with BASE_PORT" >&2
    exit 2
  fi
done

# 1. The bare hyper server.
"$HELLO" "127.0.0.1:$HELLO_PORT" >"$WORK/hello.log" 2>&1 &
HELLO_PID=$!
PIDS+=("$HELLO_PID")

# 2. nginx as a reverse proxy to it, tuned: one listening socket per worker (`reuseport`: the
# kernel spreads connections across workers without an accept mutex, as stepgate and the bare
# proxy spread them across their event loops), connections to clients and to the upstream
# kept for 100,000 requests (the default of 1,000 would reconnect every few hundred
# milliseconds at these rates, where the Rust servers never do), enough kept upstream
# connections for every client connection, no access log, no version header.
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
worker_rlimit_nofile 65536;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 75s;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream hello {
        server 127.0.0.1:$HELLO_PORT;
        keepalive 128;
        keepalive_requests 100000;
        keepalive_timeout 75s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
        location / {
            proxy_pass http://hello;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
user_directive=""
[ "$(id -u)" = 0 ] && user_directive="user root;"
"$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" \
  -g "daemon off; pid $WORK/nginx/nginx.pid; $user_directive" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

# 5. The bare hyper reverse proxy to it.
"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$HELLO_PORT" >"$WORK/bare_proxy.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")

# 3./4. stepgate with one app in front of hello and a user with a known TOTP seed.
"$STEPGATE" secrets generate-key >"$WORK/secret.key"
write_config() { # port
  cat <<EOF
server:
  listen: 127.0.0.1:$1
  public_url: http://$PORTAL_HOST:$1
  data_dir: data
  trusted_proxies: [127.0.0.1]
secrets:
  key_file: secret.key
sessions:
  cookie: { secure: false, domain: bench.test }
apps:
  - id: hello
    hosts: [$APP_HOST]
    upstream: http://127.0.0.1:$HELLO_PORT
gateway:
  assertion: { enabled: $([ "$ASSERTION" = off ] && echo false || echo true) }
policies:
  - name: staff-with-mfa
    priority: 10
    outcome: { step_up: { min_aal: 2 } }
  - name: sign-in-mfa
    priority: 20
    targets: { sign_in: true }
    outcome: { step_up: { min_aal: 2 } }
EOF
  if [ "$STORE" = postgres ]; then
    cat <<EOF
store:
  postgres: { url: "$PG", schema: $RUN }
  redis: { url: "$REDIS", key_prefix: "$RUN:" }
EOF
  fi
}
write_config "$SG_PORT" >"$WORK/stepgate.yaml"
PASSWORD="Quartz lantern 7 drifts over the harbour"
printf '%s\n' "$PASSWORD" | "$STEPGATE" user add bench --email bench@bench.test --group staff \
  --password-stdin --config "$WORK/stepgate.yaml" >/dev/null
TOTP_KEY="$("$STEPGATE" user enroll-totp bench --no-qr --config "$WORK/stepgate.yaml" | sed -n 's/^key: //p')"
STEPGATE_LOG=warn "$STEPGATE" serve --config "$WORK/stepgate.yaml" >"$WORK/stepgate.log" 2>&1 &
SG_PID=$!
PIDS+=("$SG_PID")

wait_port "$HELLO_PORT"
wait_port "$NGINX_PORT"
wait_port "$SG_PORT"
wait_port "$BARE_PORT"

# Sign in through the portal like a browser: password, then the TOTP code.
SESSION="$(SG_PORT="$SG_PORT" APP_HOST="$APP_HOST" PORTAL_HOST="$PORTAL_HOST" \
  PASSWORD="$PASSWORD" TOTP_KEY="$TOTP_KEY" python3 - <<'PY'
import base64, hashlib, hmac, html, http.client, os, re, struct, sys, time
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

port = int(os.environ["SG_PORT"])
app, portal = os.environ["APP_HOST"], os.environ["PORTAL_HOST"]
cookies = {}

def request(method, host, path, headers=None, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Host": f"{host}:{port}", "Accept": "text/html"}
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    h.update(headers or {})
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    for v in r.headers.get_all("Set-Cookie") or []:
        for k, m in SimpleCookie(v).items():
            cookies[k] = m.value
    return r.status, r.getheader("Location"), r.read().decode()

def field(page, name):
    m = re.search(r'name="%s" value="([^"]*)"' % name, page)
    if not m:
        sys.exit(f"bench: no {name} field in the portal page")
    return html.unescape(m.group(1))

def totp(key_b32):
    key = base64.b32decode(key_b32.upper() + "=" * (-len(key_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    o = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7FFFFFFF) % 1000000)

form = {"Content-Type": "application/x-www-form-urlencoded"}
status, login, _ = request("GET", portal, "/_stepgate/auth/forward", {
    "X-Forwarded-Host": f"{app}:{port}", "X-Forwarded-Uri": "/", "X-Forwarded-Proto": "http",
    "X-Forwarded-Method": "GET"})
assert status == 302 and login, f"expected a redirect to the portal, got {status}"
u = urlsplit(login)
_, _, page = request("GET", portal, f"{u.path}?{u.query}")
status, step, _ = request("POST", portal, "/_stepgate/login", form, urlencode({
    "csrf": field(page, "csrf"), "t": field(page, "t"), "username": "bench",
    "password": os.environ["PASSWORD"]}))
assert status in (302, 303) and step and "/step-up" in step, f"password step: {status} {step}"
u = urlsplit(step)
_, _, page = request("GET", portal, f"{u.path}?{u.query}")
status, back, _ = request("POST", portal, "/_stepgate/step-up/totp", form, urlencode({
    "csrf": field(page, "csrf"), "t": field(page, "t"), "code": totp(os.environ["TOTP_KEY"])}))
assert status in (302, 303), f"TOTP step: {status} {back}"
print(cookies["stepgate_session"])
PY
)"
COOKIE="stepgate_session=$SESSION"

# 6. The baseline stepgate: the same configuration on its own port, a consistent copy of the
# store taken now (it holds the session just signed in) and the same key, so the same cookie
# is valid there.
BASELINE_PID=""
if [ -n "$BASELINE" ]; then
  mkdir -p "$WORK/baseline/data"
  cp "$WORK/secret.key" "$WORK/baseline/secret.key"
  write_config "$BASELINE_PORT" >"$WORK/baseline/stepgate.yaml"
  python3 - "$WORK/data/stepgate.db" "$WORK/baseline/data/stepgate.db" <<'PY'
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
src.close()
PY
  STEPGATE_LOG=warn "$BASELINE" serve --config "$WORK/baseline/stepgate.yaml" \
    >"$WORK/baseline.log" 2>&1 &
  BASELINE_PID=$!
  PIDS+=("$BASELINE_PID")
  wait_port "$BASELINE_PORT"
fi

FA_URL="http://127.0.0.1:$SG_PORT/_stepgate/auth/forward"
FA_HEADERS=(-H "Cookie: $COOKIE" -H "X-Forwarded-Method: GET" -H "X-Forwarded-Proto: http"
  -H "X-Forwarded-Host: $APP_HOST:$SG_PORT" -H "X-Forwarded-Uri: /")
PROXY_HEADERS=(-H "Host: $APP_HOST:$SG_PORT" -H "Cookie: $COOKIE")
BASELINE_FA_URL="http://127.0.0.1:$BASELINE_PORT/_stepgate/auth/forward"
# Every measured request carries a browser's User-Agent, as real traffic does (stepgate
# reads it for the policy's user-agent conditions; without one that work is skipped).
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

# The targets: name → server process(es) for the CPU figure, URL, wrk arguments.
TARGETS=(hello nginx hyper-proxy stepgate-proxy forward-auth)
[ -n "$BASELINE" ] && TARGETS+=(baseline-proxy baseline-forward-auth)
target_pids() {
  case "$1" in
    hello) echo "$HELLO_PID" ;;
    nginx) echo "$NGINX_PID" ;;
    hyper-proxy) echo "$BARE_PID" ;;
    stepgate-proxy | forward-auth | proxy-* | fa-*) echo "$SG_PID" ;;
    baseline-*) echo "$BASELINE_PID" ;;
  esac
}
# Sets URL and ARGS for a target.
target_request() {
  case "$1" in
    hello) URL="http://127.0.0.1:$HELLO_PORT/"; ARGS=() ;;
    nginx) URL="http://127.0.0.1:$NGINX_PORT/"; ARGS=() ;;
    hyper-proxy) URL="http://127.0.0.1:$BARE_PORT/"; ARGS=() ;;
    stepgate-proxy) URL="http://127.0.0.1:$SG_PORT/"; ARGS=("${PROXY_HEADERS[@]}") ;;
    forward-auth) URL="$FA_URL"; ARGS=("${FA_HEADERS[@]}") ;;
    baseline-proxy) URL="http://127.0.0.1:$BASELINE_PORT/"; ARGS=("${PROXY_HEADERS[@]}") ;;
    baseline-forward-auth) URL="$BASELINE_FA_URL"; ARGS=("${FA_HEADERS[@]}") ;;
    proxy-rotating*) URL="http://127.0.0.1:$SG_PORT/"; ARGS=(-s "$WORK/rotate.lua" -H "Host: $APP_HOST:$SG_PORT") ;;
    fa-rotating*) URL="$FA_URL"; ARGS=(-s "$WORK/rotate.lua" "${FA_HEADERS[@]:2}") ;;
    proxy-added) URL="http://127.0.0.1:$SG_PORT/"; ARGS=(-s "$WORK/added.lua" -H "Host: $APP_HOST:$SG_PORT") ;;
    fa-added) URL="$FA_URL"; ARGS=(-s "$WORK/added.lua" "${FA_HEADERS[@]:2}") ;;
    *) echo "bench: unknown target $1" >&2; exit 2 ;;
  esac
}

check() {
  local name=$1 code
  target_request "$name"
  code="$(curl -s -o /dev/null -w '%{http_code}' "${ARGS[@]}" "$URL")"
  if [ "$code" != 200 ]; then
    echo "bench: $name answered $code, not 200; refusing to measure it" >&2
    exit 1
  fi
}
for t in "${TARGETS[@]}"; do check "$t"; done
for url in "$FA_URL" ${BASELINE:+"$BASELINE_FA_URL"}; do
  curl -s -D - -o /dev/null "${FA_HEADERS[@]}" "$url" | grep -i '^remote-user: bench' >/dev/null \
    || { echo "bench: forward-auth at $url did not assert the user" >&2; exit 1; }
done

if [ "${HOLD:-0}" = 1 ]; then
  {
    echo "HELLO_PID=$HELLO_PID NGINX_PID=$NGINX_PID BARE_PID=$BARE_PID STEPGATE_PID=$SG_PID BASELINE_PID=$BASELINE_PID"
    echo "HELLO_URL=http://127.0.0.1:$HELLO_PORT/ NGINX_URL=http://127.0.0.1:$NGINX_PORT/ BARE_URL=http://127.0.0.1:$BARE_PORT/"
    echo "PROXY_URL=http://127.0.0.1:$SG_PORT/ FA_URL=$FA_URL"
    printf 'PROXY_HEADERS=('; printf '%q ' "${PROXY_HEADERS[@]}"; echo ')'
    printf 'FA_HEADERS=('; printf '%q ' "${FA_HEADERS[@]}"; echo ')'
    printf 'UA=%q\n' "$UA"
  } >"$WORK/targets.env"
  echo "bench: holding; targets in $WORK/targets.env (Ctrl-C to stop)"
  while true; do sleep 3600; done
fi

# CPU time (user + system, in clock ticks) of processes and their children (nginx's workers).
cpu_ticks() {
  local total=0 pid
  for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
    [ -r "/proc/$pid/stat" ] || continue
    # Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# wrk's latency column in milliseconds.
to_ms='{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}'

# Every run's figures, by target: space-separated lists, one value per repeat.
declare -A RPS P99 CPU LAT50 LAT99
# One saturated wrk run of a target: requests/s, p99 (ms), the server's CPU µs per request.
measure() {
  local name=$1 out before after requests
  target_request "$name"
  # shellcheck disable=SC2046
  before="$(cpu_ticks $(target_pids "$name"))"
  out="$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "User-Agent: $UA" "${ARGS[@]}" "$URL")"
  # shellcheck disable=SC2046
  after="$(cpu_ticks $(target_pids "$name"))"
  echo "$out" >>"$WORK/wrk-$name.txt"
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "bench: $name had non-2xx responses:" >&2
    grep 'Non-2xx' <<<"$out" >&2
    exit 1
  fi
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  RPS[$name]+=" $(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  P99[$name]+=" $(awk '$1 == "99%" '"$to_ms" <<<"$out")"
  CPU[$name]+=" $(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN { printf "%.2f", t * us / n }')"
}
# One request at a time: p50 and p99 (ms) of what the hop itself adds, no queueing.
measure_latency() {
  local name=$1 out
  target_request "$name"
  out="$(wrk -t1 -c1 -d"$LAT_DURATION" --latency -H "User-Agent: $UA" "${ARGS[@]}" "$URL")"
  echo "$out" >>"$WORK/wrk-latency-$name.txt"
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "bench: $name had non-2xx responses at one connection" >&2
    exit 1
  fi
  LAT50[$name]+=" $(awk '$1 == "50%" '"$to_ms" <<<"$out")"
  LAT99[$name]+=" $(awk '$1 == "99%" '"$to_ms" <<<"$out")"
}
# Runs `fn` on every named target REPEATS times, interleaved, each round starting one target
# further on.
interleaved() {
  local fn=$1 r i n; shift
  local names=("$@")
  n=${#names[@]}
  for ((r = 0; r < REPEATS; r++)); do
    printf '  round %d/%d:' $((r + 1)) "$REPEATS"
    for ((i = 0; i < n; i++)); do
      local name=${names[$(((i + r) % n))]}
      printf ' %s' "$name"
      "$fn" "$name"
    done
    echo
  done
}
# median / min / max of a list of numbers.
median() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk '{v[NR]=$1} END { if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2 }'; }
minmax() { tr ' ' '\n' <<<"$1" | awk 'NF' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {print lo, hi}'; }
# "median [min–max]" in a printf format.
summary() { # format values
  local m lo hi
  m="$(median "$2")"; read -r lo hi <<<"$(minmax "$2")"
  # shellcheck disable=SC2059
  printf "$1 [$1–$1]" "$m" "$lo" "$hi"
}
# The spread of a figure over its repeats: (max - min) / median, in percent.
spread() { local m lo hi; m="$(median "$1")"; read -r lo hi <<<"$(minmax "$1")"; awk -v m="$m" -v a="$lo" -v b="$hi" 'BEGIN { printf "%.0f%%", (m > 0 ? (b - a) * 100 / m : 0) }'; }
print_saturated() {
  local name
  for name in "$@"; do
    printf '  %-22s %s req/s   p99 %s ms   %s us CPU/req   (spread %s / %s / %s)\n' "$name" \
      "$(summary '%.0f' "${RPS[$name]}")" "$(summary '%.3f' "${P99[$name]}")" \
      "$(summary '%.1f' "${CPU[$name]}")" \
      "$(spread "${RPS[$name]}")" "$(spread "${P99[$name]}")" "$(spread "${CPU[$name]}")"
  done
}

echo
echo "bench: $(nproc) cores shared by wrk and the servers; load average before measuring: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "bench: wrk -t$THREADS -c$CONNS -d$DURATION on loopback, each target $REPEATS times, interleaved"
interleaved measure "${TARGETS[@]}"
echo "  median [min–max] over $REPEATS runs; spread = (max - min) / median of req/s, p99, CPU/req"
print_saturated "${TARGETS[@]}"

# Latency added by one hop, at one connection and one request at a time: no queueing, so
# the difference is what the hop itself costs. (Under saturation each server's p99 is mostly
# its own queue: hello's, at four times the rate, is the highest of all.)
echo
echo "bench: wrk -t1 -c1 -d$LAT_DURATION (one request at a time), each target $REPEATS times, interleaved"
interleaved measure_latency "${TARGETS[@]}"
for name in "${TARGETS[@]}"; do
  printf '  %-22s p50 %s ms   p99 %s ms\n' "$name" \
    "$(summary '%.3f' "${LAT50[$name]}")" "$(summary '%.3f' "${LAT99[$name]}")"
done

# Many live sessions (DESIGN.md §6: 100,000 live sessions without throughput dropping by
# more than 10%). Each request carries the next of ROTATE session cookies, so sessions leave
# and re-enter the session cache. Measured with the store holding only those, then with
# SESSIONS more added through the store code stepgate uses, while it runs: the same ROTATE
# sessions again, and ROTATE sessions drawn evenly from the added ones, so that the added
# sessions are requested too (a rotation of the same size, so the cache behaves the same).
if [ "$SESSIONS" -gt 0 ]; then
  (cd "$WORK" && "$SEED" --config stepgate.yaml --username bench --count "$ROTATE" --out rotate.txt)
  rotation_script() { # sessions file
    cat <<LUA
local ids = {}
for line in io.lines("$1") do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i % #ids + 1
  wrk.headers["Cookie"] = "stepgate_session=" .. ids[i]
  return wrk.format()
end
LUA
  }
  rotation_script "$WORK/rotate.txt" >"$WORK/rotate.lua"
  echo
  echo "bench: wrk -t$THREADS -c$CONNS -d$DURATION cycling through $ROTATE sessions, each $REPEATS times, interleaved"
  interleaved measure proxy-rotating fa-rotating
  store_size() { # bytes: the SQLite file, or Redis' used memory and the run's PostgreSQL schema
    if [ "$STORE" = postgres ]; then
      echo "$(redis-cli -u "$REDIS" INFO memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p')" \
        "$(psql "$PG" -At -c "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$RUN' AND c.relkind = 'r'")"
    else
      echo "$(( $(stat -c %s "$WORK/data/stepgate.db") + $(stat -c %s "$WORK/data/stepgate.db-wal" 2>/dev/null || echo 0) ))"
    fi
  }
  before="$(store_size)"
  (cd "$WORK" && "$SEED" --config stepgate.yaml --username bench --count "$SESSIONS" --out added.txt)
  after="$(store_size)"
  # shellcheck disable=SC2086
  set -- $before $after
  if [ "$STORE" = postgres ]; then
    GROWTH="Redis $(( ($3 - $1) * 100000 / SESSIONS )) bytes, PostgreSQL $(( ($4 - $2) * 100000 / SESSIONS )) bytes per 100,000 sessions (Redis used_memory; the schema's tables with indexes and TOAST)"
  else
    GROWTH="SQLite $(( ($2 - $1) * 100000 / SESSIONS )) bytes per 100,000 sessions (the database file and its WAL)"
  fi
  echo "bench: store growth: $GROWTH"
  step=$((SESSIONS / ROTATE)); [ "$step" -ge 1 ] || step=1
  awk -v s="$step" -v n="$ROTATE" '(NR - 1) % s == 0 && c < n { print; c++ }' "$WORK/added.txt" >"$WORK/drawn.txt"
  rotation_script "$WORK/drawn.txt" >"$WORK/added.lua"
  echo "bench: the same $ROTATE sessions (-rotating+), and $(wc -l <"$WORK/drawn.txt") drawn from the $SESSIONS added (-added), with the $SESSIONS in the store"
  interleaved measure proxy-rotating+ fa-rotating+ proxy-added fa-added
  print_saturated proxy-rotating fa-rotating proxy-rotating+ fa-rotating+ proxy-added fa-added
fi

m() { median "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
change() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
echo
echo "ratios from the medians:"
echo "  forward-auth / hello           $(ratio "$(m "${RPS[forward-auth]}")" "$(m "${RPS[hello]}")")x req/s   (target: >= 0.50, within 2x)"
echo "  stepgate-proxy / hyper-proxy   $(ratio "$(m "${RPS[stepgate-proxy]}")" "$(m "${RPS[hyper-proxy]}")")x req/s   (target: >= 0.85)"
echo "  stepgate-proxy / hyper-proxy   $(ratio "$(m "${CPU[stepgate-proxy]}")" "$(m "${CPU[hyper-proxy]}")")x CPU/req   (target: <= 1.30)"
echo "  stepgate-proxy / nginx         $(ratio "$(m "${RPS[stepgate-proxy]}")" "$(m "${RPS[nginx]}")")x req/s   (the long-term aim: >= 1.00)"
echo "  hyper-proxy / nginx            $(ratio "$(m "${RPS[hyper-proxy]}")" "$(m "${RPS[nginx]}")")x req/s   (the HTTP stack's own floor, no stepgate logic)"
echo "  stepgate-proxy / nginx         $(ratio "$(m "${CPU[stepgate-proxy]}")" "$(m "${CPU[nginx]}")")x CPU/req"
echo "  stepgate-proxy added p99       $(diff_ms "$(m "${LAT99[stepgate-proxy]}")" "$(m "${LAT99[hello]}")") ms over hello at one connection   (target: < 1 ms)"
echo "  nginx added p99                $(diff_ms "$(m "${LAT99[nginx]}")" "$(m "${LAT99[hello]}")") ms over hello at one connection"
echo "  stepgate-proxy saturated p99   $(diff_ms "$(m "${P99[stepgate-proxy]}")" "$(m "${P99[hello]}")") ms over hello's (each at its own saturation)"
if [ "$SESSIONS" -gt 0 ]; then
  echo "  proxy, same $ROTATE sessions, $SESSIONS more in the store        $(change "$(m "${RPS[proxy-rotating]}")" "$(m "${RPS[proxy-rotating+]}")") req/s   (target: no drop over 10%)"
  echo "  proxy, $ROTATE of the $SESSIONS added sessions                   $(change "$(m "${RPS[proxy-rotating]}")" "$(m "${RPS[proxy-added]}")") req/s   (target: no drop over 10%)"
  echo "  forward-auth, same $ROTATE sessions, $SESSIONS more in the store $(change "$(m "${RPS[fa-rotating]}")" "$(m "${RPS[fa-rotating+]}")") req/s   (target: no drop over 10%)"
  echo "  forward-auth, $ROTATE of the $SESSIONS added sessions            $(change "$(m "${RPS[fa-rotating]}")" "$(m "${RPS[fa-added]}")") req/s   (target: no drop over 10%)"
fi
if [ "$SESSIONS" -gt 0 ]; then
  echo "  store ($STORE) growth          $GROWTH"
fi
if [ -n "$BASELINE" ]; then
  echo "  proxy: new/baseline            $(ratio "$(m "${RPS[stepgate-proxy]}")" "$(m "${RPS[baseline-proxy]}")")x req/s, $(ratio "$(m "${CPU[stepgate-proxy]}")" "$(m "${CPU[baseline-proxy]}")")x CPU/req, $(ratio "$(m "${LAT99[stepgate-proxy]}")" "$(m "${LAT99[baseline-proxy]}")")x p99 at one connection   (baseline: $BASELINE)"
  echo "  forward-auth: new/baseline     $(ratio "$(m "${RPS[forward-auth]}")" "$(m "${RPS[baseline-forward-auth]}")")x req/s, $(ratio "$(m "${CPU[forward-auth]}")" "$(m "${CPU[baseline-forward-auth]}")")x CPU/req, $(ratio "$(m "${LAT99[forward-auth]}")" "$(m "${LAT99[baseline-forward-auth]}")")x p99 at one connection"
fi
echo "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
