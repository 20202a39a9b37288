#!/usr/bin/env bash
# Prints the path of a cached Debian 12 root made by debootstrap (minbase
# plus systemd), building it on first use. Cached under
# /var/cache/sluice-tests unless SLUICE_TEST_CACHE says otherwise.
set -euo pipefail
cache=${SLUICE_TEST_CACHE:-/var/cache/sluice-tests}
root=$cache/bookworm-minbase
if [ ! -x "$root/usr/bin/dpkg" ]; then
  mkdir -p "$cache"
  mirror=$(sed -n 's/^URIs: *//p; s/^deb \(http[^ ]*\) .*/\1/p' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null | head -1)
  rm -rf "$root.tmp"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps bookworm "$root.tmp" "${mirror:-http://deb.debian.org/debian}" >&2
  mv "$root.tmp" "$root"
fi
echo "$root"
