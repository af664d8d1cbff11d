#!/usr/bin/env bash
# Installs the system packages dunix needs on Debian 12, only if missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have fusermount3 || need+=(fuse3)
have setfattr || need+=(attr)
have setfacl || need+=(acl)
have python3 || need+=(python3)
have mkfifo || need+=(coreutils)
have bindfs || need+=(bindfs)
have fio || need+=(fio)
have etcd || need+=(etcd-server)
have sqlite3 || need+=(sqlite3)
have flock || need+=(util-linux)
# The bench's git status and make -j2 rows (npm run bench).
have git || need+=(git)
have make || need+=(make)
have cc || need+=(gcc)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root to install them)" >&2
    exit 1
  fi
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: load the fuse module (modprobe fuse)" >&2; exit 1; }
