#!/usr/bin/env bash
# Smoke test of a Helm release (the reference's script name and flags): port-forwards the
# release's webhook Service and runs scripts/smoke.sh through it (docs/deploy.md).
#
#   scripts/smoke-onboarding.sh --provider generic --release tap --namespace tap --secret S
#       [--tenant T] [--service NAME] [--local-port 18080] [--admin-service NAME] [--timeout 10]
#       [--no-wait]
#
# Arrival is confirmed through GET /admin/events (TAP_ADMIN_TOKEN, the ClickHouse sink on):
# --admin-service port-forwards the Service that serves /admin when it is not the webhook one.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

provider="" release="" namespace="" tenant="" service="" admin_service=""
local_port="18080" admin_port="18081" timeout="10" no_wait=""
secret="${TAP_SEND_SECRET:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --provider) provider="${2:?--provider needs a value}"; shift 2 ;;
    --release) release="${2:?--release needs a value}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --secret) secret="${2:?--secret needs a value}"; shift 2 ;;
    --tenant) tenant="${2:?--tenant needs a value}"; shift 2 ;;
    --service) service="${2:?--service needs a value}"; shift 2 ;;
    --admin-service) admin_service="${2:?--admin-service needs a value}"; shift 2 ;;
    --local-port) local_port="${2:?--local-port needs a value}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift 2 ;;
    --no-wait) no_wait="--no-wait"; shift ;;
    -h | --help) usage 0 ;;
    *) echo "smoke-onboarding.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ -n "$provider" && -n "$release" && -n "$namespace" && -n "$secret" ]] || {
  echo "smoke-onboarding.sh: --provider, --release, --namespace and --secret are required" >&2
  usage 2
}
command -v kubectl >/dev/null || { echo "smoke-onboarding.sh: kubectl not found" >&2; exit 1; }
service="${service:-$release-ensemble-tap}"

forwards=()
cleanup() {
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

forward() {  # forward SERVICE LOCAL_PORT: port-forward and wait until the port answers
  kubectl --namespace "$namespace" port-forward "service/$1" "$2:8080" >/dev/null &
  forwards+=("$!")
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "smoke-onboarding.sh: port-forward to service/$1 did not come up" >&2
  exit 1
}

forward "$service" "$local_port"
args=(--url "http://127.0.0.1:$local_port" --provider "$provider" --timeout "$timeout")
[[ -z "$tenant" ]] || args+=(--tenant "$tenant")
[[ -z "$no_wait" ]] || args+=("$no_wait")
if [[ -n "$admin_service" && -z "$no_wait" ]]; then
  forward "$admin_service" "$admin_port"
  args+=(--admin-url "http://127.0.0.1:$admin_port")
fi
TAP_SEND_SECRET="$secret" "$(dirname "$0")/smoke.sh" "${args[@]}"
