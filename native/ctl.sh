#!/usr/bin/env bash
# supervisorctl for the native stack: `native/ctl.sh status`, `native/ctl.sh stop redis`, `native/ctl.sh start redis`.
# Exits non-zero when the supervisor is not running or the action fails.
set -euo pipefail
source "$(dirname "$0")/env.sh"
out=$(supervisorctl_ "$@" 2>&1) && rc=0 || rc=$?
printf '%s\n' "$out"
# supervisorctl 4.2 exits 0 on some failures ("ERROR (not running)"), so read its output as well.
# `status` exits 3 when some program is stopped, which is a report, not a failure.
[ "${1:-}" = status ] && [ "$rc" -eq 3 ] && exit 0
if [ "$rc" -ne 0 ] || grep -q 'ERROR' <<<"$out"; then
  case "${1:-} $out" in
    "stop "*"not running"*|"start "*"already started"*) exit 0 ;;  # already in the wanted state
  esac
  exit 1
fi
