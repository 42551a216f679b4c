#!/usr/bin/env bash
# What an unprivileged local user can do to the running stack: every attack of the threat model (README,
# "Security"), run as `nobody` with `runuser`, must be refused, and each refusal must be the defence's own answer
# (401, NOAUTH, a failed password, a permission denied), never a connection refused, which would pass while the
# program is simply down. Beside each attack, the same request with the stack's credentials (as root) must work,
# so that a check cannot pass because the thing it attacks is gone.
#
# Run by `make test` on its own stack; by hand on `make up`'s: `native/local-user-test.sh`. Exit 1 on any failure.
set -uo pipefail
source "$(dirname "$0")/env.sh"

ATTACKER=${ATTACKER:-nobody}
failures=0
checks=0

# check NAME EXPECTED_PATTERN COMMAND...: runs COMMAND, passes when its output (stdout and stderr, with the exit
# status appended) matches the extended regular expression EXPECTED_PATTERN.
check() {
  local name=$1 expected=$2; shift 2
  local out
  out=$("$@" 2>&1; echo "exit=$?")
  checks=$((checks + 1))
  if grep -Eq -- "$expected" <<<"$out"; then
    printf 'ok    %s\n' "$name"
  else
    failures=$((failures + 1))
    printf 'FAIL  %s\n      expected /%s/, got: %s\n' "$name" "$expected" "$(tr '\n' ' ' <<<"$out" | cut -c1-300)"
  fi
}
as_attacker() { runuser -u "$ATTACKER" -- "$@"; }
# The HTTP status of a request (curl never fails here: 000 means no answer).
status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
secret() { cat "$SECRETS_DIR/$1"; }
# The same with the web credentials (curl_web reads them from a descriptor).
web_status() { curl_web -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }
# psql and redis-cli as a role or user of the stack, the password in the environment, never on a command line.
# Postgres is the cluster's leader (the members' own addresses: native/postgres-cluster.sh).
read -r pg_leader pg_addr < <(cluster_leader) || { echo "the Postgres cluster has no leader" >&2; exit 1; }
psql_as() { PGPASSWORD=$(secret "$3") psql -w -qAt -h "$pg_addr" -p "$PG_PORT" -U "$1" -d "$2" -c "$4"; }
redis_as() { local user=$1 file=$2; shift 2; REDISCLI_AUTH=$(secret "$file") redis-cli -p "$REDIS_PORT" --user "$user" "$@"; }
# Prints "none" when COMMAND prints nothing, else what it printed.
none() { local out; out=$("$@" 2>&1 | head -n 5); echo "${out:-none}"; }

prom=$(first_url prometheus PROMETHEUS_PORT)
am=$(first_url alertmanager ALERTMANAGER_PORT)
inbox=http://127.0.0.1:$INBOX_PORT
admin=$(first_url app APP_ADMIN_PORT)
forged_alert='[{"labels":{"alertname":"ForgedPage","severity":"critical","service":"app"}}]'
forged_silence='{"matchers":[{"name":"alertname","value":".+","isRegex":true}],"startsAt":"2020-01-01T00:00:00Z","endsAt":"2099-01-01T00:00:00Z","createdBy":"x","comment":"x"}'
forged_hook='{"version":"4","status":"firing","receiver":"heartbeat","alerts":[{"status":"firing","labels":{"alertname":"Watchdog"}}]}'

echo "== Postgres (finding 3: superuser for anyone)"
check "nobody cannot reach the leader's socket directory" 'Permission denied|No such file' \
  as_attacker ls "$STATE_DIR/$pg_leader"
check "nobody cannot log in as postgres through the socket" 'Permission denied|password authentication failed|no password supplied' \
  as_attacker psql -w -h "$STATE_DIR/$pg_leader" -p "$PG_PORT" -U postgres -d postgres -c 'SELECT 1'
check "nobody cannot log in as postgres over TCP without the password" 'password authentication failed|no password supplied' \
  as_attacker psql -w -h "$pg_addr" -p "$PG_PORT" -U postgres -d postgres -c 'SELECT 1'
