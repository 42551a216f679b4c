#!/usr/bin/env bash
# `make gameday`: runs `opsctl gameday` against the running native stack (start it with `make up`): every alert's
# fault injected, its notification awaited at the inbox, the fault removed, the resolution awaited; plus the quiet
# period and the proofs. Takes about half an hour. Inventory: $STATE_DIR/gameday/gameday.md and gameday.json.
# GAMEDAY_ARGS adds options (e.g. GAMEDAY_ARGS="--only redis-down --quiet 0s" while working on one scenario).
set -euo pipefail
source "$(dirname "$0")/env.sh"
# The drills write target and rule files under the state directory: root's alone, as the rest of it.
umask 077
load_secrets
cd "$REPO_ROOT"
[ -x "$BIN_DIR/opsctl" ] || cargo build --quiet --workspace --bins
# A game day killed during the replica-lag drill left a standby's replay stopped.
continue_members
# shellcheck disable=SC2086 # GAMEDAY_ARGS is a list of options
exec "$BIN_DIR/opsctl" gameday \
  --app "http://127.0.0.1:$APP_PORT" --replica-api "$(urls_of app APP_REPLICA_PORT)" \
  --admin "$(urls_of app APP_ADMIN_PORT)" --haproxy-metrics "http://127.0.0.1:$HAPROXY_METRICS_PORT" \
  --prometheus "$(first_url prometheus PROMETHEUS_PORT)" --alertmanager "$(urls_of alertmanager ALERTMANAGER_PORT)" \
  --alertmanager-peer-timeout "$ALERTMANAGER_PEER_TIMEOUT" \
  --inbox "http://127.0.0.1:$INBOX_PORT" --database-url "$(cluster_url postgres)" --patroni "$(urls_of postgres PATRONI_PORT)" \
  --etcd "$(urls_of etcd ETCD_CLIENT_PORT)" --host-cgroups "$HOST_CGROUPS" --redis-addr "127.0.0.1:$REDIS_PORT" \
  --ctl "$REPO_ROOT/native/ctl.sh" --prometheus-dir "$STATE_DIR/prometheus" --out-dir "$STATE_DIR/gameday" \
  ${GAMEDAY_ARGS:-}
