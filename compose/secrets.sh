#!/usr/bin/env bash
# Makes the compose stack's secrets: `compose/secrets.sh`, before the first
# `docker compose -f compose/docker-compose.yml up -d --build`; running it again changes nothing but what is derived.
#   1. native/secrets.sh makes each secret of the stack once into compose/secrets/ and rewrites what is derived from
#      them (web-config.yml, redis-users.acl); the compose services mount the files they need from there, read-only.
#   2. compose/.env gets every variable of compose/.env.example: the passwords that compose must put in a URL or a
#      variable, from those same files; Grafana's admin password, generated; SECRETS_GID, the group of the files.
#      A value already set in compose/.env is kept. One that compose/secrets/ has no file for yet becomes that
#      file, so that a stack whose Postgres volume was initialised with it keeps working; one that differs from its
#      file is an error (which one the stack uses, only you know).
# Both are git-ignored. compose/secrets/ is 0750 with files 0640 of group SECRETS_GID (the containers read them
# through group_add; other local users cannot), compose/.env is 0600.
# Needs bash, htpasswd (Debian: apache2-utils; macOS ships it), openssl (the Alertmanager gossip's certificates),
# od and sha256sum (or macOS's shasum).
#
# Rotating a secret: delete its file in compose/secrets/ and its line in compose/.env (if it has one), run this
# again, then `docker compose -f compose/docker-compose.yml up -d --force-recreate`: the services mount each file
# on its own, so a running container keeps seeing the file it started with. A Postgres password also needs
# ALTER ROLE (compose/.env.example says why).
set -euo pipefail

COMPOSE_DIR=$(cd "$(dirname "$0")" && pwd)
REPO_ROOT=$(dirname "$COMPOSE_DIR")
SECRETS=$COMPOSE_DIR/secrets
ENV_FILE=$COMPOSE_DIR/.env
EXAMPLE=$COMPOSE_DIR/.env.example

log() { printf '[compose] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# The variables of compose/.env whose value is a file of compose/secrets/.
file_of() {
  case $1 in
    PROMETHEUS_WEB_PASSWORD) echo web.password ;;
    POSTGRES_PASSWORD) echo postgres.password ;;
    PG_APP_PASSWORD) echo pg-app.password ;;
    PG_EXPORTER_PASSWORD) echo pg-exporter.password ;;
    REDIS_APP_PASSWORD) echo redis-app.password ;;
    REDIS_EXPORTER_PASSWORD) echo redis-exporter.password ;;
    *) return 1 ;;
  esac
}

