#!/usr/bin/env bash
# The project's whole test suite (`make test`): the fast tier (native/check.sh, `make check`), then it starts the
# native stack and runs the smoke test, the local-user attacks, the game day, the service's integration tests and
# the live metric check against it, then stops the stack
# (KEEP_STACK=1 leaves it running; GAMEDAY=0 replaces the half-hour game day by a short load and the panel check).
#
# The stack under test is its own, in TEST_STATE_DIR, emptied first: the alerts are judged by what Prometheus
# recorded, and an earlier run's history (a game day's SLO burn stays in the 2 h and 6 h windows) would keep
# alerts open that this run never caused. `make up`'s state in STATE_DIR is never touched.
set -euo pipefail
# Every path under STATE_DIR must follow it, so it is set before env.sh derives them.
STATE_DIR=$(source "$(dirname "$0")/env.sh" && echo "$TEST_STATE_DIR")
source "$(dirname "$0")/env.sh"
cd "$REPO_ROOT"

# The clock time on each step: a slow CI run's log shows where the time went.
step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*" >&2; }
# Prints every address:port of the stack (each listener of every host, native/topology.env) that answers.
answering_ports() {
  local addr port
  while read -r addr port; do
    if port_open "$port" "$addr"; then echo "$addr:$port"; fi
  done < <(stack_listeners)
}
stop_stack() {
  if [ "${KEEP_STACK:-0}" = 1 ]; then
    log "the test stack keeps running (KEEP_STACK=1); STATE_DIR=$STATE_DIR make down stops it"
  else
    native/down.sh || true
  fi
}

step "empty state for the stack under test ($STATE_DIR)"
native/down.sh  # a stack an earlier KEEP_STACK=1 run left running
taken=$(answering_ports)
if [ -n "$taken" ]; then
  log "port(s) ${taken//$'\n'/ } already answer: the tests start a stack of their own; stop what holds them" \
    "first (\`make down\` for a stack started by \`make up\`), or run the tests on other ports (see native/env.sh)"
  exit 1
fi
rm -rf "$STATE_DIR"

step "the fast tier first (make check): build, fmt, clippy, unit tests, static checks"
native/check.sh

step "build the workspace"
cargo build --workspace --bins --tests --quiet

step "start the native stack"
NATIVE_SKIP_INSTALL=1 native/up.sh
trap stop_stack EXIT
# The Rust tests reach the stack's Postgres and Redis as the app does, with its credentials; to look at and
# change what the app may not (other schemas, TTLs, CLIENT PAUSE) they use the administrators'.
load_secrets
TEST_DATABASE_ADMIN_URL=$(cluster_url postgres "$(tr -d "\n" <"$SECRETS_DIR/postgres.password")")
TEST_REDIS_ADMIN_URL=redis://admin:$(tr -d '\n' <"$SECRETS_DIR/redis-admin.password")@127.0.0.1:$REDIS_PORT
export TEST_DATABASE_ADMIN_URL TEST_REDIS_ADMIN_URL

step "smoke test of the running stack"
"$BIN_DIR/opsctl" smoke --app "http://127.0.0.1:$APP_PORT" --admin "$(urls_of app APP_ADMIN_PORT)" \
  --prometheus "$(first_url prometheus PROMETHEUS_PORT)" --alertmanager "$(first_url alertmanager ALERTMANAGER_PORT)" \
  --inbox "http://127.0.0.1:$INBOX_PORT"

step "what a local user can do: every attack of the threat model, as nobody"
native/local-user-test.sh

step "game day: every alert fired, delivered and resolved; quiet period; proofs (make gameday, ~45 min)"
# First on the fresh stack, so that no earlier test's fault is still resolving. GAMEDAY=0 skips it (quick runs).
if [ "${GAMEDAY:-1}" = 1 ]; then
  native/gameday.sh
else
  echo "skipped (GAMEDAY=0)"
  "$BIN_DIR/opsctl" load --url "http://127.0.0.1:$APP_PORT" --rate 50 --duration 40s --keys 200
  "$BIN_DIR/xtask" live --prometheus "$(first_url prometheus PROMETHEUS_PORT)" --require-data
fi

step "the service's integration tests (real Postgres and Redis of the stack; make check ran the rest)"
cargo test --workspace --test api --test outage --quiet
# The outage tests stop and restart Postgres and Redis; make sure everything is back before the checks below.
NATIVE_SKIP_INSTALL=1 native/up.sh >/dev/null


step "every metric a rule, dashboard or runbook uses exists in what Prometheus scraped (make check linted them)"
"$BIN_DIR/xtask" live --prometheus "$(first_url prometheus PROMETHEUS_PORT)"

if [ "${KEEP_STACK:-0}" != 1 ]; then
  step "make down stops every program and leaves nothing listening"
  native/down.sh
  leftovers=()
  for port in $(answering_ports); do leftovers+=("port $port still answers"); done
  pgrep -f "$STATE_DIR" >/dev/null && leftovers+=("processes still use $STATE_DIR: $(pgrep -f -a "$STATE_DIR" | tr '\n' ';')")
  if [ ${#leftovers[@]} -gt 0 ]; then
    printf 'left behind: %s\n' "${leftovers[@]}" >&2
    exit 1
  fi
  echo "nothing left running"
fi

step "all tests passed"
