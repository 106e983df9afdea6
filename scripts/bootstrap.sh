#!/usr/bin/env bash
# From nothing to the first accepted event on a Kubernetes cluster (docs/deploy.md):
# checks its tools, writes values.onboarding.yaml, creates or updates the release's Secret,
# installs or upgrades the chart (helm upgrade --install --wait) and runs the smoke test.
#
#   scripts/bootstrap.sh --provider P --secret S [--release tap] [--namespace ensemble-tap]
#       [--nats-url nats://nats:4222]
#       [--clickhouse-addr HOST:8123 --clickhouse-password PW] [--chart charts/ensemble-tap]
#       [--values-file values.onboarding.yaml] [--dry-run]
#
# Run in a terminal without --provider/--secret, it asks for them (the secret unechoed).
# --dry-run prints every command (secrets masked) and the values file, and runs nothing.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-0}"
}

here="$(cd "$(dirname "$0")" && pwd)"
provider="" secret="" release="tap" namespace="ensemble-tap" chart="$here/../charts/ensemble-tap"
nats_url="nats://nats:4222"
clickhouse_addr="" clickhouse_password="" values_file="values.onboarding.yaml" dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --provider) provider="${2:?--provider needs a value}"; shift 2 ;;
    --secret) secret="${2:?--secret needs a value}"; shift 2 ;;
    --release) release="${2:?--release needs a value}"; shift 2 ;;
    --namespace) namespace="${2:?--namespace needs a value}"; shift 2 ;;
    --chart) chart="${2:?--chart needs a value}"; shift 2 ;;
    --nats-url) nats_url="${2:?--nats-url needs a value}"; shift 2 ;;
    --clickhouse-addr) clickhouse_addr="${2:?--clickhouse-addr needs a value}"; shift 2 ;;
    --clickhouse-password) clickhouse_password="${2:?--clickhouse-password needs a value}"; shift 2 ;;
    --values-file) values_file="${2:?--values-file needs a value}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "bootstrap.sh: unknown argument: $1" >&2; usage 2 ;;
  esac
done

if [[ -z "$provider" && -t 0 ]]; then read -r -p "Provider (stripe, github, hubspot, linear, shopify or a generic name): " provider; fi
if [[ -z "$secret" && -t 0 ]]; then read -r -s -p "Signing secret of $provider: " secret; echo; fi
[[ -n "$provider" && -n "$secret" ]] || { echo "bootstrap.sh: --provider and --secret are required" >&2; usage 2; }
[[ "$provider" =~ ^[a-z][a-z0-9_-]*$ ]] || { echo "bootstrap.sh: provider must be lower case: $provider" >&2; exit 2; }
if [[ -n "$clickhouse_addr" && -z "$clickhouse_password" ]]; then
  echo "bootstrap.sh: --clickhouse-addr needs --clickhouse-password" >&2
  exit 2
fi

secret_name="$release-ensemble-tap-onboarding"
# The admin token the smoke test reads /admin/events with (kept in the release's Secret).
admin_token="${TAP_ADMIN_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}"
provider_env="$(printf '%s' "$provider" | tr 'a-z-' 'A-Z_')_SIGNING_SECRET"

# run CMD…: print it (secrets masked) and run it, or only print it with --dry-run.
run() {
  local shown="$*"
  shown="${shown//"$secret"/****}"
  shown="${shown//"$admin_token"/****}"
  [[ -z "$clickhouse_password" ]] || shown="${shown//"$clickhouse_password"/****}"
  echo "+ $shown"
  if [[ "$dry_run" -eq 0 ]]; then "$@"; fi
}

values() {
  cat <<YAML
# Written by scripts/bootstrap.sh for release $release in namespace $namespace.
existingSecret: $secret_name
config:
  nats:
    url: $nats_url
  server:
    admin_token: \${TAP_ADMIN_TOKEN}
  providers:
    $provider:
      secret: \${$provider_env}
YAML
  if [[ -n "$clickhouse_addr" ]]; then
    cat <<YAML
  clickhouse:
    addr: $clickhouse_addr
    password: \${CLICKHOUSE_PASSWORD}
YAML
  fi
}

for tool in kubectl helm ensemble-tap; do
  if [[ "$dry_run" -eq 1 ]]; then
    echo "+ command -v $tool"
  elif ! command -v "$tool" >/dev/null; then
    echo "bootstrap.sh: $tool is needed (kubectl and helm from your platform, ensemble-tap: pip install ensemble-tap)" >&2
    exit 1
  fi
done

if [[ "$dry_run" -eq 1 ]]; then
  echo "+ write $values_file:"
  values | sed 's/^/  /'
else
  values >"$values_file"
  echo "wrote $values_file"
fi

literals=(--from-literal="$provider_env=$secret" --from-literal="TAP_ADMIN_TOKEN=$admin_token")
shown=(--from-literal="$provider_env=****" --from-literal="TAP_ADMIN_TOKEN=****")
if [[ -n "$clickhouse_password" ]]; then
  literals+=(--from-literal="CLICKHOUSE_PASSWORD=$clickhouse_password")
  shown+=(--from-literal="CLICKHOUSE_PASSWORD=****")
fi
echo "+ kubectl get namespace $namespace || kubectl create namespace $namespace"
if [[ "$dry_run" -eq 0 ]] && ! kubectl get namespace "$namespace" >/dev/null 2>&1; then
  kubectl create namespace "$namespace"
fi
# Created or updated in place: rendered by kubectl, then applied.
echo "+ kubectl --namespace $namespace create secret generic $secret_name ${shown[*]} --dry-run=client -o yaml | kubectl apply -f -"
if [[ "$dry_run" -eq 0 ]]; then
  kubectl --namespace "$namespace" create secret generic "$secret_name" "${literals[@]}" \
    --dry-run=client -o yaml | kubectl apply -f -
fi
run helm upgrade --install "$release" "$chart" --namespace "$namespace" --values "$values_file" --wait --timeout 5m
# Arrival is confirmed through /admin/events when the sink runs (ClickHouse given); else the
# smoke test checks the 202 only.
smoke=(--provider "$provider" --release "$release" --namespace "$namespace")
if [[ -n "$clickhouse_addr" ]]; then
  smoke+=(--admin-service "$release-ensemble-tap-admin")
else
  smoke+=(--no-wait)
fi
TAP_SEND_SECRET="$secret" TAP_ADMIN_TOKEN="$admin_token" run "$here/smoke-onboarding.sh" "${smoke[@]}"
