#!/usr/bin/env bash
# bench/load.sh — stepgate's HTTP throughput against a bare hyper server and nginx, in one
# run on loopback (DESIGN.md §6):
#
#   1. hello          a bare hyper "200 OK" server (crates/server/examples/hello.rs)
#   2. nginx          nginx as a plain reverse proxy to hello
#   3. stepgate-proxy stepgate's reverse proxy to hello, with a valid session cookie
#   4. forward-auth   stepgate's /_stepgate/auth/forward with a valid session cookie (allow)
#   5. hyper-proxy    a reverse proxy of bare hyper (server + kept client connections, one event
#                     loop per core, nothing else; crates/server/examples/bare_proxy.rs): the
#                     floor for any proxy built on stepgate's HTTP stack, so stepgate's own cost
#                     (proxy vs hyper-proxy) shows apart from the stack's (hyper-proxy vs nginx)
#
# It signs in through the portal itself (password + TOTP, computed here) to get the
# session, checks every target answers 200 before measuring, and prints requests/s, p99
# latency and the ratios the targets are stated in.
#
# It also prints each server's own CPU time per request (user + system, read from /proc
# before and after each run), which says where the time goes independently of how the
# two cores are shared with wrk.
#
# Usage: bench/load.sh  (env: THREADS=2 CONNS=32 DURATION=10s LAT_DURATION=5s BASE_PORT=19400
# ASSERTION=on SESSIONS=100000 ROTATE=1000)
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
# The many-sessions pass: wrk cycles through ROTATE sessions of the bench user, before and
# after SESSIONS sessions of other users are added to the store (SESSIONS=0 skips it).
SESSIONS="${SESSIONS:-100000}"
ROTATE="${ROTATE:-1000}"
BASE_PORT="${BASE_PORT:-19400}"
# ASSERTION=off measures without the signed identity assertion (an ES256 signature per
# allowed request).
ASSERTION="${ASSERTION:-on}"
HELLO_PORT=$((BASE_PORT))
NGINX_PORT=$((BASE_PORT + 1))
SG_PORT=$((BASE_PORT + 2))
BARE_PORT=$((BASE_PORT + 3))
APP_HOST=app.bench.test
PORTAL_HOST=auth.bench.test

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"

echo "bench: building stepgate and the hello server (release)"
cargo build --quiet --release -p stepgate --bin stepgate -p stepgate-server --example hello \
  --example seed_sessions --example bare_proxy
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
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench: nothing is listening on port $1" >&2
  return 1
}

# 1. The bare hyper server.
"$HELLO" "127.0.0.1:$HELLO_PORT" >"$WORK/hello.log" 2>&1 &
PIDS+=($!)

