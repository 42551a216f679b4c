#!/usr/bin/env bash
# `make status`: each program's state, then the memory the stack holds: per program, the proportional set size
# (PSS: shared pages split among the processes that share them, so Postgres's shared buffers count once) summed
# over the program's whole process tree (Postgres's backends, HAProxy's worker), and the total.
set -euo pipefail
source "$(dirname "$0")/env.sh"

"$REPO_ROOT/native/ctl.sh" status || exit $?

# pss_kib PID: the PSS of PID and all its descendants, in KiB.
pss_kib() {
  local pid=$1 total=0 kib child
  kib=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
  total=$((total + ${kib:-0}))
  # shellcheck disable=SC2013  # the children files are lists of PIDs separated by spaces
  for child in $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
    total=$((total + $(pss_kib "$child")))
  done
  echo "$total"
}

echo
printf '%-32s %10s\n' "memory (PSS)" "MiB"
sum=0
while read -r name state _ pid _; do
  [ "$state" = RUNNING ] || continue
  pid=${pid%,}
  kib=$(pss_kib "$pid")
  sum=$((sum + kib))
  awk -v n="$name" -v k="$kib" 'BEGIN {printf "%-32s %10.1f\n", n, k / 1024}'
done < <(supervisorctl_ status 2>/dev/null)
awk -v k="$sum" 'BEGIN {printf "%-32s %10.1f\n", "the whole stack", k / 1024}'
