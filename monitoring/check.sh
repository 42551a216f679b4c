#!/usr/bin/env bash
# Static and unit checks of the monitoring configuration; needs no running stack:
#   1. promtool check config on a temporary directory laid out like the native stack's (a symlink to
#      monitoring/prometheus/prometheus.yml, rules -> alerts/, targets/<job>.yml from native/topology.env) and on
#      one laid out like compose's (targets -> compose/prometheus/targets/); every file_sd file the config names
#      must exist in both;
#   2. promtool check rules alerts/*.yml, and `xtask lint rules` (naming, labels, annotations, test and
#      routing coverage);
#   3. promtool test rules alerts/tests/*.yml;
#   4. amtool check-config of alertmanager.yml, and of a copy with every commented integration example enabled;
#   5. the routing table monitoring/alertmanager/routes.tsv through `amtool config routes test`;
#   6. monitoring/alertmanager/test-inhibition.py: inhibition and deliveries on a real, temporary Alertmanager.
# Runs every step, prints what failed, exits 1 if anything did. Works from any directory; as root on a fresh
# Debian 12 it installs what it lacks (prometheus, prometheus-alertmanager, python3, python3-yaml).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AM_CONFIG=$ROOT/monitoring/alertmanager/alertmanager.yml
PY=/usr/bin/python3

log() { printf '[monitoring] %s\n' "$*" >&2; }

install_missing() {
  local missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  { command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null; } || missing+=(prometheus-alertmanager)
  [ -x "$PY" ] || missing+=(python3)
  "$PY" -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "FAIL: missing ${missing[*]}: install these Debian packages, or run as root on Debian"
    exit 1
  fi
  # The packages must not start their own Prometheus/Alertmanager on the stack's ports.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
    log "FAIL: apt-get install ${missing[*]}"
    exit 1
  }
}

failed=()
# step NAME COMMAND...: runs one check, shows its output, records a failure.
step() {
  local name=$1; shift
  printf '\n==> %s\n' "$name" >&2
  if "$@"; then
    log "ok: $name"
  else
    log "FAIL: $name"
    failed+=("$name")
  fi
}

install_missing
TMP=$(mktemp -d "${TMPDIR:-/tmp}/monitoring-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# The file_sd files prometheus.yml names (targets/<job>.yml), scrape jobs' and Alertmanagers' alike: read with a
# YAML parser, so a path in a comment or in another key is not taken for one.
target_files() {
  "$PY" - "$ROOT/monitoring/prometheus/prometheus.yml" <<'PY' | sort -u
import sys, yaml

def walk(node):
    if isinstance(node, dict):
        for sd in node.get("file_sd_configs") or []:
            for path in sd.get("files") or []:
                print(path)
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            walk(child)

with open(sys.argv[1]) as f:
    walk(yaml.safe_load(f))
PY
}
# The native targets as native/up.sh writes them (its write_targets, from native/topology.env, generated from
# monitoring/topology.yml), at the default ports.
native_targets() {
  (
    # shellcheck source=../native/env.sh
    source "$ROOT/native/env.sh"
    write_targets "$1/targets"
  )
}

check_config() {
  local env=$1 dir=$TMP/$1 f ok=0
  mkdir -p "$dir"
  ln -s "$ROOT/monitoring/prometheus/prometheus.yml" "$dir/prometheus.yml"
  ln -s "$ROOT/alerts" "$dir/rules"
  if [ "$env" = native ]; then
    mkdir "$dir/targets"
    native_targets "$dir"
  else
    ln -s "$ROOT/compose/prometheus/targets" "$dir/targets"
  fi
  # promtool only warns about a file_sd file that does not exist; a job without targets is a silent gap.
  for f in $(target_files); do
    [ -s "$dir/$f" ] || { log "$env: $f is missing or empty"; ok=1; }
  done
  promtool check config "$dir/prometheus.yml" || ok=1
  return $ok
}

# Enables every commented example in the receivers section: "# " lines become YAML, "## " lines stay prose.
check_examples() {
  local out=$TMP/alertmanager-examples.yml
  "$PY" - "$AM_CONFIG" "$out" <<'PYEOF' || return 1
import re, sys
src, dst = sys.argv[1], sys.argv[2]
lines, out, in_receivers = open(src).read().split("\n"), [], False
for line in lines:
    if re.match(r"^receivers:", line):
        in_receivers = True
    m = re.match(r"^(\s*)# (.*)$", line)
    if in_receivers and m and not line.lstrip().startswith("##"):
        line = m.group(1) + m.group(2)
    out.append(line)
text = "\n".join(out)
missing = [k for k in ("routing_key_file", "api_url_file", "auth_password_file") if k not in text]
if missing:
    sys.exit(f"examples: {missing} not found after uncommenting")
open(dst, "w").write(text)
PYEOF
  amtool check-config "$out"
}

check_routes() {
  local table=$ROOT/monitoring/alertmanager/routes.tsv receiver labels out n=0 bad=0 r
  while IFS=$'\t' read -r receiver labels; do
    case $receiver in '' | '#'*) continue ;; esac
    n=$((n + 1))
    # shellcheck disable=SC2086 # labels are space-separated name=value words
    if ! out=$(amtool config routes test --config.file="$AM_CONFIG" --verify.receivers="$receiver" $labels 2>/dev/null); then
      log "routes.tsv: {$labels} went to '${out%%$'\n'*}', expected '$receiver'"
      bad=$((bad + 1))
    fi
  done < "$table"
  # Every receiver of the configuration must be the expected one of at least one row.
  while read -r r; do
    grep -qP "^$r\t" "$table" || { log "routes.tsv: no row for receiver $r"; bad=$((bad + 1)); }
  done < <(awk '/^receivers:/{on=1} on && /^  - name:/{print $3}' "$AM_CONFIG")
  log "routes.tsv: $n cases, $bad failure(s)"
  [ "$bad" -eq 0 ]
}

