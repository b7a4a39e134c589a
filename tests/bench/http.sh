#!/usr/bin/env bash
# HTTP load benchmark of `dockop run`: wrk on GET /health with 10 objects (busybox web, probe every 1 s),
#   (1) all ten healthy, then
#   (2) one app hanging (its httpd swapped for a tarpit that accepts connections and never answers; probe
#       timeout 2 s): /health must stay as fast, because probes run in the background monitor.
# Prints requests per second and latency percentiles (p50, p99, max) of both runs, plus the share of 503s.
#
# Usage: tests/bench/http.sh [SECONDS] [CONNECTIONS]   (needs root, wrk, the test bed; about 1 minute)
#   DOCKOP_BIN=path   use this binary instead of building target/release/dockop
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=${1:-15}
CONNS=${2:-32}
THREADS=2
N=10
IMAGE=127.0.0.1:5000/web:v1
ID=bench-http-$$
WORK=$(mktemp -d)
DOCKOP_PID=

say() { printf '%s\n' "$*" >&2; }

cleanup() {
  if [ -n "$DOCKOP_PID" ]; then
    kill "$DOCKOP_PID" 2>/dev/null || true
    wait "$DOCKOP_PID" 2>/dev/null || true
  fi
  docker ps -aq --filter "label=dockop-bench=$ID" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { say "wrk is missing; fix: apt-get install -y wrk"; exit 1; }
if [ -z "${DOCKOP_BIN:-}" ]; then
  cargo build --release -q -p dockop --bin dockop
  DOCKOP_BIN=$ROOT/target/release/dockop
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

mkdir -p "$WORK/spec" "$WORK/state"
for i in $(seq 1 "$N"); do
  cat >"$WORK/spec/app$i.yaml" <<EOF
apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: $ID-app$i
  labels: {dockop-bench: $ID}
spec:
  image: $IMAGE
  command: ["sh", "-c", "httpd -p 8080 -h /www && exec sleep 2147483647"]
  health: {path: /global/health, port: 8080, intervalSeconds: 1, timeoutSeconds: 2}
  update: {policy: manual}
  stopTimeoutSeconds: 1
EOF
done

"$DOCKOP_BIN" --state-dir "$WORK/state" run -f "$WORK/spec" --listen "127.0.0.1:$PORT" \
  --resync-seconds 600 >"$WORK/dockop.log" 2>&1 &
DOCKOP_PID=$!
URL=http://127.0.0.1:$PORT/health

wait_status() { # code seconds
  local deadline=$(( $(date +%s) + $2 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$URL")" = "$1" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "/health never answered $1"; tail -20 "$WORK/dockop.log" >&2; exit 1; }
    sleep 0.2
  done
}

# wrk with a Lua done() hook printing machine-readable figures.
cat >"$WORK/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local non2xx = summary.errors.status or 0
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f requests=%d non2xx=%d socket_errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

run_wrk() { # label
  local line
  line=$(wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s -s "$WORK/report.lua" "$URL" | grep '^RESULT')
  printf '%-34s %s\n' "$1" "${line#RESULT }"
}

say "dockop $DOCKOP_BIN on 127.0.0.1:$PORT, $N objects; waiting for all healthy..."
wait_status 200 180

echo "wrk $THREADS threads, $CONNS connections, ${DURATION}s on GET /health ($N objects, probes every 1 s)"
run_wrk "all healthy (200):"

HUNG=$ID-app1
docker exec "$HUNG" sh -c 'kill $(pidof httpd)'
docker exec -d "$HUNG" nc -ll -p 8080 -e /srv/tarpit
wait_status 503 10
run_wrk "one app hanging (503):"
curl -s "$URL" | grep -A3 "\"$HUNG\"" | grep -m1 detail >&2 || true
