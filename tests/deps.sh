#!/usr/bin/env bash
# Installs the tools the test suites use, on Debian, when run as root.
# Elsewhere it names what is missing; under CI=true a missing tool fails.
set -euo pipefail
need=(file:file nginx:nginx strace:strace systemd-analyze:systemd prlimit:util-linux chromium:chromium lintian:lintian rpm:rpm debootstrap:debootstrap systemd-nspawn:systemd-container rpmlint:rpmlint
  qemu-system-x86_64:qemu-system-x86 /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf /usr/lib/systemd/boot/efi/linuxx64.efi.stub:systemd-boot-efi)
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair##*:}
  if [[ $cmd == /* ]]; then
    [ -e "$cmd" ] || missing+=("$pkg") # a file the package ships
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Tools only: packages such as nginx must not start their services.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy
    trap 'rm -f $policy' EXIT
  fi
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "missing tools (Debian packages): ${missing[*]}; the suites that use them will fail or say they were skipped" >&2
if [ "${CI:-}" = true ]; then exit 1; fi
