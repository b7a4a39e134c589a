#!/usr/bin/env bash
# Update outage benchmark: dockop vs Docker Swarm, side by side in one run, on the real OpenCode images of
# the test bed, with the same health settings (probe every 1 s, timeout 2 s, 3 failures, startup deadline /
# start period 60 s, init on, stop-first, host-mode port). A client probes the served port every 50 ms and
# the longest run of failed probes is the outage.
#
#   (a)  good update 1.18.33 -> 1.18.34           dockop (preflight on)   vs  swarm service update
#   (a') the same update with preflight off         (what preflight adds to a good update)
#   (b)  bad update -> opencode:bad (401), preflight off: dockop rolls back  vs  swarm --update-failure-action rollback
#   (c)  bad update with preflight on (dockop only: no peer does this)
#   ref  docker stop (init) + docker run to first healthy answer
#
# Usage: tests/bench/update.sh          (needs root, the test bed; takes about 4 minutes)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

REG=127.0.0.1:5000
OLD=$REG/opencode:1.18.33
NEW=$REG/opencode:1.18.34
BAD=$REG/opencode:bad
TAG=$REG/bench-opencode:live
PORT_D=14096
PORT_S=14097
PORT_R=14098
WORK=$(mktemp -d)
D=$ROOT/target/release/dockop
SWARM_INIT=0
PROBE_PID=

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

