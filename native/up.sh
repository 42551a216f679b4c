#!/usr/bin/env bash
# Starts the native stack under supervisord: `native/up.sh` starts every program, `native/up.sh etcd postgres redis`
# only those. Idempotent: running programs are left alone. Waits until each program answers, then prints the URLs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
# What this script writes under the state directory (targets, configs) is root's alone, as the programs' files are.
umask 077

programs=${*:-$STACK_PROGRAMS}

[ "${NATIVE_SKIP_INSTALL:-0}" = 1 ] || "$REPO_ROOT/native/install.sh"

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what did not become ready within ${secs}s; see $STATE_DIR/logs/"
      return 1
    fi
    sleep 0.2
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }
# redis-cli exits 0 on an error reply (NOAUTH, LOADING): ready means PONG.
redis_ready() { [ "$(redis_admin ping 2>/dev/null)" = PONG ]; }
web_ok() { curl_web -fsS -o /dev/null --max-time 2 "$1"; }

prepare_state() {
  # Only root and the postgres user (which must reach its data directory inside) may enter the state directory;
  # everything below it is its owner's alone, and every program starts with umask 077 (native/supervisord.conf).
  install -d -m 0710 -o root -g postgres "$STATE_DIR"
  install -d -m 0700 "$STATE_DIR/logs" "$STATE_DIR/redis" "$STATE_DIR/alertmanager" "$STATE_DIR/inbox" \
    "$STATE_DIR/prometheus" "$STATE_DIR/prometheus/targets" "$STATE_DIR/haproxy"
  # Each replica's own storage; the configuration (prometheus/, alertmanager/) is one, shared by every replica.
  local host addr
  while read -r host addr; do install -d -m 0700 "$STATE_DIR/$host" "$STATE_DIR/$host/data"; done < <(hosts_of prometheus)
  while read -r host addr; do install -d -m 0700 "$STATE_DIR/$host"; done < <(hosts_of alertmanager)
  "$REPO_ROOT/native/secrets.sh"
  load_secrets
  prepare_cluster_state
  # Prometheus resolves rule files, file_sd targets and password files relative to its config file: link the
  # repo's single config and rules here, with the secrets, and generate only the targets, which are the one thing
  # that differs per environment. Alertmanager resolves its webhook token file the same way.
  ln -sfn "$REPO_ROOT/monitoring/prometheus/prometheus.yml" "$STATE_DIR/prometheus/prometheus.yml"
  ln -sfn "$REPO_ROOT/alerts" "$STATE_DIR/prometheus/rules"
  ln -sfn "$SECRETS_DIR" "$STATE_DIR/prometheus/secrets"
  ln -sfn "$SECRETS_DIR" "$STATE_DIR/alertmanager/secrets"
  ln -sfn "$REPO_ROOT/monitoring/alertmanager/cluster-tls.yml" "$STATE_DIR/alertmanager/cluster-tls.yml"
  # Alertmanager's receivers post to the inbox at its default address. With the default port the repo's file is
  # used as is; another INBOX_PORT gets a copy with only that address changed (Alertmanager 0.25 cannot read a
  # webhook URL from a file), so a second stack on other ports never pages the first one's inbox.
  local am_config="$REPO_ROOT/monitoring/alertmanager/alertmanager.yml"
  if grep -q "http://127.0.0.1:$INBOX_PORT/hook/" "$am_config"; then
    ln -sfn "$am_config" "$STATE_DIR/alertmanager/alertmanager.yml"
  else
    rm -f "$STATE_DIR/alertmanager/alertmanager.yml"
    sed -E "s#http://127\.0\.0\.1:[0-9]+/hook/#http://127.0.0.1:$INBOX_PORT/hook/#g" "$am_config" \
      > "$STATE_DIR/alertmanager/alertmanager.yml"
  fi
  write_targets "$STATE_DIR/prometheus/targets"
  write_haproxy_servers
  cluster_flags
}

# HAProxy's backend: one server per app replica, named for its host (monitoring/haproxy/haproxy.cfg).
write_haproxy_servers() {
  local f=$STATE_DIR/haproxy/servers.cfg host addr
  {
    echo "# Written by native/up.sh from the topology: every app replica's API."
    echo "backend app"
    while read -r host addr; do echo "    server $host $addr:$APP_REPLICA_PORT"; done < <(hosts_of app)
  } > "$f.tmp"
  mv "$f.tmp" "$f"
}

