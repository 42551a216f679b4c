# shellcheck shell=bash
# Shared settings of the native stack: sourced by every script in native/ and by the Makefile's recipes.
# Each value can be overridden from the environment; defaults match .env.example and the compose stack.

REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# All state (data, logs, sockets, generated Prometheus targets) lives here; `make clean` removes it.
# Kept outside the checkout because the postgres user must be able to reach its data directory.
STATE_DIR=${STATE_DIR:-/var/tmp/sre-stack}
# `make test` runs its own stack here, emptied at the start of every run (native/test.sh says why).
TEST_STATE_DIR=${TEST_STATE_DIR:-/var/tmp/sre-stack-test}

# The ports (each overridable from the environment: APP_PORT=18080 ...), the programs in start order and
# Prometheus's targets, generated from monitoring/topology.yml (`make generate`).
source "$REPO_ROOT/native/topology.env"

# Every credential of the stack is a file here, made at the first `make up` by native/secrets.sh (README,
# "Security"); the URLs below carry the ones that must be in a URL, once load_secrets has read them.
SECRETS_DIR=${SECRETS_DIR:-$STATE_DIR/secrets}
PG_BIN=${PG_BIN:-$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)}

# Binaries of the workspace: the app replicas run the release build (what users load-test is the optimized
# service); the inbox and the operator tools are debug builds, which build twice as fast here.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BIN_DIR=${BIN_DIR:-$CARGO_TARGET_DIR/debug}
APP_BIN_DIR=${APP_BIN_DIR:-$CARGO_TARGET_DIR/release}

# What the app and the inbox read (see .env.example); the supervisor passes its environment to its programs
# (each app replica gets its own APP_LISTEN_ADDR and APP_ADMIN_ADDR, on its host's address: supervisord.conf).
APP_ADMIN_TOKEN_FILE=${APP_ADMIN_TOKEN_FILE:-$SECRETS_DIR/app-admin.token}
APP_LOG_FORMAT=${APP_LOG_FORMAT:-json}
# The game day drives the SLO alerts through the admin listener's fault injection, so the local stack enables it.
APP_FAULT_INJECTION_ENABLED=${APP_FAULT_INJECTION_ENABLED:-true}
INBOX_LISTEN_ADDR=${INBOX_LISTEN_ADDR:-127.0.0.1:$INBOX_PORT}
INBOX_RUNBOOKS_DIR=${INBOX_RUNBOOKS_DIR:-$REPO_ROOT/runbooks}
INBOX_DATA_FILE=${INBOX_DATA_FILE:-$STATE_DIR/inbox/notifications.jsonl}
INBOX_WEBHOOK_TOKEN_FILE=${INBOX_WEBHOOK_TOKEN_FILE:-$SECRETS_DIR/webhook.token}
# opsctl (smoke, game day) reads every credential it needs from here; `xtask live` (the checks of the live
# Prometheus) reads its web password from the file.
STACK_SECRETS_DIR=$SECRETS_DIR
# How long an Alertmanager peer waits per position in the cluster before it notifies; the game day adds it to a
# notification's bound for each peer a drill holds out. Not Alertmanager's 15 s: peers x peer timeout must fit in the
# shortest group_interval (15 s), or the last peer sends stale news (monitoring/alertmanager/check-peer-wait.py
# says why and checks it). The receiver is the local inbox, answering in milliseconds, so 5 s is ample.
# compose/check_static.py reads the value here.
ALERTMANAGER_PEER_TIMEOUT=${ALERTMANAGER_PEER_TIMEOUT:-5s}
PROMETHEUS_PASSWORD_FILE=$SECRETS_DIR/web.password
# Each Postgres member runs in a cgroup (v2) of its own, named for its host: $HOST_CGROUPS/postgres-1 ... On one
# machine every loopback dial leaves from 127.0.0.1, so a member's address says nothing of the packets it sends; its
# cgroup does (nftables' `socket cgroupv2`), which is how the game day cuts one member off (docs/postgres-ha.md).
# Named for the state directory, so that two stacks on one machine (make up, make test) never share one.
HOST_CGROUPS=${HOST_CGROUPS:-$(awk -v stack="${STATE_DIR##*/}" '$3 == "cgroup2" { print $2 "/" stack; exit }' \
  /proc/self/mounts 2>/dev/null || true)}

