#!/usr/bin/env bash
# Zero-downtime benchmark, side by side in one run, on the real OpenCode images of the test bed:
#
#   1. Updates under load: `wrk` (2 threads, 16 keep-alive connections) plus a client probing every 50 ms
#      (tests/bench/probe.py: longest gap) run through each update:
#        dockop start-first (behind `dockop proxy`)   good update 1.18.33 -> 1.18.34, bad release (401)
#        dockop stop-first                             the same
#        Docker Swarm stop-first (--update-failure-action rollback)   the same
#      Same health settings everywhere (probe 1 s, timeout 2 s, 3 failures), init on, preflight off.
#   2. The proxy's cost: wrk (2 threads, 32 connections, 10 s) on GET /global/health of one OpenCode
#      container: straight to its bridge address, through `dockop proxy`, and through Caddy
#      (`caddy reverse-proxy`, Debian's package, a Go proxy like kamal-proxy).
#
# Usage: tests/bench/zero-downtime.sh [--cost]   (root, the test bed; about 5 minutes, most of it Swarm's
#        rollback; --cost runs part 2 only, about 1 minute)
set -euo pipefail
MODE=${1:-all}
cd "$(dirname "$0")/../.."
ROOT=$PWD

REG=127.0.0.1:5000
OLD=$REG/opencode:1.18.33
NEW=$REG/opencode:1.18.34
BAD=$REG/opencode:bad
TAG=$REG/bench-zd:live
P_SF=14196   # dockop start-first
P_SS=14197   # dockop stop-first
P_SW=14198   # swarm
P_CADDY=14199
METRICS=14191
WORK=$(mktemp -d)
# DOCKOP_BENCH_BIN: a release binary already built (skips the build).
D=${DOCKOP_BENCH_BIN:-$ROOT/target/release/dockop}
CACHE=/var/cache/dockop-testbed
SWARM_INIT=0
PIDS=()

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in bench-sf bench-ss; do
    docker ps -aq --filter label=dockop.dev/name=$n | xargs -r docker rm -f >/dev/null 2>&1 || true
  done
  docker service rm bench-zd-swarm >/dev/null 2>&1 || true
  if [ "$SWARM_INIT" = 1 ]; then docker swarm leave --force >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

tests/testbed/up >/dev/null
[ -n "${DOCKOP_BENCH_BIN:-}" ] || cargo build --release -q -p dockop
command -v wrk >/dev/null || { say "wrk missing (tests/testbed/up installs it)"; exit 1; }

# Caddy: the static binary from Debian's package, unpacked once into the test bed's cache.
CADDY=$CACHE/caddy/usr/bin/caddy
if [ ! -x "$CADDY" ]; then
  mkdir -p "$CACHE/caddy"
  (cd "$CACHE" && apt-get download caddy >/dev/null 2>&1) || { apt-get update -qq && (cd "$CACHE" && apt-get download caddy >/dev/null); }
  dpkg -x "$(ls -t "$CACHE"/caddy_*.deb | head -1)" "$CACHE/caddy"
fi


# under_load NAME PORT COMMAND...: wrk + the 50 ms prober on PORT while COMMAND runs, then 3 s more.
under_load() {
  local name=$1 port=$2; shift 2
  local url="http://127.0.0.1:$port/global/health"
  python3 tests/bench/probe.py "$url" >"$WORK/$name.probe" &
  local probe=$!
  wrk -t2 -c16 -d300s --timeout 5s "$url" >"$WORK/$name.wrk" 2>&1 &
  local load=$!
  sleep 1
  "$@" >"$WORK/$name.log" 2>&1 || true
  sleep 3
  kill -INT "$load"; wait "$load" 2>/dev/null || true
  kill "$probe"; wait "$probe" 2>/dev/null || true
}
errors() { # NAME -> "requests socket_errors non_2xx"
  python3 - "$WORK/$1.wrk" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
req = re.search(r"(\d+) requests in", t)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
non = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(req.group(1) if req else 0, sum(map(int, sock.groups())) if sock else 0, non.group(1) if non else 0)
EOF
}
gap() { python3 -c "import json; print('%.2f' % json.load(open('$WORK/$1.probe'))['longest_outage_s'])"; }

write_spec() { # name port strategy
  cat >"$WORK/$1.yaml" <<EOF
apiVersion: dockop.dev/v1alpha1
kind: Container
metadata: {name: $1}
spec:
  image: $TAG
  ports: [{containerPort: 4096, hostPort: $2}]
  health: {path: /global/health, port: 4096, intervalSeconds: 1, timeoutSeconds: 2, failureThreshold: 3, startupDeadlineSeconds: 60}
  update: {preflight: false, strategy: $3, drainSeconds: 10}
  init: true
  stopTimeoutSeconds: 10
EOF
}

