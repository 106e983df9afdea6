#!/usr/bin/env bash
# Smoke test: one signed test delivery, answered 202 and seen arriving (docs/deploy.md).
#
#   scripts/smoke.sh --url http://localhost:8080 --provider stripe --secret whsec_…
#                    [--tenant T] [--nats nats://…:4222 | --admin-url URL] [--timeout 10]
#                    [--no-wait]
#
# Arrival is confirmed from the stream with --nats, else through GET /admin/events
# (TAP_ADMIN_TOKEN and the ClickHouse sink). The secret may come from TAP_SEND_SECRET
# instead of --secret (kept out of the process list); --no-wait only checks the 202 (no sink
# to confirm through). ENSEMBLE_TAP names the command to run
# (default: ensemble-tap on PATH).
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

url="" provider="" tenant="" nats="" admin_url="" timeout="10" wait=1
secret="${TAP_SEND_SECRET:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --url) url="${2:?--url needs a value}"; shift 2 ;;
    --provider) provider="${2:?--provider needs a value}"; shift 2 ;;
    --secret) secret="${2:?--secret needs a value}"; shift 2 ;;
    --tenant) tenant="${2:?--tenant needs a value}"; shift 2 ;;
    --nats) nats="${2:?--nats needs a value}"; shift 2 ;;
    --admin-url) admin_url="${2:?--admin-url needs a value}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
    --no-wait) wait=0; shift ;;
    -h | --help) usage 0 ;;
    *) echo "smoke.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$url" && -n "$provider" && -n "$secret" ]] || {
  echo "smoke.sh: --url, --provider and --secret (or TAP_SEND_SECRET) are required" >&2
  usage 2
}

tap="${ENSEMBLE_TAP:-ensemble-tap}"
command -v "$tap" >/dev/null || { echo "smoke.sh: $tap not found (pip install ensemble-tap)" >&2; exit 1; }
args=(send "$provider" --url "$url" --expect 202)
[[ "$wait" -eq 0 ]] || args+=(--wait --wait-timeout "$timeout")
[[ -z "$tenant" ]] || args+=(--tenant "$tenant")
[[ -z "$nats" ]] || args+=(--nats "$nats")
[[ -z "$admin_url" ]] || args+=(--admin-url "$admin_url")
TAP_SEND_SECRET="$secret" exec "$tap" "${args[@]}"