export REPO_ROOT STATE_DIR TEST_STATE_DIR SECRETS_DIR STACK_SECRETS_DIR PROMETHEUS_PASSWORD_FILE HOST_CGROUPS \
  PG_BIN CARGO_TARGET_DIR BIN_DIR APP_BIN_DIR APP_ADMIN_TOKEN_FILE APP_LOG_FORMAT \
  APP_FAULT_INJECTION_ENABLED ALERTMANAGER_PEER_TIMEOUT INBOX_LISTEN_ADDR INBOX_RUNBOOKS_DIR INBOX_DATA_FILE INBOX_WEBHOOK_TOKEN_FILE

# Reads the secrets native/secrets.sh made into the variables the programs take them from (supervisord passes
# its environment on; /proc/<pid>/environ is readable only by the process's own user and root). Never on a
# command line: `ps` shows those to every local user.
load_secrets() {
  local f
  for f in pg-app.password pg-exporter.password redis-app.password redis-exporter.password postgres.password \
    pg-replication.password patroni.password etcd-root.password etcd-patroni.password; do
    [ -s "$SECRETS_DIR/$f" ] || { log "missing $SECRETS_DIR/$f: run native/secrets.sh (make up does)"; return 1; }
  done
  # Every member of the Postgres cluster; the app connects to whichever leads (native/postgres-cluster.sh).
  APP_DATABASE_URL=$(cluster_url app "$(tr -d '\n' <"$SECRETS_DIR/pg-app.password")")
  APP_REDIS_URL=redis://app:$(tr -d '\n' <"$SECRETS_DIR/redis-app.password")@127.0.0.1:$REDIS_PORT
  # Each postgres_exporter's DSN names its own member (native/supervisord.conf).
  PG_EXPORTER_PASSWORD=$(tr -d '\n' <"$SECRETS_DIR/pg-exporter.password")
  REDIS_EXPORTER_USER=exporter
  REDIS_EXPORTER_PASSWORD=$(tr -d '\n' <"$SECRETS_DIR/redis-exporter.password")
  export APP_DATABASE_URL APP_REDIS_URL PG_EXPORTER_PASSWORD REDIS_EXPORTER_USER REDIS_EXPORTER_PASSWORD
}
# redis-cli as the stack's admin user; the password goes through the environment, not the command line.
redis_admin() { REDISCLI_AUTH=$(tr -d '\n' <"$SECRETS_DIR/redis-admin.password") redis-cli -p "$REDIS_PORT" --user admin "$@"; }
# curl with the web credentials of Prometheus and Alertmanager (read from a file by curl, not from argv).
curl_web() { curl --netrc-file <(printf 'default login admin password %s\n' "$(tr -d '\n' <"$SECRETS_DIR/web.password")") "$@"; }

