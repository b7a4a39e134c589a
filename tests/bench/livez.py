"""GET /livez on a fresh connection, timed; shared by the HTTP benchmarks (imported, or run as
`python3 tests/bench/livez.py PORT REQUESTS LABEL [PAUSE_MS]`: REQUESTS sequential requests, PAUSE_MS
apart, then one line `LABEL requests p50 p99 max failed`, milliseconds)."""
import socket
import sys
import time


def livez(addr):
    """(answered 200, milliseconds) for one GET /livez to addr on a new connection."""
    t = time.monotonic()
    try:
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        ok = data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, (time.monotonic() - t) * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


if __name__ == "__main__":
    port, n, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    pause = float(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0
    lat, failed = [], 0
    for _ in range(n):
        ok, ms = livez(("127.0.0.1", port))
        lat.append(ms)
        failed += not ok
        time.sleep(pause)
    print(f"{label} {len(lat)} {pct(lat, .5):.2f} {pct(lat, .99):.2f} {max(lat):.2f} {failed}")
