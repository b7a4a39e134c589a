#!/usr/bin/env bash
# Hostile-input benchmark of `dockop run` (issue 19): the release build watches a spec directory (file
# source) and serves HTTP. GET /livez latency (p50, p99, max; fresh connection per request) is measured
# first on a quiet directory, then while a 1 MiB hostile YAML file (about 43,000 unknown keys, the file
# that once stalled /livez for a minute) is rewritten in the watched directory every 0.5 s. Prints both
# side by side, the number of rewrites, and how many warning/error lines dockop logged for them.
# Target: p99 < 100 ms while the hostile file is seen.
#
# Usage: tests/bench/hostile-livez.sh [REQUESTS] [PAUSE_MS]   (default 2000 per phase, 5 ms apart: about
#        15 s a phase, some 30 rewrites; no container is created)
#   DOCKOP_BIN=path   use this binary instead of building target/release/dockop
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. tests/bench/lib.sh

REQUESTS=${1:-2000}
PAUSE_MS=${2:-5}
WORK=$(mktemp -d)
DOCKOP_PID=
WRITER_PID=

cleanup() {
  for pid in $WRITER_PID $DOCKOP_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${DOCKOP_BIN:-}" ]; then
  cargo build -q --release -p dockop --bin dockop
  DOCKOP_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/dockop
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/spec" "$WORK/state"
"$DOCKOP_BIN" --state-dir "$WORK/state" run -f "$WORK/spec" --listen "127.0.0.1:$PORT" \
  --resync-seconds 600 >"$WORK/dockop.log" 2>&1 &
DOCKOP_PID=$!
wait_healthy "http://127.0.0.1:$PORT/livez" 30

# The hostile file, two variants (so each rewrite is a change), written next to the spec dir and moved in.
python3 - "$WORK" <<'PY'
import sys
work = sys.argv[1]
for variant in ("a", "b"):
    text = "apiVersion: dockop.dev/v1alpha1\nkind: Container\nmetadata: {name: web}\nspec:\n  image: 127.0.0.1:5000/web:v1\n"
    parts, n = [text], 0
    size = len(text)
    while size < 1024 * 1024 - 40:
        line = f"  unknownkey{variant}{n}: {n}\n"
        parts.append(line)
        size += len(line)
        n += 1
    open(f"{work}/hostile-{variant}.yaml", "w").write("".join(parts))
PY

# measure LABEL: REQUESTS sequential GET /livez, each on a fresh connection, PAUSE_MS apart; prints
# "LABEL n p50 p99 max failed".
measure() { python3 tests/bench/livez.py "$PORT" "$REQUESTS" "$1" "$PAUSE_MS"; }

say "quiet: $REQUESTS requests"
QUIET=$(measure quiet)
LINES_BEFORE=$(grep -c -E 'WARN|ERROR' "$WORK/dockop.log" || true)
# Writer: replace the hostile file every 0.5 s, alternating the two variants (atomic rename, as editors do).
(
  i=0
  while :; do
    v=$([ $((i % 2)) -eq 0 ] && echo a || echo b)
    cp "$WORK/hostile-$v.yaml" "$WORK/spec/.hostile.tmp" && mv "$WORK/spec/.hostile.tmp" "$WORK/spec/hostile.yaml"
    i=$((i + 1))
    echo "$i" >"$WORK/rewrites"
    sleep 0.5
  done
) &
WRITER_PID=$!
sleep 1
say "hostile: $REQUESTS requests while the 1 MiB file is rewritten every 0.5 s"
HOSTILE=$(measure hostile)
kill "$WRITER_PID" 2>/dev/null || true
wait "$WRITER_PID" 2>/dev/null || true
WRITER_PID=
sleep 1
REWRITES=$(cat "$WORK/rewrites")
LINES_AFTER=$(grep -c -E 'WARN|ERROR' "$WORK/dockop.log" || true)

printf '\n%-8s %8s %9s %9s %9s %7s\n' phase requests "p50 ms" "p99 ms" "max ms" failed
for row in "$QUIET" "$HOSTILE"; do
  # shellcheck disable=SC2086
  printf '%-8s %8s %9s %9s %9s %7s\n' $row
done
P99=$(echo "$HOSTILE" | awk '{print $4}')
echo "hostile file rewritten $REWRITES times; dockop logged $((LINES_AFTER - LINES_BEFORE)) warning/error lines meanwhile"
echo "target: p99 < 100 ms while dockop sees the hostile file -> $(awk -v p="$P99" 'BEGIN{print (p < 100) ? "met" : "MISSED"}')"
