#!/usr/bin/env bash
# `make bench`: release-builds the app and the bench-only ceiling, starts Postgres and Redis through the native
# stack's scripts (installing what is missing, wrk included), runs app/bench/bench.py, and stops whatever it
# started. Prints one table and writes it to $STATE_DIR/bench/results.md (raw figures in results.json).
# Settings: BENCH_DURATION (s per full-speed run, 10), BENCH_ROUNDS (3), BENCH_THREADS/BENCH_CONNECTIONS (wrk, 2/32),
# BENCH_RATE (req/s of the paced runs, 500), BENCH_OUT_DIR; ports and STATE_DIR as in native/env.sh.
# Credentials: load_secrets (native/env.sh) exports APP_DATABASE_URL and APP_REDIS_URL from $SECRETS_DIR; bench.py
# and the servers take them from the environment, never from a command line.
set -euo pipefail
source "$(dirname "$0")/../../native/env.sh"
cd "$REPO_ROOT"

OUT_DIR=${BENCH_OUT_DIR:-$STATE_DIR/bench}
mkdir -p "$OUT_DIR"
: > "$OUT_DIR/pids"

# Leave the machine as we found it: note what already runs, so that only what this script started is stopped.
supervisor_was_running=0
supervisorctl_ pid >/dev/null 2>&1 && supervisor_was_running=1
started_programs=()
for p in postgres redis; do
  if [ $supervisor_was_running = 0 ] || [ "$(supervisorctl_ status "$p" 2>/dev/null | awk '{print $2}')" != RUNNING ]; then
    started_programs+=("$p")
  fi
done

cleanup() {
  local pid
  # The servers bench.py started (it stops them itself; this covers an interrupted run). Only those pids.
  while read -r pid; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done < "$OUT_DIR/pids"
  if [ $supervisor_was_running = 0 ]; then
    native/down.sh || true
  else
    for p in "${started_programs[@]}"; do native/ctl.sh stop "$p" >/dev/null || true; done
  fi
}
trap cleanup EXIT

native/up.sh etcd postgres redis
# After up.sh, not right after sourcing env.sh: on a new STATE_DIR it is up.sh that makes the secrets.
load_secrets
for tool in wrk psql redis-cli; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (native/install.sh installs it)" >&2; exit 1; }
done

# Release builds: what a deployment runs, and what the figures are about. Only the binaries the bench needs.
cargo build --release --quiet -p app -p bench
bin=$CARGO_TARGET_DIR/release

/usr/bin/python3 app/bench/bench.py --out-dir "$OUT_DIR" --app-bin "$bin/app" --ceiling-bin "$bin/ceiling" \
  --render-bin "$bin/metrics-render" --redis-get-bin "$bin/redis-get"
