#!/usr/bin/env bash
# The fast tier (`make check`): every check that needs no running stack, the quick ones first. `make test` runs
# it before it starts the stack, so a unit test or lint failure fails CI in minutes, not after the game day. Each step's command can be run alone (docs/testing.md).
#
# Installs what it lacks (as root on Debian 12: native/install.sh), builds nothing in release mode, starts no
# service of the stack (monitoring/check.sh and the inbox's tests run a throwaway Alertmanager of their own).
# Stops at the first failing step, naming it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO_ROOT"

# The clock time on each step: a slow CI run's log shows where the time went.
step() { printf '\n==> check [%s]: %s\n' "$(date +%T)" "$*" >&2; }
trap 'printf "\n==> check FAILED at: %s\n" "$current" >&2' ERR
run() { current=$1; shift; step "$current"; "$@"; }

run "install Debian packages" native/install.sh
run "rustfmt (cargo fmt --check)" cargo fmt --all --check
# Every shell script of the stack; -x -P SCRIPTDIR follow what they source (native/env.sh).
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
run "shellcheck" shellcheck -x -P SCRIPTDIR "${scripts[@]}"
run "rules, rule tests, Alertmanager config, routing and inhibition" monitoring/check.sh
run "compose file (static)" compose/check.sh
run "Kubernetes manifests (offline)" kubernetes/check.sh
run "dashboards against Grafana's schema" dashboards/check.sh
# The Rust steps last. The workspace was built by the rules step (native/xtask.sh, minutes on a fresh machine).
run "generated files are up to date (make generate)" native/xtask.sh generate --check
# monitoring/check.sh ran `xtask lint rules`, dashboards/check.sh the dashboard, provisioning, metric and promtool
# checks; what neither area owns is the runbooks and the links between alerts, runbooks and panels.
run "runbooks and links (xtask lint)" native/xtask.sh lint runbooks links
# The service's integration tests (tests/api, tests/outage) need the stack's Postgres and Redis: `make test`
# runs them. Everything else here is unit tests, or tests with in-process servers and throwaway binaries.
# Every cargo command selects the whole workspace with its tests, as native/xtask.sh does: one feature resolution,
# each dependency compiled once (`-p app` alone would compile the shared crates again with fewer features).
run "unit tests" cargo test --workspace --lib --bins --quiet
run "integration tests of the crates but the service" cargo test --workspace --exclude app --test '*' --quiet
run "clippy, warnings denied" cargo clippy --workspace --all-targets --quiet -- -D warnings
trap - ERR
step "all checks passed"
