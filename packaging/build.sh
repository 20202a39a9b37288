#!/usr/bin/env bash
# Builds dist/sluice_VERSION_ARCH.deb and dist/sluice-VERSION.RPMARCH.rpm for
# amd64 and arm64 with nfpm (pinned as a Go tool in go.mod). Reproducible:
# the same commit and SOURCE_DATE_EPOCH give byte-identical packages.
# Usage: packaging/build.sh VERSION LDFLAGS
set -euo pipefail
version=$1 ldflags=$2
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"
export SOURCE_DATE_EPOCH
out=dist build=dist/build
mkdir -p "$build"
CGO_ENABLED=0 go build -trimpath -tags netgo,osusergo -ldflags "$ldflags" -o "$build/sluice-host" ./cmd/sluice
"$build/sluice-host" man | gzip -n -9 > "$build/sluice.8.gz"
sed -e "s|@VERSION@|$version|; s|@DATE@|$(date -u -R -d "@$SOURCE_DATE_EPOCH")|" packaging/changelog | gzip -n -9 > "$build/changelog.gz"
for arch in amd64 arm64; do
  case $arch in amd64) rpmarch=x86_64 ;; arm64) rpmarch=aarch64 ;; esac
  CGO_ENABLED=0 GOARCH=$arch go build -trimpath -tags netgo,osusergo -ldflags "$ldflags" -o "$build/$arch/sluice" ./cmd/sluice
  sed -e "s|@VERSION@|$version|; s|@ARCH@|$arch|; s|@BIN@|$build/$arch/sluice|; s|@MAN@|$build/sluice.8.gz|; s|@CHANGELOG@|$build/changelog.gz|" \
    packaging/nfpm.yaml > "$build/nfpm-$arch.yaml"
  go tool nfpm package -f "$build/nfpm-$arch.yaml" -p deb -t "$out/sluice_${version}_$arch.deb" >/dev/null
  go tool nfpm package -f "$build/nfpm-$arch.yaml" -p rpm -t "$out/sluice-$version.$rpmarch.rpm" >/dev/null
done
ls -1 "$out"/sluice*"$version"*
