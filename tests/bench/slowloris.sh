#!/usr/bin/env bash
# Slow-client benchmark of `dockop run`'s HTTP server: 150 clients each send a partial request line and
# trickle a header line every 0.5 s, never finishing the request head. Prints how long the server took to
# close them (the header read timeout is 10 s) and the latency of GET /livez on fresh connections before
# and during the attack (p50, p99, max) with the number of failed /livez answers.
#
# Usage: tests/bench/slowloris.sh [CLIENTS]   (needs the engine; about 15 s)
#   DOCKOP_BIN=path   use this binary instead of building target/debug/dockop
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

CLIENTS=${1:-150}
WORK=$(mktemp -d)
DOCKOP_PID=

cleanup() {
  if [ -n "$DOCKOP_PID" ]; then
    kill "$DOCKOP_PID" 2>/dev/null || true
    wait "$DOCKOP_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${DOCKOP_BIN:-}" ]; then
  cargo build -q -p dockop --bin dockop
  DOCKOP_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/dockop
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/spec" "$WORK/state"
"$DOCKOP_BIN" --state-dir "$WORK/state" run -f "$WORK/spec" --listen "127.0.0.1:$PORT" \
  --resync-seconds 600 >"$WORK/dockop.log" 2>&1 &
DOCKOP_PID=$!

python3 - "$PORT" "$CLIENTS" <<'PY'
import socket, sys, threading, time

port, clients = int(sys.argv[1]), int(sys.argv[2])
addr = ("127.0.0.1", port)

sys.path.insert(0, "tests/bench")
from livez import pct  # noqa: E402
import livez as probe  # noqa: E402

def livez():
    return probe.livez(addr)

deadline = time.monotonic() + 30
while not livez()[0]:
    if time.monotonic() > deadline:
        sys.exit("dockop never answered /livez")
    time.sleep(0.1)

def sample(seconds):
    lat, failed, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        ok, ms = livez()
        lat.append(ms)
        failed += not ok
        time.sleep(0.05)
    return lat, failed

base, base_failed = sample(2)

closed = []
def slow(start):
    try:
        s = socket.create_connection(addr, timeout=30)
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: b\r\n")
        s.settimeout(0.5)
        while True:
            try:
                if not s.recv(512):
                    break
            except socket.timeout:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    break
            except OSError:
                break
        s.close()
    except OSError:
        pass
    closed.append(time.monotonic() - start)

start = time.monotonic()
threads = [threading.Thread(target=slow, args=(start,), daemon=True) for _ in range(clients)]
for t in threads:
    t.start()
lat, failed = [], 0
while any(t.is_alive() for t in threads) and time.monotonic() - start < 60:
    ok, ms = livez()
    lat.append(ms)
    failed += not ok
    time.sleep(0.05)
print(f"slow clients: {clients}, closed by the server: {len(closed)}; "
      f"closed after min {min(closed):.2f} s, median {pct(closed, 0.5):.2f} s, max {max(closed):.2f} s "
      f"(header read timeout 10 s)")
print(f"/livez before: {len(base)} requests, {base_failed} failed, p50 {pct(base, .5):.1f} ms, "
      f"p99 {pct(base, .99):.1f} ms, max {max(base):.1f} ms")
print(f"/livez during: {len(lat)} requests, {failed} failed, p50 {pct(lat, .5):.1f} ms, "
      f"p99 {pct(lat, .99):.1f} ms, max {max(lat):.1f} ms")
PY
