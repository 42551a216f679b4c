#!/usr/bin/env bash
# The operator's tools, logged in to the running native stack with its credentials (README, "Security"): every
# control plane needs them, and this reads them from the state directory's secrets, passing each through the
# environment or a file descriptor, never the command line (which every local user can read with `ps`).
#
#   native/admin.sh redis-cli INFO memory            Redis as its `admin` user
#   native/admin.sh psql -c 'SELECT 1'               Postgres as `postgres` over TCP, on the leader, database app
#   native/admin.sh patronictl list                  the Postgres cluster: members, leader, lag (switchover ...)
#   native/admin.sh etcdctl endpoint status -w table etcd as its `root` user, every member's endpoint
#   native/admin.sh amtool alert query               amtool against the stack's Alertmanager
#   native/admin.sh query 'sum(up) by (job)'         an instant query of the stack's Prometheus, one line a series
#   native/admin.sh curl /api/v1/targets             curl against Prometheus (a path) or any URL of the stack
#
# (Debian's promtool 2.42 cannot send credentials with `promtool query`; `query` here does its job.)
#
# Run as root (the secrets are root's alone), from anywhere; ports and STATE_DIR as in native/env.sh.
set -euo pipefail
source "$(dirname "$0")/env.sh"

secret() {
  [ -r "$SECRETS_DIR/$1" ] || { log "cannot read $SECRETS_DIR/$1 (run as root after make up)"; exit 1; }
  tr -d '\n' <"$SECRETS_DIR/$1"
}

tool=${1:-}
[ -n "$tool" ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
shift
case $tool in
  redis-cli) REDISCLI_AUTH=$(secret redis-admin.password) exec redis-cli -p "$REDIS_PORT" --user admin "$@" ;;
  psql) PGPASSWORD=$(secret postgres.password) exec psql "$(cluster_url postgres)" "$@" ;;
  # Any member's configuration names the cluster, etcd and the REST API's user (patronictl reads what it needs).
  # patronictl exits 0 even when it refuses a switchover: read what it prints.
  patronictl) exec patronictl -c "$STATE_DIR/$(hosts_of postgres | head -n 1 | cut -d' ' -f1)/patroni.yml" "$@" ;;
  etcdctl) ETCDCTL_API=3 ETCDCTL_ENDPOINTS=$(etcd_endpoints) ETCDCTL_USER=root:$(secret etcd-root.password) \
    exec etcdctl "$@" ;;
  amtool) exec amtool --alertmanager.url="${AMTOOL_URL:-$(first_url alertmanager ALERTMANAGER_PORT)}" \
    --http.config.file="$SECRETS_DIR/http-client.yml" "$@" ;;
  query)
    "$0" curl /api/v1/query --data-urlencode "query=${1:?query needs a PromQL expression}" | python3 -c '
import json, sys
body = json.load(sys.stdin)
if body.get("status") != "success":
    sys.exit("%s: %s" % (body.get("errorType"), body.get("error")))
for r in body["data"]["result"]:
    labels = ",".join("%s=\"%s\"" % kv for kv in sorted(r["metric"].items()))
    print("{" + labels + "}", r["value"][1])
' ;;
  curl)
    url=${1:?curl needs a URL or a Prometheus path}; shift
    case $url in /*) url=${PROMETHEUS_URL:-$(first_url prometheus PROMETHEUS_PORT)}$url ;; esac
    exec curl --netrc-file <(printf 'default login admin password %s\n' "$(secret web.password)") -sS "$url" "$@" ;;
  *) log "unknown tool '$tool' (redis-cli, psql, patronictl, etcdctl, amtool, query, curl)"; exit 2 ;;
esac