cleanup() {
  [ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null || true
  docker rm -f bench-oc bench-oc-previous bench-ref >/dev/null 2>&1 || true
  docker ps -aq --filter label=dockop.dev/name=bench-oc | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker service rm bench-swarm >/dev/null 2>&1 || true
  if [ "$SWARM_INIT" = 1 ]; then docker swarm leave --force >/dev/null 2>&1 || true; fi
  docker volume rm bench-oc-data >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

tests/testbed/up >/dev/null
cargo build --release -q -p dockop



# measure NAME URL COMMAND...: runs COMMAND while probing URL; stores the probe summary and the command's
# wall time in $WORK/NAME.json and $WORK/NAME.secs. SETTLE seconds of probing continue after it.
measure() {
  local name=$1 url=$2; shift 2
  python3 tests/bench/probe.py "$url" >"$WORK/$name.json" &
  PROBE_PID=$!
  sleep 1
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$WORK/$name.log" 2>&1 || true
  t1=$(date +%s.%N)
  python3 -c "print(round($t1 - $t0, 3))" >"$WORK/$name.secs"
  sleep "${SETTLE:-3}"
  kill "$PROBE_PID"; wait "$PROBE_PID" 2>/dev/null || true
  PROBE_PID=
}

field() { python3 -c "import json,sys; d=json.load(open('$WORK/$1.json')); print(d['$2'])"; }

write_spec() { # preflight
  cat >"$WORK/bench.yaml" <<EOF
apiVersion: dockop.dev/v1alpha1
kind: Container
metadata: {name: bench-oc}
spec:
  image: $TAG
  ports: [{containerPort: 4096, hostPort: $PORT_D}]
  volumes: [{name: bench-oc-data, mountPath: /root/.local/share/opencode}]
  health: {path: /global/health, port: 4096, intervalSeconds: 1, timeoutSeconds: 2, failureThreshold: 3, startupDeadlineSeconds: 60}
  update: {preflight: $1}
  init: true
  stopTimeoutSeconds: 10
EOF
}
DOCKOP=("$D" --state-dir "$WORK/state" apply -f "$WORK/bench.yaml")

# ---------------------------------------------------------------- reference: stop + start-to-healthy
say "reference: docker stop (init) + docker run to first healthy answer"
docker run -d --init --name bench-ref -p 127.0.0.1:$PORT_R:4096 "$NEW" >/dev/null
wait_healthy "http://127.0.0.1:$PORT_R/global/health"
t0=$(date +%s.%N); docker stop bench-ref >/dev/null; t1=$(date +%s.%N)
REF_STOP=$(python3 -c "print(round($t1 - $t0, 3))")
docker rm bench-ref >/dev/null
t0=$(date +%s.%N)
docker run -d --init --name bench-ref -p 127.0.0.1:$PORT_R:4096 "$NEW" >/dev/null
wait_healthy "http://127.0.0.1:$PORT_R/global/health"
t1=$(date +%s.%N)
REF_START=$(python3 -c "print(round($t1 - $t0, 3))")
docker rm -f bench-ref >/dev/null
REF=$(python3 -c "print(round($REF_STOP + $REF_START, 3))")

# ---------------------------------------------------------------- dockop
say "dockop: deploy $OLD"
push_tag "$OLD"
write_spec true
"${DOCKOP[@]}" >/dev/null 2>&1
wait_healthy "http://127.0.0.1:$PORT_D/global/health"
say "dockop (a): good update -> 1.18.34, preflight on"
push_tag "$NEW"
measure d_good "http://127.0.0.1:$PORT_D/global/health" "${DOCKOP[@]}"
say "dockop (a'): good update -> 1.18.33, preflight off"
write_spec false
push_tag "$OLD"
measure d_good_nopf "http://127.0.0.1:$PORT_D/global/health" "${DOCKOP[@]}"
say "dockop (b): bad update, preflight off"
push_tag "$BAD"
SETTLE=5 measure d_bad "http://127.0.0.1:$PORT_D/global/health" "${DOCKOP[@]}"
say "dockop (c): bad update, preflight on"
write_spec true
# A new digest of the bad release, so it is not skipped as already failed.
printf 'FROM %s\nLABEL bench.nonce=%s\n' "$BAD" "$(date +%s%N)" | DOCKER_BUILDKIT=0 docker build -q -t "$TAG" - >/dev/null
docker push -q "$TAG" >/dev/null
SETTLE=2 measure d_bad_pf "http://127.0.0.1:$PORT_D/global/health" "${DOCKOP[@]}"
docker ps -aq --filter label=dockop.dev/name=bench-oc | xargs -r docker rm -f >/dev/null

# ---------------------------------------------------------------- swarm
say "swarm: deploy $OLD"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
  SWARM_INIT=1
fi
HC='exec 3<>/dev/tcp/127.0.0.1/4096 && printf "GET /global/health HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3 | grep -q " 200 "'
docker service create -q --detach=false --name bench-swarm --init \
  --publish mode=host,target=4096,published=$PORT_S \
  --mount type=volume,source=bench-oc-data,target=/root/.local/share/opencode \
  --health-cmd "bash -c '$HC'" --health-interval 1s --health-timeout 2s --health-retries 3 --health-start-period 60s \
  --stop-grace-period 10s \
  --update-order stop-first --update-parallelism 1 --update-failure-action rollback \
  --rollback-order stop-first \
  "$OLD" >/dev/null
wait_healthy "http://127.0.0.1:$PORT_S/global/health"
say "swarm (a): good update -> 1.18.34"
measure s_good "http://127.0.0.1:$PORT_S/global/health" docker service update --detach=false --image "$NEW" bench-swarm
say "swarm (b): bad update -> opencode:bad (this takes over a minute)"
SETTLE=5 measure s_bad "http://127.0.0.1:$PORT_S/global/health" docker service update --detach=false --image "$BAD" bench-swarm

# ---------------------------------------------------------------- report
D_GOOD=$(field d_good longest_outage_s); S_GOOD=$(field s_good longest_outage_s)
D_BAD=$(field d_bad longest_outage_s); S_BAD=$(field s_bad longest_outage_s)
D_BAD_PF=$(field d_bad_pf longest_outage_s)
# What preflight itself took, as dockop reports it ("preflight passed in X s"): the candidate's create, start
# and health gate, on the same image as the reference run-to-healthy (its removal overlaps the next step).
PF_SELF=$(grep -oE 'preflight passed in [0-9.]+ s' "$WORK/d_good.log" | grep -oE '[0-9.]+' | head -1)
PF_ADDS=$(python3 -c "print(round($(cat "$WORK/d_good.secs") - $(cat "$WORK/d_good_nopf.secs"), 3))")
ratio() { python3 -c "a,b=$1,$2; print('%.2f' % (a/b) if b else 'n/a')"; }
cat <<EOF

update outage, real OpenCode (probe every 50 ms on the served port)          dockop     swarm   dockop/swarm
(a)  good update 1.18.33 -> 1.18.34 (outage, s)                              $(printf '%6.2f' "$D_GOOD")    $(printf '%6.2f' "$S_GOOD")   $(ratio "$D_GOOD" "$S_GOOD")
(b)  bad update -> 401, preflight off: outage until old version serves (s)   $(printf '%6.2f' "$D_BAD")    $(printf '%6.2f' "$S_BAD")   $(ratio "$D_BAD" "$S_BAD")
(c)  bad update, preflight on (outage, s)                                    $(printf '%6.2f' "$D_BAD_PF")         -
reference: docker stop (init) $(printf '%.2f' "$REF_STOP") s + run to healthy $(printf '%.2f' "$REF_START") s = $(printf '%.2f' "$REF") s; dockop (a) / reference = $(ratio "$D_GOOD" "$REF")
preflight of 1.18.34 took $(printf '%.2f' "${PF_SELF:-0}") s (dockop's own report) vs run to healthy $(printf '%.2f' "$REF_START") s: $(python3 -c "print('%+.2f' % (${PF_SELF:-0} - $REF_START))") s (target < +0.50 s)
dockop apply wall time: good update with preflight $(printf '%.2f' "$(cat "$WORK/d_good.secs")") s, without $(printf '%.2f' "$(cat "$WORK/d_good_nopf.secs")") s: preflight adds $(printf '%.2f' "$PF_ADDS") s
versions seen by the client: dockop (a) $(field d_good versions), (b) $(field d_bad versions); swarm (a) $(field s_good versions), (b) $(field s_bad versions)
EOF