# A value of the existing compose/.env as written (the last assignment wins, as in compose), and without quotes.
env_raw() { if [ -f "$ENV_FILE" ]; then sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1; fi; }
unquote() {
  local v=$1
  if [[ $v =~ ^\'(.*)\'$ || $v =~ ^\"(.*)\"$ ]]; then v=${BASH_REMATCH[1]}; fi
  printf '%s' "$v"
}
env_value() { unquote "$(env_raw "$1")"; }
read_secret() { tr -d '\n' < "$SECRETS/$1"; }
# As native/secrets.sh: 160 random bits in hex.
random_secret() { head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Temporary files, removed however the script ends.
tmp_dir=$(mktemp -d)
trap 'rm -rf "$tmp_dir"' EXIT

command -v htpasswd >/dev/null || die "htpasswd is missing (Debian and Ubuntu: apt-get install apache2-utils)"
command -v openssl >/dev/null || die "openssl is missing (Debian and Ubuntu: apt-get install openssl)"
command -v od >/dev/null || die "od is missing (coreutils)"
if ! command -v sha256sum >/dev/null; then
  command -v shasum >/dev/null || die "sha256sum is missing (coreutils)"
  # macOS: the same digest and output format under another name.
  printf '#!/bin/sh\nexec shasum -a 256 "$@"\n' > "$tmp_dir/sha256sum"
  chmod 0755 "$tmp_dir/sha256sum"
  PATH=$tmp_dir:$PATH
fi

umask 077
install -d -m 0700 "$SECRETS"

# Passwords already in compose/.env: the seed of a missing file, or an error when they differ from it.
while read -r var; do
  file=$(file_of "$var") || continue
  value=$(env_value "$var")
  [ -n "$value" ] || continue
  [[ $value =~ ^[A-Za-z0-9._-]+$ ]] \
    || die "compose/.env: $var has characters that break the URLs it is put in; use letters, digits, '-', '_', '.'"
  if [ ! -s "$SECRETS/$file" ]; then
    log "compose/secrets/$file: taken from $var in compose/.env"
    printf '%s\n' "$value" > "$SECRETS/$file"
  elif [ "$(read_secret "$file")" != "$value" ]; then
    die "compose/.env sets $var, but compose/secrets/$file holds another password. Keep the one the stack uses
(for Postgres, the one its volume was initialised with), delete the other (the line or the file), run this again."
  fi
done < <(sed -nE 's/^([A-Za-z_][A-Za-z0-9_]*)=.*/\1/p' "$EXAMPLE")

# native/env.sh, which native/secrets.sh sources, looks for Debian's Postgres binaries and, under `set -e`, stops
# when a machine has none (a Docker host needs none); the secrets need no Postgres.
PG_BIN=${PG_BIN:-unused} "$REPO_ROOT/native/secrets.sh" "$SECRETS"

# Readable by the containers' users through their supplementary group, by nobody else.
gid=$(env_value SECRETS_GID)
gid=${gid:-${SECRETS_GID:-$(id -g)}}
[[ $gid =~ ^[0-9]+$ ]] || die "SECRETS_GID must be a numeric group id, not '$gid'"
chgrp -R "$gid" "$SECRETS" || die "cannot give compose/secrets/ to group $gid: use a group you are a member of"
chmod 0750 "$SECRETS"
find "$SECRETS" -type f -exec chmod 0640 {} +

# The value of a variable of compose/.env.example in the new compose/.env.
value_of() {
  local var=$1 example_value=$2 file
  if [ -n "$(env_raw "$var")" ]; then
    env_raw "$var"
  elif file=$(file_of "$var"); then
    read_secret "$file"
  else
    case $var in
      SECRETS_GID) printf '%s' "$gid" ;;
      GRAFANA_ADMIN_PASSWORD) random_secret ;;
      *) [ -n "$example_value" ] || die "compose/.env.example: compose/secrets.sh does not know how to fill $var"
         printf '%s' "$example_value" ;;
    esac
  fi
}

# compose/.env.example with every value filled in, then the variables of the old compose/.env that the example does
# not list (yours, kept as they were).
render_env() {
  local line var value extra header=1
  echo "# Written by compose/secrets.sh from compose/.env.example (see there); it keeps the values set here when it"
  echo "# runs again. Never commit this file."
  while IFS= read -r line || [ -n "$line" ]; do
    # The example's opening paragraph is about this script; the header above replaces it.
    if [ $header = 1 ]; then
      [ -n "$line" ] && continue
      header=0
    fi
    if [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]]; then
      var=${BASH_REMATCH[1]}
      value=$(value_of "$var" "${BASH_REMATCH[2]}")
      printf '%s=%s\n' "$var" "$value"
    else
      printf '%s\n' "$line"
    fi
  done < "$EXAMPLE"
  [ -f "$ENV_FILE" ] || return 0
  extra=$({ grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$ENV_FILE" || true; } | while IFS= read -r line; do
    grep -q "^${line%%=*}=" "$EXAMPLE" || printf '%s\n' "$line"
  done)
  [ -z "$extra" ] || printf '\n# Kept from the previous compose/.env (not in compose/.env.example).\n%s\n' "$extra"
}

# Written beside it and renamed, so that compose never reads half a file.
tmp=$(mktemp "$COMPOSE_DIR/.env.XXXXXX")
trap 'rm -rf "$tmp_dir" "$tmp"' EXIT
render_env > "$tmp"
chmod 0600 "$tmp"
mv "$tmp" "$ENV_FILE"

log "secrets in compose/secrets/ (group $gid), variables in compose/.env"
log "Prometheus (http://127.0.0.1:9090/) and Alertmanager: user admin, password in compose/secrets/web.password"
log "Grafana (http://127.0.0.1:3000/): user admin, GRAFANA_ADMIN_PASSWORD in compose/.env"
log "next: docker compose -f compose/docker-compose.yml up -d --build"
