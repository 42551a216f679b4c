#!/usr/bin/env bash
# Installs the Debian packages the native stack and its checks need, skipping what is already there.
# `native/install.sh PACKAGE...` installs just those, the same way (the checks that run alone name theirs).
set -euo pipefail

packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(postgresql redis-server prometheus prometheus-alertmanager prometheus-postgres-exporter
  prometheus-redis-exporter prometheus-node-exporter prometheus-process-exporter supervisor wrk docker-compose
  python3-yaml curl ca-certificates apache2-utils procps shellcheck haproxy prometheus-blackbox-exporter nftables
  openssl patroni etcd-server etcd-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "native/install.sh: missing packages (${missing[*]}); run as root or install them with apt-get" >&2
  exit 1
fi
# Packages must not start their own copies of the services: the supervisor runs them on our ports.
# policy-rc.d is Debian's switch for that; it is removed again afterwards so later installs behave as usual.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
echo "native/install.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update -qq
# --no-install-recommends keeps docker-compose from pulling a whole Docker engine.
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
