#!/usr/bin/env bash
# bench/soak.sh — three stepgate nodes on one PostgreSQL and one Redis behind nginx
# (round-robin), under DURATION seconds of mixed traffic (bench/soak.py: requests, TOTP
# step-ups, sign-outs and sign-ins, by WORKERS users at once, and a CAEP event from a UEM
# every CAEP_EVERY seconds), with each node's resident
# memory sampled at the start, the middle and the end. It prints the RSS table and the
# driver's summary (what was done, and every answer that was not what the design says,
# by kind), and exits non-zero if there was any such answer.
#
# Usage: bench/soak.sh
# env: STEPGATE_BIN=target/release/stepgate DURATION=600 WORKERS=8 BASE_PORT=19760
#      SOAK_DRIVER=bench/soak.py (another driver, e.g. an instrumented copy)
#      STEPGATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test
#      STEPGATE_TEST_REDIS_URL=redis://127.0.0.1:6379
# Needs: nginx, python3 with requests and pyotp (installed with pip when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${STEPGATE_BIN:-target/release/stepgate}"
DURATION="${DURATION:-600}"
WORKERS="${WORKERS:-8}"
BASE_PORT="${BASE_PORT:-19760}"
PG="${STEPGATE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
REDIS="${STEPGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
[ -x "$BIN" ] || { echo "soak: no stepgate binary at $BIN (cargo build --release, or set STEPGATE_BIN)" >&2; exit 2; }
python3 -c 'import requests, pyotp' 2>/dev/null || python3 -m pip install --quiet requests pyotp
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "soak: nginx is needed (apt-get install nginx)" >&2; exit 2; }

WORK=$(mktemp -d)
RUN="soak$$"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  psql "$PG" -q -c "DROP SCHEMA IF EXISTS \"$RUN\" CASCADE" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS" --scan --pattern "$RUN:*" | xargs -r redis-cli -u "$REDIS" DEL >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

UP=$BASE_PORT; FRONT=$((BASE_PORT + 1)); N1=$((BASE_PORT + 2)); N2=$((BASE_PORT + 3)); N3=$((BASE_PORT + 4))
for port in $UP $FRONT $N1 $N2 $N3; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "soak: port $port is taken (another bench?); set BASE_PORT" >&2; exit 2
  fi
done
export STEPGATE_SECRET_KEY=$("$BIN" secrets generate-key 2>/dev/null | tail -1)

# The app: 200 "upstream" to everything.
python3 - "$UP" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "8"); self.end_headers()
        self.wfile.write(b"upstream")
    do_POST = do_GET
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
PIDS+=($!)

# The UEM that sends CAEP events (bench/soak.py's CAEP thread signs with its private key).
python3 -c 'import jwt, cryptography' 2>/dev/null || python3 -m pip install --quiet 'pyjwt[crypto]'
python3 - "$WORK" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
k = ec.generate_private_key(ec.SECP256R1())
open(sys.argv[1] + "/uem-private.pem", "wb").write(k.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
open(sys.argv[1] + "/uem.pem", "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
PY

cat > "$WORK/stepgate.yaml" <<YAML
server:
  public_url: http://app.test:$FRONT
  data_dir: $WORK/data
  trusted_proxies: [127.0.0.1/32]
apps:
  - id: console
    hosts: [app.test]
    upstream: http://127.0.0.1:$UP
    routes:
      - { name: admin, path: /admin, tags: [admin] }
sessions: { cookie: { secure: false } }
factors:
  webauthn: { rp_id: app.test, rp_origin: "http://app.test:$FRONT" }
regulation: { max_retries: 1000, ip_max_retries: 100000 }
devices:
  caep:
    transmitters:
      - { name: uem, issuer: "https://uem.soak/", audience: "http://app.test:$FRONT/", key_file: $WORK/uem.pem, algorithms: [ES256] }
store:
  postgres: { url: "$PG", schema: $RUN }
  redis: { url: "$REDIS", key_prefix: "$RUN:" }
default_outcome: allow
policies:
  - name: admin-needs-a-fresh-code
    priority: 10
    targets: { routes: [{ tags: [admin] }] }
    outcome: { step_up: { min_aal: 2, factors: [totp], max_age: every_time } }
  - name: sign-in-with-a-password
    priority: 30
    targets: { sign_in: true }
    outcome: allow
YAML

USERS="["
for i in $(seq 1 "$WORKERS"); do
  pw="soak password number $i of this run"
  "$BIN" user --config "$WORK/stepgate.yaml" add "soak$i" >/dev/null
  printf '%s' "$pw" | "$BIN" user --config "$WORK/stepgate.yaml" set-password "soak$i" >/dev/null
  seed=$("$BIN" user --config "$WORK/stepgate.yaml" enroll-totp "soak$i" --no-qr | grep -o 'secret=[A-Z2-7]*' | head -1 | cut -d= -f2)
  [ -n "$seed" ] || { echo "soak: no TOTP seed for soak$i" >&2; exit 1; }
  [ "$i" -gt 1 ] && USERS+=","
  USERS+="{\"username\":\"soak$i\",\"password\":\"$pw\",\"totp\":\"$seed\"}"
done
USERS+="]"

NODE_PIDS=()
for port in $N1 $N2 $N3; do
  "$BIN" serve --config "$WORK/stepgate.yaml" --listen "127.0.0.1:$port" >"$WORK/node$port.log" 2>&1 &
  PIDS+=($!); NODE_PIDS+=($!)
done
for port in $N1 $N2 $N3; do
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
done

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGX
worker_processes 1;
events {}
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body; proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fcgi; uwsgi_temp_path $WORK/nginx/uwsgi; scgi_temp_path $WORK/nginx/scgi;
  upstream stepgate { server 127.0.0.1:$N1; server 127.0.0.1:$N2; server 127.0.0.1:$N3; keepalive 32; }
  server {
    listen 127.0.0.1:$FRONT;
    location / {
      proxy_pass http://stepgate; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$http_host; proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
NGX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e stderr -g "daemon off; master_process off; pid $WORK/nginx/nginx.pid;" 2>"$WORK/nginx.log" &
PIDS+=($!)
sleep 0.5

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
declare -A RSS
coproc DRIVER { SOAK_BASE="http://app.test:$FRONT" SOAK_FRONT="http://127.0.0.1:$FRONT" \
  SOAK_CAEP_KEY="$WORK/uem-private.pem" SOAK_USERS="$USERS" DURATION="$DURATION" python3 "${SOAK_DRIVER:-bench/soak.py}"; }
driver_pid=$DRIVER_PID
SUMMARY=""
while IFS= read -r line <&"${DRIVER[0]}"; do
  case "$line" in
    SAMPLE\ *)
      label=${line#SAMPLE }
      RSS[$label]="$(for p in "${NODE_PIDS[@]}"; do printf '%s ' "$(rss "$p")"; done)"
      echo "soak: $label: RSS (KiB) per node: ${RSS[$label]}" >&2
      echo >&"${DRIVER[1]}"
      ;;
    *) SUMMARY="$line" ;;
  esac
done
wait "$driver_pid" 2>/dev/null || true

echo "RSS (KiB) of each node:"
printf '  %-7s %s\n' start "${RSS[start]}" middle "${RSS[middle]}" end "${RSS[end]}"
echo "driver: $SUMMARY"
python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(1 if s["errors"] else 0)' "$SUMMARY"
