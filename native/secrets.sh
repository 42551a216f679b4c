#!/usr/bin/env bash
# Makes the stack's secrets, once: `native/secrets.sh [DIR]` (default $SECRETS_DIR, under the state directory).
# Each secret is a file of its own (mode 0600, in a 0700 directory), generated at the first `make up` and never
# committed; what is derived from them (the bcrypt hash of the web password, Redis's ACL file, the HTTP client
# configuration of promtool and amtool) is written again at every run, so that rotating a secret is: replace its
# file, run `make up` again, restart the programs that use it (README, "Security").
#
#   web.password           HTTP basic auth of Prometheus and Alertmanager, user `admin` (every endpoint)
#   webhook.token          bearer token Alertmanager sends to the on-call inbox
#   app-admin.token        bearer token of the app's admin listener (`/fault`)
#   postgres.password      the Postgres superuser `postgres`, over TCP (operators and the game day)
#   pg-app.password        Postgres role `app` (the service)
#   pg-exporter.password   Postgres role `postgres_exporter` (pg_monitor only)
#   redis-admin.password   Redis user `admin` (every command: operators and the game day)
#   redis-app.password     Redis user `app` (its key prefix and the commands the service uses)
#   redis-exporter.password Redis user `exporter` (read-only server information, no keys)
#   pg-replication.password Postgres role `replicator` (the standbys' streaming replication)
#   patroni.password       Patroni's REST API, user `patroni` (switchover, restart, reload: every change)
#   etcd-root.password     etcd's `root` user (operators: native/admin.sh etcdctl)
#   etcd-patroni.password  etcd's `patroni` user (read-write under /service/ only: the cluster's keys)
#   web-config.yml         derived: --web.config.file of Prometheus and Alertmanager
#   http-client.yml        derived: --http.config.file of amtool (and any client that reads Prometheus's format)
#   redis-users.acl        derived: Redis's aclfile (hashed passwords; the `default` user is off)
#   cluster-ca.crt, cluster.crt, cluster.key
#                          Alertmanager's gossip: a CA of the stack's own and one certificate (server and client,
#                          name `alertmanager`) that every peer presents and requires (mutual TLS); the CA's key
#                          signs that one certificate and is deleted, so nothing else can ever be signed
#   etcd-ca.crt, etcd-peer.crt, etcd-peer.key
#                          etcd's raft between members, the same way (mutual TLS, the certificate names every
#                          member address 127.0.4.1 to .7, a cluster of up to seven, and 127.0.0.1)
set -euo pipefail
source "$(dirname "$0")/env.sh"

dir=${1:-$SECRETS_DIR}
umask 077
install -d -m 0700 "$dir"

# 160 random bits in hex: safe in URLs, YAML and command lines without quoting.
random_secret() { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

for name in web.password webhook.token app-admin.token postgres.password pg-app.password pg-exporter.password \
    redis-admin.password redis-app.password redis-exporter.password pg-replication.password patroni.password \
    etcd-root.password etcd-patroni.password; do
  if [ ! -s "$dir/$name" ]; then
    random_secret > "$dir/$name.tmp"
    echo >> "$dir/$name.tmp"
    mv "$dir/$name.tmp" "$dir/$name"
  fi
done

# The gossip's CA and the peers' certificate (P-256, ten years: a local stack's; rotate by deleting the three
# files and restarting every peer). Made together, so a half-made set is made again; the CA's key is deleted.
# peer_certificate CA CERTIFICATE KEY CN SUBJECT_ALT_NAMES: the three files, unless all three exist.
peer_certificate() {
  local ca=$1 crt=$2 key=$3 cn=$4 san=$5 tmp
  [ -s "$dir/$ca" ] && [ -s "$dir/$crt" ] && [ -s "$dir/$key" ] && return 0
  tmp=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=sre-stack $cn CA" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
    -keyout "$tmp/peer.key" -out "$tmp/peer.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$tmp/ext"
  openssl x509 -req -in "$tmp/peer.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial -days 3650 \
    -extfile "$tmp/ext" -out "$tmp/peer.crt" 2>/dev/null
  mv "$tmp/peer.key" "$dir/$key"
  mv "$tmp/peer.crt" "$dir/$crt"
  mv "$tmp/ca.crt" "$dir/$ca"
  rm -rf "$tmp"
}
peer_certificate cluster-ca.crt cluster.crt cluster.key alertmanager DNS:alertmanager
# etcd checks that a peer's certificate names the address it dials and the one it dials from: 127.0.0.1, the
# kernel's source address of every loopback connection.
etcd_sans=DNS:etcd,IP:127.0.0.1
for i in 1 2 3 4 5 6 7; do etcd_sans+=",IP:$ETCD_NETWORK.$i"; done
peer_certificate etcd-ca.crt etcd-peer.crt etcd-peer.key etcd "$etcd_sans"

read_secret() { tr -d '\n' < "$dir/$1"; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# Write to a temporary file and rename, so a program reloading its configuration never reads half a file.
write_file() {
  cat > "$dir/$1.tmp"
  mv "$dir/$1.tmp" "$dir/$1"
}

# bcrypt, cost 10: what Prometheus's and Alertmanager's web configuration expects (htpasswd from apache2-utils).
# The password reaches htpasswd on stdin (-i), not its command line, which every local user can read.
hash=$(read_secret web.password | htpasswd -niBC 10 admin | cut -d: -f2-)
write_file web-config.yml <<YAML
# Generated by native/secrets.sh from web.password; do not edit (rotate by replacing web.password).
basic_auth_users:
  admin: '$hash'
YAML

write_file http-client.yml <<YAML
# Generated by native/secrets.sh: the web credentials for amtool --http.config.file.
basic_auth:
  username: admin
  password_file: $dir/web.password
YAML

# The service needs GET/SET, EVAL for its compare-and-set script, SCAN/UNLINK/DEL to drop its own entries, and the
# connection housekeeping of its client library; all confined to its prefix. The exporter reads server state only.
write_file redis-users.acl <<ACL
user default off resetkeys resetchannels -@all
user admin on #$(sha256 "$(read_secret redis-admin.password)") ~* &* +@all
user app on #$(sha256 "$(read_secret redis-app.password)") resetchannels ~app:* -@all +get +set +del +unlink +eval +evalsha +scan +ping +echo +client|setname +hello +select
user exporter on #$(sha256 "$(read_secret redis-exporter.password)") resetchannels resetkeys -@all +ping +info +config|get +client|list +client|info +client|setname +slowlog|get +slowlog|len +latency|latest +dbsize +select +cluster|info +memory|stats
ACL