check "nobody cannot log in as app with the old default password" 'password authentication failed' \
  as_attacker env PGPASSWORD=app psql -w -h "$pg_addr" -p "$PG_PORT" -U app -d app -c 'SELECT 1'
check "the postgres superuser logs in over TCP with its password" '^1$' \
  psql_as postgres postgres postgres.password 'SELECT 1'
check "the app's role is no superuser and cannot create roles or schemas" '^f\|f\|f$' \
  psql_as app app pg-app.password \
  "SELECT rolsuper, rolcreaterole, has_database_privilege('app', 'CREATE') FROM pg_roles WHERE rolname = current_user"
check "the app's table is in the app's schema" '^1$' \
  psql_as app app pg-app.password "SELECT count(*) FROM pg_tables WHERE schemaname = 'app' AND tablename = 'kv_store'"
check "the exporter's role cannot read the app's data" 'permission denied for (schema app|table kv_store)' \
  psql_as postgres_exporter app pg-exporter.password "SELECT count(*) FROM app.kv_store"

echo "== the Postgres cluster (whoever writes etcd's keys or calls Patroni's API decides who leads)"
etcd_first=$(etcd_endpoints | cut -d, -f1)
# The leader key, base64 (etcd's JSON gateway): /service/sre-stack/leader.
leader_key=$(printf '/service/sre-stack/leader' | base64)
check "nobody cannot read a member's Patroni configuration (its passwords)" 'Permission denied' \
  as_attacker cat "$STATE_DIR/$pg_leader/patroni.yml"
check "nobody cannot write the leader key into etcd" 'user name is empty' \
  as_attacker curl -s --max-time 5 -X POST "http://$etcd_first/v3/kv/put" -d "{\"key\":\"$leader_key\",\"value\":\"eA==\"}"
check "nobody cannot read the cluster's keys from etcd" 'user name is empty' \
  as_attacker curl -s --max-time 5 -X POST "http://$etcd_first/v3/kv/range" -d "{\"key\":\"$leader_key\"}"
check "etcd's root user reads the leader key" "^$pg_leader" \
  "$REPO_ROOT/native/admin.sh" etcdctl get --print-value-only /service/sre-stack/leader
# A raft message from outside would need the members' certificate: the TLS handshake itself is refused.
check "nobody cannot talk to etcd's raft port without the members' certificate" 'bad certificate|certificate required' \
  as_attacker curl --http1.1 -sS -k --max-time 5 "https://${etcd_first%:*}:$ETCD_PEER_PORT/version"
check "etcd's raft port answers the members' certificate" '"etcdserver"' \
  curl --http1.1 -sS --max-time 5 --cacert "$SECRETS_DIR/etcd-ca.crt" --cert "$SECRETS_DIR/etcd-peer.crt" \
  --key "$SECRETS_DIR/etcd-peer.key" "https://${etcd_first%:*}:$ETCD_PEER_PORT/version"
check "nobody cannot ask Patroni for a switchover" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  --max-time 5 -X POST "http://$pg_addr:$PATRONI_PORT/switchover" -d "{\"leader\":\"$pg_leader\"}"
check "nobody cannot restart a member through Patroni" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  --max-time 5 -X POST "http://$pg_addr:$PATRONI_PORT/restart" -d '{}'
# reload re-reads the configuration: harmless, and it takes the same credentials as a switchover.
check "Patroni's API takes its user's password" '^202' curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
  --netrc-file <(printf 'default login patroni password %s\n' "$(secret patroni.password | tr -d '\n')") \
  -X POST "http://$pg_addr:$PATRONI_PORT/reload"
check "nobody cannot log in as the replication role without its password" 'password authentication failed|no password supplied' \
  as_attacker psql -w -h "$pg_addr" -p "$PG_PORT" -U replicator -d postgres -c 'SELECT 1'

