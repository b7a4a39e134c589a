#!/usr/bin/env bash
# Benchmarks of the long-running controller (`dockop run`), release build, real engine, test bed images:
#   1. file edit -> new container started (the app's own start excluded), 5 runs, default debounce
#   2. idle RSS (VmRSS) and CPU (utime+stime over 30 s) with 1 object and with 200 objects
#   3. a no-op pass over 200 converged objects (a fresh `dockop run`: list once, one reconcile each) and
#      the engine calls it costs per object (from /metrics dockop_engine_requests_total)
#
#   cargo build --release -p dockop && tests/bench/controller.sh
#   env: DOCKOP_BIN (default target/release/dockop), OBJECTS (200), IDLE_SECONDS (30), BASE_PORT (31000),
#        HEALTH_INTERVAL (1, the spec default: the HTTP health monitor probes every object at this period)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN=${DOCKOP_BIN:-$ROOT/target/release/dockop}
OBJECTS=${OBJECTS:-200}
IDLE_SECONDS=${IDLE_SECONDS:-30}
BASE_PORT=${BASE_PORT:-31000}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-1}
REG=127.0.0.1:5000
ID="bench-ctl-$(printf '%06x' $((RANDOM * RANDOM % 16777216)))"
TMP=$(mktemp -d "/tmp/$ID.XXXX")
PID=""
CLK_TCK=$(getconf CLK_TCK)

[[ -x $BIN ]] || { echo "no dockop binary at $BIN: cargo build --release -p dockop" >&2; exit 1; }