step "promtool check config (native layout)" check_config native
step "promtool check config (compose layout)" check_config compose
step "promtool check rules" promtool check rules "$ROOT"/alerts/*.yml
step "rule conventions and test coverage" "$ROOT/native/xtask.sh" lint rules
step "promtool test rules" promtool test rules "$ROOT"/alerts/tests/*.yml
step "amtool check-config" amtool check-config "$AM_CONFIG"
step "amtool check-config (integration examples enabled)" check_examples
step "routing table" check_routes
# The peers' wait inside every group_interval; and the check refuses Alertmanager's default 15 s peer timeout here.
step "Alertmanager peer wait" "$PY" "$ROOT/monitoring/alertmanager/check-peer-wait.py"
peer_wait_check_refuses_15s() {
  if "$PY" "$ROOT/monitoring/alertmanager/check-peer-wait.py" --peer-timeout 15s >"$TMP/peer-wait.log"; then
    log "check-peer-wait.py passes a 15 s peer timeout"; return 1
  fi
  log "check-peer-wait.py refuses a 15 s peer timeout: $(grep -c FAIL "$TMP/peer-wait.log") route(s)"
}
step "the peer-wait check refuses a 15 s peer timeout" peer_wait_check_refuses_15s
# The test above proves the configuration; this proves the test: on a copy without inhibit rules it must fail.
inhibition_test_catches_a_missing_rule() {
  local broken=$TMP/no-inhibit-rules.yml
  "$PY" -c 'import sys, yaml; c = yaml.safe_load(open(sys.argv[1])); c.pop("inhibit_rules"); yaml.safe_dump(c, open(sys.argv[2], "w"))' \
    "$AM_CONFIG" "$broken"
  if "$PY" "$ROOT/monitoring/alertmanager/test-inhibition.py" --config "$broken" >"$TMP/no-inhibit.log" 2>&1; then
    log "test-inhibition.py passes a configuration with no inhibit rules"
    return 1
  fi
  log "test-inhibition.py refuses a configuration with no inhibit rules: $(grep -c FAIL "$TMP/no-inhibit.log") failure(s)"
}

step "inhibition and delivery (real Alertmanager)" "$PY" "$ROOT/monitoring/alertmanager/test-inhibition.py"
step "the inhibition test fails without the inhibit rules" inhibition_test_catches_a_missing_rule

echo >&2
if [ ${#failed[@]} -gt 0 ]; then
  log "FAILED: ${failed[*]}"
  exit 1
fi
log "all monitoring checks passed"
