#!/usr/bin/env bash
# Prints the path of a cached Debian 12 root made by debootstrap (minbase
# plus systemd), building it on first use. Cached under
# /var/cache/sluice-tests unless SLUICE_TEST_CACHE says otherwise.
set -euo pipefail
cache=${SLUICE_TEST_CACHE:-/var/cache/sluice-tests}
root=$cache/bookworm-minbase
if [ ! -x "$root/usr/bin/dpkg" ]; then
  mkdir -p "$cache"
  # The host's own Debian mirror, from the sources apt reads (deb822
  # .sources files or one-line .list ones; either kind may be absent):
  # the first URI of the first entry.
  mirror=$({ cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list /etc/apt/sources.list 2>/dev/null || true; } |
    awk '!m && /^URIs:/ {m = $2} !m && /^deb http/ {m = $2} END {print m}')
  rm -rf "$root.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm "$root.tmp" "${mirror:-http://deb.debian.org/debian}" >&2
  mv "$root.tmp" "$root"
fi
echo "$root"
