# shellcheck shell=bash
# The Postgres cluster of the native stack: three etcd members (the DCS) and three Postgres members, each run by
# Patroni, which elects the leader, keeps one synchronous standby and fails over (docs/postgres-ha.md). Sourced by
# native/up.sh after native/env.sh; every function here is idempotent.

# The member's own directory: its Patroni configuration, its pgpass, its socket and its data directory.
member_dir() { echo "$STATE_DIR/$1"; }

# etcd's --initial-cluster, the same for every member; its peers talk mutual TLS.
etcd_initial_cluster() {
  local host addr list=()
  while read -r host addr; do list+=("$host=https://$addr:$ETCD_PEER_PORT"); done < <(hosts_of etcd)
  local IFS=,
  echo "${list[*]}"
}

# host:port of every etcd member's client API (Patroni's etcd3.hosts, etcdctl's endpoints).
etcd_endpoints() {
  local host addr list=()
  while read -r host addr; do list+=("$addr:$ETCD_CLIENT_PORT"); done < <(hosts_of etcd)
  local IFS=,
  echo "${list[*]}"
}

# The app's URL: every member, and libpq's target_session_attrs=read-write, so a connection only ever reaches the
# leader (tokio-postgres tries the hosts in order and skips a read-only one).
# cluster_url USER [PASSWORD] [DATABASE]: without a password, the client takes it from elsewhere (PGPASSWORD).
cluster_url() {
  local user=$1 password=${2:-} database=${3:-app} host addr list=()
  while read -r host addr; do list+=("$addr:$PG_PORT"); done < <(hosts_of postgres)
  local IFS=,
  echo "postgres://$user${password:+:$password}@${list[*]}/$database?target_session_attrs=read-write"
}

prepare_cluster_state() {
  local host addr
  while read -r host addr; do install -d -m 0700 "$STATE_DIR/$host" "$STATE_DIR/$host/data"; done < <(hosts_of etcd)
  if [ -z "$HOST_CGROUPS" ]; then
    # The supervisor's command makes and joins each member's cgroup under it (native/supervisord.conf).
    log "no cgroup2 hierarchy is mounted (see /proc/self/mounts): each Postgres member runs in a cgroup of its own"
    return 1
  fi
  while read -r host addr; do
    install -d -m 0700 -o postgres -g postgres "$(member_dir "$host")"
    write_patroni_config "$host" "$addr"
  done < <(hosts_of postgres)
  ETCD_INITIAL_CLUSTER=$(etcd_initial_cluster)
  export ETCD_INITIAL_CLUSTER
}

# One member's Patroni configuration, written at every start (passwords from the secrets; the postgres user's alone).
# The cluster-wide settings under bootstrap.dcs are read once, when the cluster is made; later changes go through
# `native/admin.sh patronictl edit-config`.
write_patroni_config() {
  local host=$1 addr=$2 dir f etcd_hosts
  dir=$(member_dir "$host")
  f=$dir/patroni.yml
  etcd_hosts=$(etcd_endpoints)
  secret_of() { tr -d '\n' <"$SECRETS_DIR/$1"; }
  cat > "$f.tmp" <<YAML
# Written by native/up.sh (native/postgres-cluster.sh) at every start; do not edit.
scope: sre-stack
name: $host
log:
  level: INFO
restapi:
  listen: $addr:$PATRONI_PORT
  connect_address: $addr:$PATRONI_PORT
  # Reads (/metrics, /primary, /health) need nothing; every change (switchover, restart, reload) needs this user.
  authentication:
    username: patroni
    password: '$(secret_of patroni.password)'
etcd3:
  hosts: '$etcd_hosts'
  username: patroni
  password: '$(secret_of etcd-patroni.password)'
bootstrap:
  dcs:
    # A leader that cannot renew its key for ttl seconds is demoted by its own Patroni; the others wait that long
    # before one of them takes over (loop_wait: how often each member looks; retry_timeout: how long etcd and
    # Postgres may fail it before it gives up the lead). Patroni's rule: loop_wait + 2 x retry_timeout <= ttl.
    ttl: 20
    loop_wait: 5
    retry_timeout: 5
    # A standby further behind than this (bytes) may not be promoted.
    maximum_lag_on_failover: 1048576
    # A commit is acknowledged only once a standby has it; not strict: with no standby left, the leader goes on
    # alone rather than stop every write (docs/postgres-ha.md).
    synchronous_mode: true
    synchronous_mode_strict: false
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 100
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
        wal_keep_size: 128MB
        password_encryption: scram-sha-256
  initdb:
    - encoding: UTF8
    - auth-local: peer
    - auth-host: scram-sha-256
postgresql:
  listen: $addr:$PG_PORT
  connect_address: $addr:$PG_PORT
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  authentication:
    superuser:
      username: postgres
      password: '$(secret_of postgres.password)'
    replication:
      username: replicator
      password: '$(secret_of pg-replication.password)'
  parameters:
    unix_socket_directories: '$dir'
    unix_socket_permissions: '0700'
  # No trust anywhere: the postgres OS user on the socket (peer), a password for every other login. Every member
  # dials the others from 127.0.0.1 (the kernel's source address for loopback), hence the /8.
  pg_hba:
    - local all postgres peer
    - local all all scram-sha-256
    - host replication replicator 127.0.0.0/8 scram-sha-256
    - host all all 127.0.0.0/8 scram-sha-256
YAML
  chown postgres:postgres "$f.tmp"
  chmod 0600 "$f.tmp"
  mv "$f.tmp" "$f"
}

