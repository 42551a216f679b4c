# Shared settings of the native stack: sourced by every script in native/ and by the Makefile's recipes.
# Each value can be overridden from the environment; defaults match .env.example and the compose stack.

REPO_ROOT=${REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
# All state (data, logs, sockets, generated Prometheus targets) lives here; `make clean` removes it.
# Kept outside the checkout because the postgres user must be able to reach its data directory.
STATE_DIR=${STATE_DIR:-/var/tmp/sre-stack}
# `make test` runs its own stack here, emptied at the start of every run (native/test.sh says why).
TEST_STATE_DIR=${TEST_STATE_DIR:-/var/tmp/sre-stack-test}

APP_PORT=${APP_PORT:-8080}
APP_ADMIN_PORT=${APP_ADMIN_PORT:-8081}
INBOX_PORT=${INBOX_PORT:-8082}
PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
REDIS_PORT=${REDIS_PORT:-6379}
PG_PORT=${PG_PORT:-5432}
REDIS_EXPORTER_PORT=${REDIS_EXPORTER_PORT:-9121}
PG_EXPORTER_PORT=${PG_EXPORTER_PORT:-9187}
NODE_EXPORTER_PORT=${NODE_EXPORTER_PORT:-9100}
PROCESS_EXPORTER_PORT=${PROCESS_EXPORTER_PORT:-9256}

# Local-only credentials of the loopback database; production deployments bring their own.
PG_APP_PASSWORD=${PG_APP_PASSWORD:-app}
PG_EXPORTER_PASSWORD=${PG_EXPORTER_PASSWORD:-exporter}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}

# Binaries of the workspace; debug builds are enough for a local stack and build twice as fast here.
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}
BIN_DIR=${BIN_DIR:-$CARGO_TARGET_DIR/debug}

# What the app and the inbox read (see .env.example); the supervisor passes its environment to its programs.
APP_LISTEN_ADDR=${APP_LISTEN_ADDR:-127.0.0.1:$APP_PORT}
APP_ADMIN_ADDR=${APP_ADMIN_ADDR:-127.0.0.1:$APP_ADMIN_PORT}
APP_DATABASE_URL=${APP_DATABASE_URL:-postgres://app:$PG_APP_PASSWORD@127.0.0.1:$PG_PORT/app}
APP_REDIS_URL=${APP_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}
APP_LOG_FORMAT=${APP_LOG_FORMAT:-json}
# The game day drives the SLO alerts through the admin listener's fault injection, so the local stack enables it.
APP_FAULT_INJECTION_ENABLED=${APP_FAULT_INJECTION_ENABLED:-true}
INBOX_LISTEN_ADDR=${INBOX_LISTEN_ADDR:-127.0.0.1:$INBOX_PORT}
INBOX_RUNBOOKS_DIR=${INBOX_RUNBOOKS_DIR:-$REPO_ROOT/runbooks}
INBOX_DATA_FILE=${INBOX_DATA_FILE:-$STATE_DIR/inbox/notifications.jsonl}
PG_EXPORTER_DSN=${PG_EXPORTER_DSN:-postgresql://postgres_exporter:$PG_EXPORTER_PASSWORD@127.0.0.1:$PG_PORT/app?sslmode=disable}

export REPO_ROOT STATE_DIR TEST_STATE_DIR APP_PORT APP_ADMIN_PORT INBOX_PORT PROMETHEUS_PORT ALERTMANAGER_PORT REDIS_PORT PG_PORT \
  REDIS_EXPORTER_PORT PG_EXPORTER_PORT NODE_EXPORTER_PORT PROCESS_EXPORTER_PORT PG_APP_PASSWORD PG_EXPORTER_PASSWORD \
  PG_BIN CARGO_TARGET_DIR BIN_DIR APP_LISTEN_ADDR APP_ADMIN_ADDR APP_DATABASE_URL APP_REDIS_URL APP_LOG_FORMAT \
  APP_FAULT_INJECTION_ENABLED INBOX_LISTEN_ADDR INBOX_RUNBOOKS_DIR INBOX_DATA_FILE PG_EXPORTER_DSN

# Every program the supervisor runs, in start order.
STACK_PROGRAMS="postgres redis app inbox redis_exporter postgres_exporter node_exporter process_exporter alertmanager prometheus"

supervisorctl_() { supervisorctl -c "$REPO_ROOT/native/supervisord.conf" "$@"; }
log() { printf '[native] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
