#!/usr/bin/env python3
"""Probe an HTTP health URL every 50 ms until SIGTERM/SIGINT or --seconds, then print one JSON summary:
failures, the longest outage (seconds of consecutive failed probes), and the versions seen in order.

Used by the benchmarks to measure what a client of the served port sees during an update."""
import argparse, json, signal, sys, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("--interval", type=float, default=0.05)
ap.add_argument("--timeout", type=float, default=0.5)
ap.add_argument("--seconds", type=float, default=600)
a = ap.parse_args()

stop = False
def _stop(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)

probes = failures = 0
outage_start = None
longest = 0.0
outages = []
versions = []
end = time.monotonic() + a.seconds
while not stop and time.monotonic() < end:
    t = time.monotonic()
    ok, version = False, None
    try:
        with urllib.request.urlopen(a.url, timeout=a.timeout) as r:
            body = r.read(65536)
            ok = 200 <= r.status < 300
            try:
                doc = json.loads(body)
                if isinstance(doc, dict):
                    ok = ok and doc.get("healthy", True) is True
                    version = doc.get("version")
            except ValueError:
                pass
    except Exception:
        ok = False
    probes += 1
    if ok:
        if outage_start is not None:
            dur = t - outage_start
            outages.append(round(dur, 3))
            longest = max(longest, dur)
            outage_start = None
        if version is not None and (not versions or versions[-1] != version):
            versions.append(version)
    else:
        failures += 1
        if outage_start is None:
            outage_start = t
    time.sleep(max(0.0, a.interval - (time.monotonic() - t)))
if outage_start is not None:
    dur = time.monotonic() - outage_start
    outages.append(round(dur, 3))
    longest = max(longest, dur)
print(json.dumps({"probes": probes, "failures": failures, "longest_outage_s": round(longest, 3),
                  "outages_s": outages, "versions": versions, "still_down": outage_start is not None}))