cleanup() {
  [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  local ids
  ids=$(docker ps -aq --filter "label=dockop-e2e=$ID")
  [[ -n $ids ]] && docker rm -f $ids >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

spec() { # name image port
  cat <<EOF
apiVersion: dockop.dev/v1alpha1
kind: Container
metadata:
  name: $1
  labels: {dockop-e2e: $ID}
spec:
  image: $2
  ports:
    - {containerPort: 8080, hostPort: $3, hostIP: 127.0.0.1}
  health: {path: /global/health, port: 8080, intervalSeconds: $HEALTH_INTERVAL, startupDeadlineSeconds: 60}
  update: {preflight: false}
  init: true
  stopTimeoutSeconds: 2
EOF
}

LISTEN=""
start() { # state-dir spec-path [extra...]
  local state=$1 path=$2; shift 2
  LISTEN="127.0.0.1:$(free_port)"
  "$BIN" --state-dir "$state" -v run --listen "$LISTEN" -f "$path" "$@" >>"$TMP/dockop.log" 2>&1 &
  PID=$!
}
stop() { kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null || true; PID=""; }

wait_log() { # pattern timeout-seconds
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do
    grep -q "$1" "$TMP/dockop.log" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timed out waiting for '$1' in the log:" >&2; tail -20 "$TMP/dockop.log" >&2; return 1
}

ready() { curl -sf "http://$LISTEN/readyz" >/dev/null 2>&1; }
wait_ready() { local end=$((SECONDS + $1)); until ready; do ((SECONDS < end)) || return 1; sleep 0.1; done; }

engine_calls() { curl -sf "http://$LISTEN/metrics" | awk '/^dockop_engine_requests_total\{/ {s += $NF} END {print s + 0}'; }
# "op=count ..." of dockop_engine_requests_total
engine_ops() {
  curl -sf "http://$LISTEN/metrics" | awk '/^dockop_engine_requests_total\{/ {
    match($0, /op="[a-z_]+"/); op = substr($0, RSTART + 4, RLENGTH - 5); c[op] += $NF }
    END { for (o in c) printf "%s=%d ", o, c[o] }'
}

idle() { # label
  sleep 5
  local ops0; ops0=$(engine_calls)
  local rss t0 t1
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  t0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  sleep "$IDLE_SECONDS"
  t1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  local rss2; rss2=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  awk -v l="$1" -v a="$rss" -v b="$rss2" -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$IDLE_SECONDS" \
    'BEGIN { printf "%-34s RSS %.1f MiB (after %ds: %.1f MiB), CPU %.2f%% over %ds   (targets < 15 MiB, < 0.5%%)\n", l, a/1024, s, b/1024, 100*d/hz/s, s }'
  printf '%-34s %d engine calls in the idle window\n' "" $(( $(engine_calls) - ops0 ))
}

# Truly idle: the /metrics read above marks the monitor watched for 30 s; let that lapse, then measure
# without any request in the window.
idle_true() { # label
  sleep 5
  local ops0; ops0=$(engine_calls)
  sleep 31
  local rss t0 t1
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  t0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  sleep "$IDLE_SECONDS"
  t1=$(awk '{print $14 + $15}' "/proc/$PID/stat")
  local rss2; rss2=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
  awk -v l="$1" -v a="$rss" -v b="$rss2" -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$IDLE_SECONDS" \
    'BEGIN { printf "%-34s RSS %.1f MiB (after %ds: %.1f MiB), CPU %.2f%% over %ds   (targets < 15 MiB, < 0.5%%)\n", l, a/1024, s, b/1024, 100*d/hz/s, s }'
  printf '%-34s %d engine calls in the 31 s lapse + idle window: %s\n' "" $(( $(engine_calls) - ops0 )) "$(engine_ops)"
}

ns() { date -d "$1" +%s%N; }

echo "dockop controller benchmarks ($("$BIN" --version), $(nproc) cores, id $ID, health intervalSeconds $HEALTH_INTERVAL)"

# ------------------------------------------------------------------ 1. edit -> recreated, 1 object
mkdir -p "$TMP/one"
P=$(free_port)
NAME="$ID-web"
spec "$NAME" "$REG/web:v1" "$P" >"$TMP/one/web.yaml"
start "$TMP/state-one" "$TMP/one/web.yaml"
wait_ready 60 || { echo "dockop not ready"; tail "$TMP/dockop.log"; exit 1; }
idle "idle, 1 object:"
idle_true "truly idle, 1 object:"
results=()
for i in 1 2 3 4 5; do
  if ((i % 2)); then img=v2; else img=v1; fi
  old=$(docker inspect -f '{{.Id}}' "$NAME")
  sleep 1.5
  t_edit=$(date +%s%N)
  spec "$NAME" "$REG/web:$img" "$P" >"$TMP/one/web.yaml.tmp" && mv "$TMP/one/web.yaml.tmp" "$TMP/one/web.yaml"
  end=$((SECONDS + 30))
  while ((SECONDS < end)); do
    cur=$(docker inspect -f '{{.Id}} {{.State.StartedAt}}' "$NAME" 2>/dev/null || true)
    if [[ -n $cur && ${cur%% *} != "$old" && ${cur#* } != 0001-01-01T00:00:00Z ]]; then break; fi
    sleep 0.02
  done
  started=$(ns "${cur#* }")
  results+=("$(awk -v a="$t_edit" -v b="$started" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')")
  # Wait for the change to finish (health gate) before the next edit.
  until curl -sf "http://127.0.0.1:$P/global/health" | grep -q "\"${img#v}\""; do sleep 0.05; done
done
printf '%-34s %s s (runs: %s; debounce 300 ms included; target < 1 s)\n' "file edit -> new container started:" \
  "$(printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "${results[*]}"
stop

# ------------------------------------------------------------------ 2./3. 200 objects
mkdir -p "$TMP/many"
for ((i = 0; i < OBJECTS; i++)); do
  spec "$ID-w$i" "$REG/web:v1" $((BASE_PORT + i))
  echo "---"
done >"$TMP/many/all.yaml"
t0=$(date +%s%N)
start "$TMP/state-many" "$TMP/many" --max-concurrent 8
wait_ready 900 || { echo "200 objects not converged"; tail "$TMP/dockop.log"; exit 1; }
awk -v a="$t0" -v b="$(date +%s%N)" -v n="$OBJECTS" 'BEGIN { printf "%-34s %.1f s\n", "create " n " objects (--max-concurrent 8):", (b - a) / 1e9 }'
stop

# A fresh run over converged objects: one no-op reconcile each.
: >"$TMP/dockop.log"
t0=$(date +%s%N)
start "$TMP/state-many" "$TMP/many"
wait_log "first sync done" 300
t1=$(date +%s%N)
calls=$(engine_calls)
changed=$(grep -c ' changed ' "$TMP/dockop.log" || true)
ops=$(engine_ops)
awk -v a="$t0" -v b="$t1" -v n="$OBJECTS" -v c="$calls" -v ch="$changed" \
  'BEGIN { printf "%-34s %.2f s incl. process start (%d changed), %d engine calls = %.2f per object (target < 1 s)\n", "no-op pass over " n " objects:", (b - a) / 1e9, ch, c, c / n }'
printf '%-34s by op: %s(the list inspects every managed container on the engine; the health monitor runs too)\n' "" "$ops"
idle "idle, $OBJECTS objects:"
idle_true "truly idle, $OBJECTS objects:"
stop