# 2. nginx as a plain reverse proxy to it (keep-alive upstream, as a tuned deployment).
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream hello { server 127.0.0.1:$HELLO_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
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
PIDS+=($!)

# 5. The bare hyper reverse proxy to it (started here so that PIDS keeps its order: hello,
# nginx, then this; stepgate is last).
"$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$HELLO_PORT" >"$WORK/bare_proxy.log" 2>&1 &
PIDS+=($!)

# 3./4. stepgate with one app in front of hello and a user with a known TOTP seed.
"$STEPGATE" secrets generate-key >"$WORK/secret.key"
cat >"$WORK/stepgate.yaml" <<EOF
server:
  listen: 127.0.0.1:$SG_PORT
  public_url: http://$PORTAL_HOST:$SG_PORT
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
PASSWORD="Quartz lantern 7 drifts over the harbour"
printf '%s\n' "$PASSWORD" | "$STEPGATE" user add bench --email bench@bench.test --group staff \
  --password-stdin --config "$WORK/stepgate.yaml" >/dev/null
TOTP_KEY="$("$STEPGATE" user enroll-totp bench --no-qr --config "$WORK/stepgate.yaml" | sed -n 's/^key: //p')"
STEPGATE_LOG=warn "$STEPGATE" serve --config "$WORK/stepgate.yaml" >"$WORK/stepgate.log" 2>&1 &
PIDS+=($!)

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

FA_URL="http://127.0.0.1:$SG_PORT/_stepgate/auth/forward"
FA_HEADERS=(-H "Cookie: $COOKIE" -H "X-Forwarded-Method: GET" -H "X-Forwarded-Proto: http"
  -H "X-Forwarded-Host: $APP_HOST:$SG_PORT" -H "X-Forwarded-Uri: /")
PROXY_HEADERS=(-H "Host: $APP_HOST:$SG_PORT" -H "Cookie: $COOKIE")
# Every measured request carries a browser's User-Agent, as real traffic does (stepgate
# reads it for the policy's user-agent conditions; without one that work is skipped).
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

check() {
  local name=$1 url=$2; shift 2
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")"
  if [ "$code" != 200 ]; then
    echo "bench: $name answered $code, not 200; refusing to measure it" >&2
    exit 1
  fi
}
check hello "http://127.0.0.1:$HELLO_PORT/"
check nginx "http://127.0.0.1:$NGINX_PORT/"
check hyper-proxy "http://127.0.0.1:$BARE_PORT/"
check stepgate-proxy "http://127.0.0.1:$SG_PORT/" "${PROXY_HEADERS[@]}"
check forward-auth "$FA_URL" "${FA_HEADERS[@]}"
curl -s -D - -o /dev/null "${FA_HEADERS[@]}" "$FA_URL" | grep -i '^remote-user: bench' >/dev/null \
  || { echo "bench: forward-auth did not assert the user" >&2; exit 1; }

if [ "${HOLD:-0}" = 1 ]; then
  {
    echo "HELLO_PID=${PIDS[0]} NGINX_PID=${PIDS[1]} BARE_PID=${PIDS[2]} STEPGATE_PID=${PIDS[3]}"
    echo "HELLO_URL=http://127.0.0.1:$HELLO_PORT/ NGINX_URL=http://127.0.0.1:$NGINX_PORT/ BARE_URL=http://127.0.0.1:$BARE_PORT/"
    echo "PROXY_URL=http://127.0.0.1:$SG_PORT/ FA_URL=$FA_URL"
    printf 'PROXY_HEADERS=('; printf '%q ' "${PROXY_HEADERS[@]}"; echo ')'
    printf 'FA_HEADERS=('; printf '%q ' "${FA_HEADERS[@]}"; echo ')'
    printf 'UA=%q\n' "$UA"
  } >"$WORK/targets.env"
  echo "bench: holding; targets in $WORK/targets.env (Ctrl-C to stop)"
  while true; do sleep 3600; done
fi

# CPU time (user + system, in clock ticks) of a process and its children threads/workers.
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

declare -A RPS P99 CPU
# Runs wrk and records requests/s and p99 (in ms).
measure() {
  local name=$1 pids=$2 url=$3; shift 3
  local out before after requests
  # shellcheck disable=SC2086
  before="$(cpu_ticks $pids)"
  out="$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "User-Agent: $UA" "$@" "$url")"
  # shellcheck disable=SC2086
  after="$(cpu_ticks $pids)"
  echo "$out" >"$WORK/wrk-$name.txt"
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "bench: $name had non-2xx responses:" >&2
    grep 'Non-2xx' <<<"$out" >&2
    exit 1
  fi
  RPS[$name]="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  P99[$name]="$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")"
  requests="$(awk '/requests in/ {print $1}' <<<"$out")"
  CPU[$name]="$(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN { printf "%.1f", t * us / n }')"
  printf '  %-16s %12.0f req/s   p99 %8.3f ms   %6.1f us CPU/req (server process only)\n' \
    "$name" "${RPS[$name]}" "${P99[$name]}" "${CPU[$name]}"
}

echo
echo "bench: wrk -t$THREADS -c$CONNS -d$DURATION on loopback, $(nproc) cores shared by wrk and the servers"
measure hello "${PIDS[0]}" "http://127.0.0.1:$HELLO_PORT/"
measure nginx "${PIDS[1]}" "http://127.0.0.1:$NGINX_PORT/"
measure hyper-proxy "${PIDS[2]}" "http://127.0.0.1:$BARE_PORT/"
measure stepgate-proxy "${PIDS[3]}" "http://127.0.0.1:$SG_PORT/" "${PROXY_HEADERS[@]}"
measure forward-auth "${PIDS[3]}" "$FA_URL" "${FA_HEADERS[@]}"

# Latency added by one hop, at one connection and one request at a time: no queueing, so
# the difference is what the hop itself costs. (Under saturation each server's p99 is mostly
# its own queue: hello's, at four times the rate, is the highest of all.)
declare -A LAT50 LAT99
measure_latency() {
  local name=$1 url=$2; shift 2
  local out
  out="$(wrk -t1 -c1 -d"$LAT_DURATION" --latency -H "User-Agent: $UA" "$@" "$url")"
  echo "$out" >"$WORK/wrk-latency-$name.txt"
  if grep -q 'Non-2xx' <<<"$out"; then
    echo "bench: $name had non-2xx responses at one connection" >&2
    exit 1
  fi
  to_ms='{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}'
  LAT50[$name]="$(awk '$1 == "50%" '"$to_ms" <<<"$out")"
  LAT99[$name]="$(awk '$1 == "99%" '"$to_ms" <<<"$out")"
  printf '  %-16s p50 %8.3f ms   p99 %8.3f ms\n' "$name" "${LAT50[$name]}" "${LAT99[$name]}"
}
echo
echo "bench: wrk -t1 -c1 -d$LAT_DURATION (one request at a time)"
measure_latency hello "http://127.0.0.1:$HELLO_PORT/"
measure_latency nginx "http://127.0.0.1:$NGINX_PORT/"
measure_latency hyper-proxy "http://127.0.0.1:$BARE_PORT/"
measure_latency stepgate-proxy "http://127.0.0.1:$SG_PORT/" "${PROXY_HEADERS[@]}"
measure_latency forward-auth "$FA_URL" "${FA_HEADERS[@]}"

# Many live sessions (DESIGN.md §6: 100,000 live sessions without throughput dropping by
# more than 10%). Each request carries the next of ROTATE session cookies, so sessions leave
# and re-enter the session cache; the same ROTATE sessions are measured with the store
# holding only them, then with SESSIONS more (through the store code stepgate uses, while it
# runs).
if [ "$SESSIONS" -gt 0 ]; then
  (cd "$WORK" && "$SEED" --config stepgate.yaml --username bench --count "$ROTATE" --out rotate.txt)
  cat >"$WORK/rotate.lua" <<'LUA'
local ids = {}
for line in io.lines(os.getenv("SESSIONS_FILE")) do ids[#ids + 1] = line end
local i = 0
request = function()
  i = i % #ids + 1
  wrk.headers["Cookie"] = "stepgate_session=" .. ids[i]
  return wrk.format()
end
LUA
  export SESSIONS_FILE="$WORK/rotate.txt"
  ROT_PROXY=(-s "$WORK/rotate.lua" -H "Host: $APP_HOST:$SG_PORT")
  ROT_FA=(-s "$WORK/rotate.lua" "${FA_HEADERS[@]:2}")
  echo
  echo "bench: wrk -t$THREADS -c$CONNS -d$DURATION cycling through $ROTATE sessions"
  measure proxy-rotating "${PIDS[3]}" "http://127.0.0.1:$SG_PORT/" "${ROT_PROXY[@]}"
  measure fa-rotating "${PIDS[3]}" "$FA_URL" "${ROT_FA[@]}"
  (cd "$WORK" && "$SEED" --config stepgate.yaml --count "$SESSIONS")
  echo "bench: the same, with $SESSIONS more live sessions in the store"
  measure proxy-rotating+ "${PIDS[3]}" "http://127.0.0.1:$SG_PORT/" "${ROT_PROXY[@]}"
  measure fa-rotating+ "${PIDS[3]}" "$FA_URL" "${ROT_FA[@]}"
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
change() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f%%", (b - a) * 100 / a }'; }
diff_ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
echo
echo "  forward-auth / hello         $(ratio "${RPS[forward-auth]}" "${RPS[hello]}")x req/s   (target: >= 0.50, within 2x)"
echo "  stepgate-proxy / nginx       $(ratio "${RPS[stepgate-proxy]}" "${RPS[nginx]}")x req/s   (target: >= 1.00)"
echo "  hyper-proxy / nginx          $(ratio "${RPS[hyper-proxy]}" "${RPS[nginx]}")x req/s   (the HTTP stack's own floor, no stepgate logic)"
echo "  stepgate-proxy / hyper-proxy $(ratio "${RPS[stepgate-proxy]}" "${RPS[hyper-proxy]}")x req/s   (what stepgate's decision and header work cost)"
echo "  stepgate-proxy added p99     $(diff_ms "${LAT99[stepgate-proxy]}" "${LAT99[hello]}") ms over hello at one connection   (target: < 1 ms)"
echo "  nginx added p99              $(diff_ms "${LAT99[nginx]}" "${LAT99[hello]}") ms over hello at one connection"
echo "  stepgate-proxy saturated p99 $(diff_ms "${P99[stepgate-proxy]}" "${P99[hello]}") ms over hello's (each at its own saturation)"
if [ "$SESSIONS" -gt 0 ]; then
  echo "  proxy with $SESSIONS more sessions    $(change "${RPS[proxy-rotating]}" "${RPS[proxy-rotating+]}") req/s   (target: no drop over 10%)"
  echo "  forward-auth with $SESSIONS more     $(change "${RPS[fa-rotating]}" "${RPS[fa-rotating+]}") req/s   (target: no drop over 10%)"
fi
