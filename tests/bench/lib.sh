# Shell helpers the benchmarks share (sourced, not run). Callers set TAG before using push_tag.
say() { printf '%s\n' "$*" >&2; }
# push_tag IMAGE: points $TAG at IMAGE in the registry.
push_tag() { docker tag "$1" "$TAG" && docker push -q "$TAG" >/dev/null; }
# wait_healthy URL [SECONDS]: until URL answers 2xx (default 90 s).
wait_healthy() {
  local url=$1 deadline=$(( $(date +%s) + ${2:-90} ))
  until curl -sf -m 1 "$url" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { say "timeout waiting for $url"; return 1; }
    sleep 0.1
  done
}