# Alertmanager's cluster flags, the same for every peer: each one joins all of them (itself included, as the
# Prometheus Operator does), over mutual TLS. One replica is a cluster of one: its listener (on its own address,
# behind the cluster's TLS) stays, it has no peer to join. (Its listen address is on its command line in
# supervisord.conf, per replica, so it cannot be switched off here: the flag may not be given twice.)
cluster_flags() {
  local host addr
  ALERTMANAGER_CLUSTER_FLAGS="--cluster.tls-config=$STATE_DIR/alertmanager/cluster-tls.yml --cluster.peer-timeout=$ALERTMANAGER_PEER_TIMEOUT"
  if [ "$ALERTMANAGER_REPLICAS" -gt 1 ]; then
    while read -r host addr; do
      ALERTMANAGER_CLUSTER_FLAGS+=" --cluster.peer=$addr:$ALERTMANAGER_CLUSTER_PORT"
    done < <(hosts_of alertmanager)
  fi
  export ALERTMANAGER_CLUSTER_FLAGS
}

# Creates the roles, the app's database and schema, with least privilege, on the leader (the standbys replay it);
# safe to run on every start (it also sets each role's password from its file, so rotating one is: replace the
# file, `make up`, restart its user).
#   postgres           superuser: peer on the socket for the postgres OS user, a password over TCP
#   replicator         the standbys' streaming replication (Patroni made it at the cluster's bootstrap)
#   app                the service: owns schema `app` in database `app`, nothing else (no CREATEDB, no CREATEROLE)
#   postgres_exporter  pg_monitor only: statistics, no table of the app
provision_postgres() {
  local leader
  wait_for "the Postgres cluster's leader" 60 cluster_leader || return 1
  leader=$(cluster_leader | cut -d' ' -f1) || return 1
  local psql=(runuser -u postgres -- env PGOPTIONS='-c client_min_messages=warning' psql -h "$(member_dir "$leader")"
    -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
  # The passwords reach psql on stdin, never on a command line.
  "${psql[@]}" -d postgres >/dev/null <<SQL
ALTER ROLE postgres PASSWORD '$(tr -d '\n' <"$SECRETS_DIR/postgres.password")';
ALTER ROLE replicator PASSWORD '$(tr -d '\n' <"$SECRETS_DIR/pg-replication.password")';
SELECT 'CREATE ROLE app LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
ALTER ROLE app NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$(tr -d '\n' <"$SECRETS_DIR/pg-app.password")';
SELECT 'CREATE DATABASE app' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
-- An older version of the stack made the app's role the database's owner.
ALTER DATABASE app OWNER TO postgres;
REVOKE ALL ON DATABASE app FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE app TO app;
SELECT 'CREATE ROLE postgres_exporter LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'postgres_exporter') \gexec
ALTER ROLE postgres_exporter NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '$(tr -d '\n' <"$SECRETS_DIR/pg-exporter.password")';
GRANT pg_monitor TO postgres_exporter;
GRANT CONNECT ON DATABASE app TO postgres_exporter;
SQL
  "${psql[@]}" -d app >/dev/null <<SQL
REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION app;
ALTER ROLE app IN DATABASE app SET search_path = app;
-- An older version of the stack kept the app's table in public: it moves, data and all.
DO \$\$ BEGIN
  IF to_regclass('public.kv_store') IS NOT NULL AND to_regclass('app.kv_store') IS NULL THEN
    ALTER TABLE public.kv_store SET SCHEMA app;
  END IF;
END \$\$;
SQL
}

ensure_binaries() {
  case " $programs " in
    *" app "*) [ -x "$APP_BIN_DIR/app" ] || {
      log "building the app (release)"
      (cd "$REPO_ROOT" && cargo build --release -p app --bin app --quiet)
    } ;;
  esac
  case " $programs " in
    *" inbox "*) [ -x "$BIN_DIR/inbox" ] || {
      log "building the workspace binaries (debug)"
      (cd "$REPO_ROOT" && cargo build --workspace --bins --quiet)
    } ;;
  esac
}

# The port that says a program is up (native/topology.env's STACK_PROGRAM_PORTS names its variable).
port_of() {
  local entry
  for entry in $STACK_PROGRAM_PORTS; do
    if [ "${entry%%=*}" = "$1" ]; then
      local var=${entry#*=}
      echo "${!var}"
      return 0
    fi
  done
  log "unknown program '$1' (known: $STACK_PROGRAMS)"
  exit 2
}

# wait_ready PROGRAM HOST ADDRESS: waits until the program answers on that host.
wait_ready() {
  local p=$1 host=$2 a=$3
  case $p in
    etcd) wait_for "$host" 30 etcd_healthy "$a" ;;
    # Running: Postgres is up, leading or streaming from the leader (a new standby first copies the leader's data).
    postgres) wait_for "$host" 90 http_ok "http://$a:$PATRONI_PORT/health" ;;
    redis) wait_for redis 15 redis_ready ;;
    app) wait_for "$host" 30 http_ok "http://$a:$APP_REPLICA_PORT/healthcheck" ;;
    haproxy) wait_for haproxy 15 port_open "$APP_PORT" "$a" ;;
    inbox) wait_for inbox 30 http_ok "http://$a:$INBOX_PORT/healthcheck" ;;
    prometheus) wait_for "$host" 60 web_ok "http://$a:$PROMETHEUS_PORT/-/ready" ;;
    alertmanager) wait_for "$host" 30 web_ok "http://$a:$ALERTMANAGER_PORT/-/ready" ;;
    *) wait_for "$p" 15 http_ok "http://$a:$(port_of "$p")/metrics" ;;
  esac
}

