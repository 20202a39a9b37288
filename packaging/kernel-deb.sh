#!/bin/bash
# Downloads a Debian linux-image package (no install) into DIR and prints
# its path: vmlinuz and its modules come from the same package, so that
# they match. PACKAGE defaults to what linux-image-amd64 depends on now.
#   packaging/kernel-deb.sh DIR [PACKAGE]
set -euo pipefail
dir=$1
pkg=${2:-}
if [ -z "$pkg" ]; then
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
	[ -n "$pkg" ] || { echo "kernel-deb: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 1; }
fi
mkdir -p "$dir"
existing=$(ls "$dir"/"${pkg}"_*.deb 2>/dev/null | head -1 || true)
if [ -n "$existing" ]; then
	echo "$existing"
	exit 0
fi
# apt-get download writes into the current directory (as root it warns
# that the download is unsandboxed; that is harmless).
(cd "$dir" && apt-get download -q "$pkg") >&2
ls "$dir"/"${pkg}"_*.deb | head -1
