#!/usr/bin/env bash
# npm run install-system [-- --prefix DIR]: installs the built dunixfs as a
# system would run it, with nothing pointing into this checkout:
#   PREFIX/lib/dunix/               the bundle: each package's dist and
#                                   package.json, the production node_modules,
#                                   docs, deploy/ (units, example config)
#   PREFIX/bin/brickd, dunixctl, dunixfs, dunixfs-passthrough
#   SBIN/mount.dunixfs, SBIN/mount.fuse.dunixfs   (mount -t dunixfs, fstab)
#   SYSTEMD/brickd@.service, dunixfs@.service     (paths rewritten to PREFIX)
#   ETC/dunix/ (0700), ETC/logrotate.d/dunix
# Defaults: PREFIX=/usr/local, SBIN=/sbin, SYSTEMD=/etc/systemd/system,
# ETC=/etc. With --prefix DIR (a test, a staging root) all four go under DIR
# (DIR/sbin, DIR/lib/systemd/system, DIR/etc) unless given.
# Run `npm run build` first (npm run install-system does). Idempotent: a
# second run replaces the bundle (an upgrade; restart the daemons after).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
sbin= systemd= etc=
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --sbin-dir) sbin=${2:?}; shift 2 ;;
    --systemd-dir) systemd=${2:?}; shift 2 ;;
    --etc-dir) etc=${2:?}; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-system: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
if [ "$prefix" = /usr/local ]; then
  : "${sbin:=/sbin}" "${systemd:=/etc/systemd/system}" "${etc:=/etc}"
else
  : "${sbin:=$prefix/sbin}" "${systemd:=$prefix/lib/systemd/system}" "${etc:=$prefix/etc}"
fi
node=$(command -v node) || { echo "install-system: node is not on PATH" >&2; exit 1; }
for p in proto coord brickd mount; do
  [ -d "$repo/packages/$p/dist/src" ] || { echo "install-system: packages/$p is not built (npm run build)" >&2; exit 1; }
done

lib=$prefix/lib/dunix
stage=$(mktemp -d "$prefix/lib/.dunix-stage.XXXXXX" 2>/dev/null || { mkdir -p "$prefix/lib" && mktemp -d "$prefix/lib/.dunix-stage.XXXXXX"; })
trap 'rm -rf "$stage"' EXIT

# The workspace packages, as they run: package.json, dist/src, and what they load at run time (brick.proto).
for p in proto coord brickd mount; do
  d=$stage/node_modules/@dunix/$p
  mkdir -p "$d/dist"
  cp "$repo/packages/$p/package.json" "$d/"
  cp -a "$repo/packages/$p/dist/src" "$d/dist/src"
  [ -d "$repo/packages/$p/proto" ] && cp -a "$repo/packages/$p/proto" "$d/proto"
done
# Production dependencies: every package of the lock file not marked dev (nested ones come with their parent).
(cd "$repo" && "$node" -e '
  const lock = require("./package-lock.json");
  for (const [path, p] of Object.entries(lock.packages))
    if (path.startsWith("node_modules/") && !p.dev && !p.link && !path.slice(13).includes("node_modules/"))
      console.log(path);
') | while read -r path; do
  mkdir -p "$stage/$(dirname "$path")"
  cp -a "$repo/$path" "$stage/$path"
done
cp "$repo/package.json" "$stage/package.json"
mkdir -p "$stage/docs" && cp -a "$repo/docs/." "$stage/docs/"
cp "$repo/ARCHITECTURE.md" "$repo/README.md" "$stage/docs/" 2>/dev/null || true
mkdir -p "$stage/deploy" && cp -a "$repo/deploy/systemd" "$repo/deploy/etc" "$stage/deploy/"

# Swap the bundle in whole: a running daemon keeps the files it opened.
rm -rf "$lib.old"
[ -d "$lib" ] && mv "$lib" "$lib.old"
mv "$stage" "$lib"
trap - EXIT
rm -rf "$lib.old"
chmod 755 "$lib"

wrapper() { # wrapper FILE SCRIPT [ENV] [NODE_OPTIONS]
  cat > "$1.tmp" <<W
#!/bin/sh
# Installed by dunixfs's scripts/install-system.sh: runs the bundle in $lib.
${3:+$3
}exec "$node" ${4:+$4 }"$lib/node_modules/@dunix/$2" "\$@"
W
  chmod 755 "$1.tmp" && mv "$1.tmp" "$1"
}
mkdir -p "$prefix/bin" "$sbin"
# The Node options a brick runs with (packages/proto/src/node-flags.ts: its heap's growth).
brickd_flags=$("$node" --input-type=module -e "import('$lib/node_modules/@dunix/proto/dist/src/node-flags.js').then((m) => console.log(m.brickdNodeFlags.join(' ')))")
wrapper "$prefix/bin/brickd" brickd/dist/src/bin/brickd.js '' "$brickd_flags"
wrapper "$prefix/bin/dunixctl" coord/dist/src/bin/dunixctl.js
wrapper "$prefix/bin/dunixfs" mount/dist/src/bin/dunixfs.cjs
wrapper "$prefix/bin/dunixfs-passthrough" mount/dist/src/bin/dunixfs-passthrough.cjs
wrapper "$sbin/mount.dunixfs" mount/dist/src/bin/mount-helper.cjs 'PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH'
wrapper "$sbin/mount.fuse.dunixfs" mount/dist/src/bin/mount-helper.cjs 'PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH; export PATH'

mkdir -p "$systemd"
for u in brickd@.service dunixfs@.service; do
  sed -e "s|/usr/local/bin/|$prefix/bin/|g" -e "s|/etc/dunix/|$etc/dunix/|g" \
    -e "s|/usr/local/lib/dunix/|$lib/|g" "$repo/deploy/systemd/$u" > "$systemd/$u"
  chmod 644 "$systemd/$u"
done
install -d -m 0700 "$etc/dunix"
[ -e "$etc/dunix/brickd-example.conf" ] || install -m 0600 "$repo/deploy/etc/brickd-example.conf" "$etc/dunix/"
install -d -m 0755 "$etc/logrotate.d"
install -m 0644 "$repo/deploy/etc/logrotate.dunix" "$etc/logrotate.d/dunix"

echo "installed dunixfs $("$prefix/bin/brickd" --version | sed 's/^brickd //') in $lib"
echo "  bins: $prefix/bin/{brickd,dunixctl,dunixfs,dunixfs-passthrough}, $sbin/mount.dunixfs, $sbin/mount.fuse.dunixfs"
echo "  units: $systemd/brickd@.service, $systemd/dunixfs@.service (systemctl daemon-reload)"
echo "  config: $etc/dunix/ (brickd-example.conf), $etc/logrotate.d/dunix"