supervisorctl_() { supervisorctl -c "$REPO_ROOT/native/supervisord.conf" "$@"; }
log() { printf '[native] %s\n' "$*" >&2; }
# port_open PORT [ADDRESS]: something accepts connections there (default address 127.0.0.1).
port_open() { (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null; }

# hosts_of PROGRAM: one line `host address` per host it runs on, from the topology (native/topology.env); a
# replicated program's replicas as many as its *_REPLICAS variable says: app-1 127.0.1.1, app-2 127.0.1.2 ...
hosts_of() {
  local entry spec count net i h
  for entry in $STACK_PROGRAM_HOSTS; do
    [ "${entry%%=*}" = "$1" ] || continue
    spec=${entry#*=}
    if [ "${spec#\*}" != "$spec" ]; then
      count=${spec#\*} count=${count%@*} net=${spec#*@}
      # Replica hosts are named for the count's variable (POSTGRES_REPLICAS: postgres-1 ...), which programs
      # running side by side on them share.
      h=${count%_REPLICAS} h=${h,,} h=${h//_/-}
      for ((i = 1; i <= ${!count}; i++)); do echo "$h-$i ${!net}.$i"; done
    else
      for h in ${spec//,/ }; do echo "${h%@*} ${h#*@}"; done
    fi
    return 0
  done
  log "unknown program '$1' (known: $STACK_PROGRAMS)"
  return 2
}

# urls_of PROGRAM PORT_VARIABLE: http://address:port of every host of PROGRAM, comma-separated (opsctl's lists).
urls_of() {
  local _host addr urls=()
  while read -r _host addr; do urls+=("http://$addr:${!2}"); done < <(hosts_of "$1")
  local IFS=,
  echo "${urls[*]}"
}
# first_url PROGRAM PORT_VARIABLE: the first host's (Prometheus and Alertmanager replica 1).
first_url() { local u; u=$(urls_of "$1" "$2"); echo "${u%%,*}"; }

# stack_listeners: one line `address port` for every listener of every host of the stack.
stack_listeners() {
  local entry program vars var _host addr
  for entry in $STACK_PROGRAM_LISTENERS; do
    program=${entry%%=*} vars=${entry#*=}
    while read -r _host addr; do
      for var in ${vars//,/ }; do echo "$addr ${!var}"; done
    done < <(hosts_of "$program")
  done
}

# write_targets DIR: Prometheus's file_sd files in DIR (native/up.sh's, and monitoring/check.sh's copy), from the
# topology's list (native/topology.env): the listener on every host of its
# program, at this stack's port (the variable the entry names, as overridden), labelled with the host; a probe's
# target also carries the URL it requests. Each file is replaced whole, so Prometheus never reads half of one; a
# file no longer listed is removed.
write_targets() {
  local dir=$1 entry file rest program var probe url host addr f
  local -A wanted=()
  for entry in $STACK_TARGETS; do
    file=${entry%%=*} rest=${entry#*=} probe=
    if [ "${rest#*>}" != "$rest" ]; then probe=${rest#*>} rest=${rest%%>*}; fi
    program=${rest%%:*} var=${rest#*:}
    url=
    if [ -n "$probe" ]; then
      local pprogram=${probe%%:*} pvar=${probe#*:} paddr
      local ppath=/${pvar#*/}
      pvar=${pvar%%/*}
      paddr=$(hosts_of "$pprogram" | head -n 1 | cut -d' ' -f2)
      url="http://$paddr:${!pvar}$ppath"
    fi
    {
      while read -r host addr; do
        # shellcheck disable=SC2016  # the single quotes are YAML's, inside a double-quoted expansion
        printf -- "- targets: ['%s:%s']\n  labels: {host: %s%s}\n" "$addr" "${!var}" "$host" \
          "${url:+, __param_target: '$url'}"
      done < <(hosts_of "$program")
    } > "$dir/$file.yml.tmp"
    mv "$dir/$file.yml.tmp" "$dir/$file.yml"
    wanted[$file]=1
  done
  for f in "$dir"/*.yml; do
    [ -e "$f" ] || continue
    file=$(basename "$f" .yml)
    [ -n "${wanted[$file]+set}" ] || rm -f "$f"
  done
}

# The supervisor's name of a program: the group `app:*` for a replicated one, whose processes are app:app-1 ...
supervisor_name() {
  case " $STACK_PROGRAM_HOSTS " in
    *" $1=*"*) echo "$1:*" ;;
    *) echo "$1" ;;
  esac
}

# The Postgres cluster's helpers (its URLs, its leader, its members' configuration).
source "$REPO_ROOT/native/postgres-cluster.sh"