# ---------------------------------------------------------------- 1. updates under load
"$D" --state-dir "$WORK/state" proxy --metrics-listen 127.0.0.1:$METRICS >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_healthy "http://127.0.0.1:$METRICS/livez" 10
if [ "$MODE" = --cost ]; then
  write_spec bench-sf "$P_SF" start-first
  push_tag "$NEW"
  "$D" --state-dir "$WORK/state" apply -f "$WORK/bench-sf.yaml" >/dev/null 2>&1
  wait_healthy "http://127.0.0.1:$P_SF/global/health"
fi
for run in sf:$P_SF:start-first ss:$P_SS:stop-first; do
  [ "$MODE" = --cost ] && break
  IFS=: read -r short port strategy <<<"$run"
  say "dockop $strategy: deploy 1.18.33, then a good update and a bad release under load"
  write_spec "bench-$short" "$port" "$strategy"
  push_tag "$OLD"
  "$D" --state-dir "$WORK/state" apply -f "$WORK/bench-$short.yaml" >/dev/null 2>&1
  wait_healthy "http://127.0.0.1:$port/global/health"
  push_tag "$NEW"
  under_load "${short}_good" "$port" "$D" --state-dir "$WORK/state" apply -f "$WORK/bench-$short.yaml"
  push_tag "$BAD"
  under_load "${short}_bad" "$port" "$D" --state-dir "$WORK/state" apply -f "$WORK/bench-$short.yaml"
done

if [ "$MODE" != --cost ]; then
say "swarm stop-first: deploy 1.18.33, then a good update and a bad release under load (a minute or more)"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  SWARM_INIT=1
fi
HC='exec 3<>/dev/tcp/127.0.0.1/4096 && printf "GET /global/health HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3 | grep -q " 200 "'
docker service create -q --detach=false --name bench-zd-swarm --init \
  --publish mode=host,target=4096,published=$P_SW \
  --health-cmd "bash -c '$HC'" --health-interval 1s --health-timeout 2s --health-retries 3 --health-start-period 60s \
  --stop-grace-period 10s --update-order stop-first --update-failure-action rollback --rollback-order stop-first \
  "$OLD" >/dev/null
wait_healthy "http://127.0.0.1:$P_SW/global/health"
under_load sw_good "$P_SW" docker service update --detach=false --image "$NEW" bench-zd-swarm
under_load sw_bad "$P_SW" docker service update --detach=false --image "$BAD" bench-zd-swarm
fi

# ---------------------------------------------------------------- 2. the proxy's cost
say "proxy cost: direct vs dockop proxy vs caddy, 10 s each"
IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' bench-sf)
HOME=/tmp "$CADDY" reverse-proxy --from ":$P_CADDY" --to "$IP:4096" >"$WORK/caddy.log" 2>&1 &
PIDS+=($!)
wait_healthy "http://127.0.0.1:$P_CADDY/global/health" 10
cost() { # NAME URL
  wrk -t2 -c32 -d10s --latency "$2" >"$WORK/cost_$1.wrk" 2>&1
  python3 - "$WORK/cost_$1.wrk" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)
p = {k: ms(v, u) for k, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", t, re.M)}
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
print("%9.0f %8.2f %8.2f %6d" % (float(rps), p.get("50", 0), p.get("99", 0), sum(map(int, errs.groups())) if errs else 0))
EOF
}
wrk -t2 -c32 -d3s "http://$IP:4096/global/health" >/dev/null 2>&1   # warm-up
DIRECT=$(cost direct "http://$IP:4096/global/health")
PROXY=$(cost proxy "http://127.0.0.1:$P_SF/global/health")
CADDY_R=$(cost caddy "http://127.0.0.1:$P_CADDY/global/health")

# ---------------------------------------------------------------- report
row() { # label name
  read -r req sock non <<<"$(errors "$2")"
  printf '%-44s %9s %8s %8s %9s\n' "$1" "$req" "$sock" "$non" "$(gap "$2")"
}
[ "$MODE" = --cost ] || cat <<EOF

1. updates under wrk load (16 keep-alive connections), real OpenCode
                                             requests  sock-err  non-2xx  longest gap (s, 50 ms prober)
$(row "dockop start-first: good update" sf_good)
$(row "dockop start-first: bad release (401)" sf_bad)
$(row "dockop stop-first:  good update" ss_good)
$(row "dockop stop-first:  bad release (401)" ss_bad)
$(row "swarm stop-first:   good update" sw_good)
$(row "swarm stop-first:   bad release (401)" sw_bad)
EOF
cat <<EOF

2. the proxy's cost: GET /global/health, wrk 2 threads x 32 connections, 10 s
                                   req/s   p50 ms   p99 ms  sock-err
direct to the container   $DIRECT
through dockop proxy      $PROXY
through caddy             $CADDY_R
EOF
python3 - "$DIRECT" "$PROXY" "$CADDY_R" <<'EOF'
import sys
d, p, c = (list(map(float, a.split())) for a in sys.argv[1:])
print("dockop proxy / direct throughput: %.2f (target >= 0.80); / caddy: %.2f (target >= 1.00)" % (p[0] / d[0], p[0] / c[0]))
print("p50: dockop proxy %.2f ms vs caddy %.2f ms (target: at most caddy's)" % (p[1], c[1]))
EOF