echo "== Redis (finding 2: cache poisoning)"
# An entry as the app writes them (app:kv:<epoch>:<key>, "<version>:<json>"), with a version no write can reach.
epoch=$(psql_as app app pg-app.password "SELECT epoch FROM kv_cache_epoch" 2>/dev/null || echo 1)
check "nobody cannot write a cache entry without credentials" 'NOAUTH|NOPERM|WRONGPASS' \
  as_attacker redis-cli -p "$REDIS_PORT" SET "app:kv:$epoch:poisoned" '999999999999:"poisoned"'
check "nobody cannot log in as default with an empty password" 'WRONGPASS|NOAUTH|disabled' \
  as_attacker redis-cli -p "$REDIS_PORT" --user default --pass '' --no-auth-warning PING
check "the app's user cannot run CONFIG" 'NOPERM' redis_as app redis-app.password CONFIG GET maxmemory
check "the app's user cannot write outside its prefix" 'NOPERM' redis_as app redis-app.password SET other:key x
check "the exporter's user cannot write" 'NOPERM' redis_as exporter redis-exporter.password SET app:kv:x y
check "the admin user answers" '^PONG' redis_as admin redis-admin.password PING

echo "== Prometheus and Alertmanager (finding 6: open control planes)"
check "nobody cannot reload Prometheus" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' -X POST "$prom/-/reload"
check "nobody cannot stop Prometheus" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' -X POST "$prom/-/quit"
check "nobody cannot query Prometheus" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' "$prom/api/v1/query?query=up"
check "Prometheus answers with the credentials" '^200' web_status "$prom/api/v1/query?query=up"
check "nobody cannot send an alert to Alertmanager" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -d "$forged_alert" "$am/api/v2/alerts"
check "nobody cannot create a silence" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -d "$forged_silence" "$am/api/v2/silences"
check "Alertmanager answers with the credentials" '^200' web_status "$am/api/v2/status"
# Every replica and peer guards itself, not only the first one.
for url in $(urls_of prometheus PROMETHEUS_PORT | tr , ' ') $(urls_of alertmanager ALERTMANAGER_PORT | tr , ' '); do
  check "nobody cannot read $url" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' "$url/metrics"
  check "$url answers with the credentials" '^200' web_status "$url/metrics"
done

