#!/usr/bin/env bash
# Checks every dashboard in dashboards/ without a running stack:
#   1. JSON Schema validation against Grafana's own dashboard type: @grafana/schema (the TypeScript types Grafana
#      generates from its CUE kinds) is turned into a JSON Schema by ts-json-schema-generator (gen-schema.js), and
#      check-jsonschema validates each dashboard against it. Unknown or misspelt keys fail: the schema is closed.
#   2. The structural lint (`xtask lint dashboards metrics`): uids, datasource variable, units, $__rate_interval,
#      the panel ids alerts link to, metric names declared; every query parsed (promql-parser, and promtool too
#      when it is on PATH).
#   3. Grafana's provisioning (`xtask lint provisioning`): the `prometheus` data source, and a read-only dashboard
#      provider whose path is where compose mounts dashboards/.
#
#   dashboards/check.sh                       exit status 0 when everything passes, 1 otherwise
#
# Installs what is missing, pinned: the npm tools from package-lock.json (`npm ci`) and check-jsonschema from
# requirements.txt into dashboards/check/.venv. Needs node >= 18, npm and python3 (with venv); set PYTHON to use
# another interpreter; steps 2 and 3 need cargo. The live counterpart, against a running Prometheus, is
# `cargo run -q -p xtask -- live --prometheus URL --require-data`.
set -euo pipefail

dashboards=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The schema tools (package.json, gen-schema.js, requirements.txt) and what they install live in check/.
here=$dashboards/check
build=$here/.build
venv=$here/.venv
python=${PYTHON:-python3}
say() { printf '[dashboards] %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------------------------------
for tool in node npm "$python"; do
  command -v "$tool" >/dev/null || { say "$tool is required (Debian: apt-get install nodejs npm python3-venv)"; exit 1; }
done

# npm ci when node_modules is missing or older than the lockfile (npm ci always starts from a clean tree).
if [ ! -f "$here/node_modules/.package-lock.json" ] || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  say "installing the pinned npm tools (npm ci)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

want=$(sed -n 's/^check-jsonschema==//p' "$here/requirements.txt")
have=$("$venv/bin/check-jsonschema" --version 2>/dev/null | sed -n 's/.*version //p' || true)
if [ "$have" != "$want" ]; then
  say "installing check-jsonschema $want into dashboards/check/.venv"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 ships venv separately; install it when we can, otherwise say what is missing.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
      "$python" -m venv --clear "$venv"
    else
      say "$python -m venv failed: install python3-venv"; exit 1
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2
fi

# --- 1. JSON Schema ----------------------------------------------------------------------------------------------
mkdir -p "$build"
status=0
node "$here/gen-schema.js" "$build/dashboard.schema.json" >&2
shopt -s nullglob
files=("$dashboards"/*.json)
if [ ${#files[@]} -eq 0 ]; then
  say "no dashboards in $dashboards"; exit 1
fi
if "$venv/bin/check-jsonschema" --schemafile "$build/dashboard.schema.json" "${files[@]}"; then
  say "schema: ${#files[@]} dashboards valid against @grafana/schema's Dashboard type"
else
  say "schema: FAILED"; status=1
fi

# --- 2. structural lint and 3. provisioning ----------------------------------------------------------------------
lint_args=()
if command -v promtool >/dev/null; then
  lint_args+=(--promtool "$(command -v promtool)")
else
  say "promtool not on PATH: queries are parsed by promql-parser only (apt-get install prometheus)"
fi
"$dashboards/../native/xtask.sh" lint dashboards provisioning metrics "${lint_args[@]}" || status=1

if [ "$status" -eq 0 ]; then say "dashboards: all checks passed"; else say "dashboards: FAILED"; fi
exit "$status"
