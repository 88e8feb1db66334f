#!/usr/bin/env bash
# `make run`: a hub with three simulated clusters and the dashboard, the examples published,
# running until Ctrl-C (which stops the hub and every process it started).
set -euo pipefail
cd "$(dirname "$0")/.."

fleetbus=.venv/bin/fleetbus
data_dir=${FLEETBUS_DATA_DIR:-.fleetbus}
http=${FLEETBUS_HTTP:-127.0.0.1:8080}
# 443 is the production leafnode port; it needs root, so the local demo uses another one.
leaf_port=${FLEETBUS_LEAF_PORT:-7443}
nats_port=${FLEETBUS_NATS_PORT:-4222}

"$fleetbus" up --data-dir "$data_dir" --http "$http" --nats-port "$nats_port" \
  --leaf-port "$leaf_port" --sim-clusters 3 --log-format "${FLEETBUS_LOG_FORMAT:-text}" &
hub=$!
trap 'kill -INT "$hub" 2>/dev/null || true; wait "$hub" || true; exit 0' INT TERM

for _ in $(seq 1 120); do
  if [ -f "$data_dir/hub.json" ] && .venv/bin/python -c "import urllib.request as u; u.urlopen('http://$http/healthz', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$hub" 2>/dev/null; then
    wait "$hub"
    exit $?
  fi
  sleep 0.5
done

publish() { "$fleetbus" publish --data-dir "$data_dir" "$@" || true; }
publish examples/helm/web --name web --namespace web --selector env=prod
publish examples/kustomize/overlays/staging --name shop --namespace shop --selector env=dev
publish examples/yaml/status-board --name status-board --selector fleetbus.io/sim=true

cat <<MSG

fleetbus is running with 3 simulated clusters and the examples published.
  dashboard   http://$http/   (token: $data_dir/admin.token)
  try         $fleetbus status
              $fleetbus events
              $fleetbus override set web --name prod-values --selector env=prod --values examples/overrides/web-prod-values.yaml
Ctrl-C stops everything.
MSG
wait "$hub"
