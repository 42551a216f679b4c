#!/usr/bin/env bash
# Stops every program of the native stack and the supervisor itself; data stays in $STATE_DIR (`make clean` wipes it).
set -euo pipefail
source "$(dirname "$0")/env.sh"

pidfile=$STATE_DIR/supervisord.pid
if ! supervisorctl_ pid >/dev/null 2>&1; then
  log "the stack is not running"
  exit 0
fi
pid=$(cat "$pidfile")
continue_members
supervisorctl_ stop all >/dev/null || true
supervisorctl_ shutdown >/dev/null || true
# shutdown returns before the supervisor has exited; wait so nothing is left behind.
for _ in $(seq 1 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    # The members' cgroups (native/env.sh), empty once their processes are gone.
    if [ -n "$HOST_CGROUPS" ]; then rmdir "$HOST_CGROUPS"/*/ "$HOST_CGROUPS" 2>/dev/null || true; fi
    log "stopped"
    exit 0
  fi
  sleep 0.2
done
log "supervisord (pid $pid) did not exit within 30s"
exit 1