# etcd's users, once, before auth is on: root (operators), and patroni with read-write under /service/ only. Until
# this has run (the cluster's first seconds) the client API answers anyone; native/up.sh starts Patroni only once it
# has succeeded. Through etcd's JSON gateway, the passwords in curl's stdin, never on a command line. A run cut
# short half way is taken up again: a step that was done fails harmlessly ("already exists"), and the end is
# checked (root logs in).
secure_etcd() {
  local endpoint root patroni
  endpoint=http://$(etcd_endpoints | cut -d, -f1)
  root=$(tr -d '\n' <"$SECRETS_DIR/etcd-root.password")
  patroni=$(tr -d '\n' <"$SECRETS_DIR/etcd-patroni.password")
  etcd_post() { curl -fsS --max-time 5 -o /dev/null "$endpoint$1" --data-binary @-; }
  # Auth already on, and root's password the file's: nothing to do.
  if printf '{"name":"root","password":"%s"}' "$root" | etcd_post /v3/auth/authenticate 2>/dev/null; then
    return 0
  fi
  log "etcd: creating users root and patroni, enabling authentication"
  local b64_from b64_to
  b64_from=$(printf '/service/' | base64) b64_to=$(printf '/service0' | base64)
  printf '{"name":"root","password":"%s"}' "$root" | etcd_post /v3/auth/user/add || true
  echo '{"name":"root"}' | etcd_post /v3/auth/role/add || true
  echo '{"user":"root","role":"root"}' | etcd_post /v3/auth/user/grant || true
  printf '{"name":"patroni","password":"%s"}' "$patroni" | etcd_post /v3/auth/user/add || true
  echo '{"name":"patroni"}' | etcd_post /v3/auth/role/add || true
  printf '{"name":"patroni","perm":{"permType":"READWRITE","key":"%s","range_end":"%s"}}' "$b64_from" "$b64_to" |
    etcd_post /v3/auth/role/grant || true
  echo '{"user":"patroni","role":"patroni"}' | etcd_post /v3/auth/user/grant || true
  echo '{}' | etcd_post /v3/auth/enable || true
  if ! printf '{"name":"root","password":"%s"}' "$root" | etcd_post /v3/auth/authenticate 2>/dev/null; then
    log "etcd: authentication is not on, or root's password is not $SECRETS_DIR/etcd-root.password's"
    return 1
  fi
}

# SIGCONT to every process of the Postgres members (their cgroups, native/env.sh). The game day's replica-lag drill
# stops a standby's startup process (SIGSTOP) and lets it go on at the end; a game day killed meanwhile leaves it
# stopped, and that member can neither replay nor shut down. To a running process SIGCONT does nothing.
continue_members() {
  [ -n "$HOST_CGROUPS" ] || return 0
  cat "$HOST_CGROUPS"/postgres-*/cgroup.procs 2>/dev/null | xargs -r kill -CONT 2>/dev/null || true
}

# The member that leads and takes writes (host and address), or nothing. Patroni's /primary alone is not enough:
# a member that held the leader key when the stack went down uncleanly starts "as readonly because i had the session
# lock" and /primary answers 200 there until Patroni promotes it (make up then failed: ALTER ROLE in a read-only
# transaction). So its Postgres is asked too, over its socket, as the postgres OS user.
cluster_leader() {
  local host addr
  while read -r host addr; do
    if curl -fs -o /dev/null --max-time 1 "http://$addr:$PATRONI_PORT/primary" &&
      [ "$(runuser -u postgres -- env PGCONNECT_TIMEOUT=2 psql -h "$(member_dir "$host")" -p "$PG_PORT" -U postgres \
        -d postgres -wqAtX -c 'SELECT pg_is_in_recovery()' 2>/dev/null </dev/null)" = f ]; then
      echo "$host $addr"
      return 0
    fi
  done < <(hosts_of postgres)
  return 1
}

# etcd is healthy on the member's metrics listener.
etcd_healthy() { curl -fsS --max-time 1 "http://$1:$ETCD_METRICS_PORT/health" | grep -q '"health":"true"'; }