state_of() { supervisorctl_ status "$1" 2>/dev/null | awk '{print $2}'; }

for p in $programs; do port_of "$p" >/dev/null; hosts_of "$p" >/dev/null; done
ensure_binaries
prepare_state

if ! supervisorctl_ pid >/dev/null 2>&1; then
  log "starting supervisord (state in $STATE_DIR)"
  # Every program inherits this: as many descriptors as the machine allows, up to 65536 (see supervisord.conf).
  fd_limit=$(ulimit -Hn)
  if [ "$fd_limit" = unlimited ] || [ "$fd_limit" -gt 65536 ]; then fd_limit=65536; fi
  if [ "$fd_limit" -lt 4096 ]; then
    log "the open-file limit is $fd_limit; the stack needs 4096 (raise the hard limit: ulimit -Hn, limits.conf)"
    exit 1
  fi
  ulimit -n "$fd_limit"
  supervisord -c "$REPO_ROOT/native/supervisord.conf"
  wait_for supervisord 10 supervisorctl_ pid
fi

# A supervisor started with other replica counts runs its old processes (numprocs is read at its start).
for p in $STACK_PROGRAMS; do
  [ "$(supervisor_name "$p")" = "$p" ] && continue
  if [ "$(supervisorctl_ status "$p:*" 2>/dev/null | grep -c "^$p:")" != "$(hosts_of "$p" | wc -l)" ]; then
    log "the running supervisor has another count of $p replicas than $(hosts_of "$p" | wc -l): \`make down\` first"
    exit 1
  fi
done

for p in $STACK_PROGRAMS; do
  case " $programs " in *" $p "*) ;; *) continue ;; esac
  starting=()
  while read -r host addr; do
    proc=$p
    [ "$(supervisor_name "$p")" = "$p" ] || proc=$p:$p-${host##*-}
    [ "$(state_of "$proc")" = RUNNING ] && continue
    if port_open "$(port_of "$p")" "$addr"; then
      log "port $addr:$(port_of "$p") for $host's $p is taken by another process; stop it or override the" \
        "port (see native/env.sh)"
      exit 1
    fi
    starting+=("$proc")
  done < <(hosts_of "$p")
  if [ ${#starting[@]} -gt 0 ]; then
    # No Patroni against an etcd that anyone may write (the leader key is there).
    if [ "$p" = postgres ]; then secure_etcd || exit 1; fi
    supervisorctl_ start "${starting[@]}" >/dev/null || { log "$p failed to start; see $STATE_DIR/logs/"; exit 1; }
  fi
  while read -r host addr; do wait_ready "$p" "$host" "$addr"; done < <(hosts_of "$p")
  case $p in
    etcd) secure_etcd || exit 1 ;;
    postgres) provision_postgres ;;
  esac
done

if [ "$programs" != "$STACK_PROGRAMS" ]; then
  log "running: $programs"
  exit 0
fi
cat <<URLS
The stack is up (state in $STATE_DIR; logs: make logs; hosts and programs: make status):
  app            http://127.0.0.1:$APP_PORT/   (HAProxy, in front of $APP_REPLICAS replicas; their /metrics on :$APP_ADMIN_PORT)
  on-call inbox  http://127.0.0.1:$INBOX_PORT/
  Prometheus     $(hosts_of prometheus | head -n 1 | awk -v p="$PROMETHEUS_PORT" '{print "http://" $2 ":" p}')/classic/graph   (user admin; $PROMETHEUS_REPLICAS replicas)
  Alertmanager   $(hosts_of alertmanager | head -n 1 | awk -v p="$ALERTMANAGER_PORT" '{print "http://" $2 ":" p}')/   (API only; amtool, user admin; $ALERTMANAGER_REPLICAS peers)
  Postgres       $(cluster_url app '***')   (leader: $(cluster_leader | cut -d' ' -f1); native/admin.sh patronictl list)
  Redis          redis://app:***@127.0.0.1:$REDIS_PORT
Credentials (one file each, root only): $SECRETS_DIR
  the web password of Prometheus and Alertmanager: $SECRETS_DIR/web.password
  operator tools with these credentials: native/admin.sh (redis-cli, psql, patronictl, etcdctl, amtool, query, curl)
URLS