echo "== the Alertmanager cluster (its gossip would carry silences and the notification log)"
# A peer of nobody's own, run as nobody with a configuration of its own, asks to join the cluster: the peers
# answer only a peer that presents the cluster's certificate. While it tries, the first peer must still count
# exactly the stack's peers; beside it, the first peer sees every real peer (the check cannot pass on a cluster
# that is simply not formed).
peers_seen() {
  curl_web -s --max-time 5 "$am/api/v2/status" |
    python3 -c 'import json, sys; print("peers", len(json.load(sys.stdin)["cluster"]["peers"]))'
}
ROGUE_PEER=127.0.9.250:19093
rogue_peer() {
  local dir pid first
  dir=$(mktemp -d)
  chmod 0777 "$dir"
  printf 'route: {receiver: none}\nreceivers: [{name: none}]\n' > "$dir/alertmanager.yml"
  chmod 0644 "$dir/alertmanager.yml"
  first=$(hosts_of alertmanager | head -n 1 | cut -d' ' -f2):$ALERTMANAGER_CLUSTER_PORT
  # setpriv execs (runuser forks and outlives a kill of its child's parent): $! is the Alertmanager itself, so the
  # kill below stops it instead of leaving it trying to join every later stack.
  setpriv --reuid="$ATTACKER" --regid="$(id -g "$ATTACKER")" --clear-groups -- \
    prometheus-alertmanager --config.file="$dir/alertmanager.yml" --storage.path="$dir" \
    --web.listen-address="$ROGUE_PEER" --cluster.listen-address=127.0.9.250:19094 \
    --cluster.advertise-address=127.0.9.250:19094 --cluster.peer="$first" >"$dir/log" 2>&1 &
  pid=$!
  sleep 6
  peers_seen
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
# Nothing of the attacker's may outlive its check.
rogue_peer_left() {
  if pgrep -u "$ATTACKER" -f -- "--web.listen-address=$ROGUE_PEER" >/dev/null; then echo running; else echo gone; fi
}
if [ "$ALERTMANAGER_REPLICAS" -gt 1 ]; then
  check "the first peer sees every peer of the stack" "^peers $ALERTMANAGER_REPLICAS\$" peers_seen
  check "nobody's own Alertmanager cannot join the cluster" "^peers $ALERTMANAGER_REPLICAS\$" rogue_peer
  check "nobody's Alertmanager is stopped after its check" '^gone$' rogue_peer_left
fi

echo "== HAProxy"
check "HAProxy's metrics listener serves nothing but /metrics (no stats page)" '^404' \
  as_attacker curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HAPROXY_METRICS_PORT/stats"
check "HAProxy's metrics answer" '^200' status "http://127.0.0.1:$HAPROXY_METRICS_PORT/metrics"
check "HAProxy's worker does not run as root" '^haproxy$' \
  bash -c "ps -o user= --ppid \"\$(supervisorctl -c '$REPO_ROOT/native/supervisord.conf' pid haproxy)\" | sort -u"

echo "== the on-call inbox (finding 6)"
check "nobody cannot post a forged heartbeat" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -d "$forged_hook" "$inbox/hook/heartbeat"
check "nobody cannot post a forged page" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -d "${forged_hook/heartbeat/pager}" "$inbox/hook/pager"
check "an oversized post is refused before it is read" '^(401|413)' \
  bash -c "head -c 2000000 /dev/zero | tr '\0' 'a' | curl -s -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @- '$inbox/hook/pager'"

echo "== the app's admin listener (finding 6)"
check "nobody cannot set a fault" '^401' as_attacker curl -s -o /dev/null -w '%{http_code}' \
  -H 'Content-Type: application/json' -d '{"error_ratio":0,"duration_seconds":1}' "$admin/fault"
check "a foreign Host is refused" '^(400|421)' status -H 'Host: attacker.example' "$admin/metrics"
check "the fault endpoint answers with the token" '^200' \
  status -H @<(printf 'Authorization: Bearer %s\n' "$(secret app-admin.token)") "$admin/fault"

echo "== files (finding 8)"
check "nobody cannot list the state directory" 'Permission denied' as_attacker ls "$STATE_DIR"
check "nobody cannot read the inbox's data" 'Permission denied' as_attacker cat "$INBOX_DATA_FILE"
check "nobody cannot read Prometheus's data" 'Permission denied' as_attacker ls "$STATE_DIR/prometheus/data"
check "nobody cannot read the secrets" 'Permission denied' as_attacker cat "$SECRETS_DIR/web.password"
check "no file of the stack is open to others" '^none$' \
  none find "$STATE_DIR" -not -type l -perm /o=rwx -printf '%m %p\n'
check "the secrets are 0600" '^none$' none find "$SECRETS_DIR" -type f -not -perm 600 -printf '%m %p\n'
check "the state directory is the stack's only" '^710 root postgres$' stat -c '%a %U %G' "$STATE_DIR"

echo "== command lines (every local user reads them with ps)"
# The programs (their first word only: the rest would print the secret) whose command line holds FILE's secret.
programs_holding() { grep -F -f <(tr -d '\n' <"$1"; echo) <(ps -eo args) | awk '{print $1}'; }
# A listing that shows none of the stack would prove nothing (no procps, or /proc mounted with hidepid).
check "the process listing shows the stack" 'prometheus' ps -eo args
# Each secret as a fixed-string pattern from a descriptor, so that the check itself never puts one on its argv.
for f in "$SECRETS_DIR"/*.password "$SECRETS_DIR"/*.token; do
  check "no command line holds $(basename "$f")" '^none$' \
    none programs_holding "$f"
done

echo
if [ $failures -gt 0 ]; then
  echo "local-user test: $failures of $checks checks FAILED"
  exit 1
fi
echo "local-user test: all $checks checks passed"
