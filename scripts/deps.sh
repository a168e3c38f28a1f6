#!/usr/bin/env bash
# Installs what the test suite needs from Debian's packages: e2fsprogs
# (mke2fs -d, e2fsck, debugfs), util-linux (losetup), fio, prometheus
# (prometheus, promtool), nginx, systemd (systemd-analyze, for deploy/'s
# unit file) and the WebDAV clients the dav tests run (litmus, the
# conformance suite; rclone). Run by `make deps` and so by `make test`.
# As root it installs what is missing; otherwise it lists what is missing and
# the tests that need it skip (or fail under CI=true).
set -euo pipefail

# tool -> package
declare -A want=(
  [mke2fs]=e2fsprogs [e2fsck]=e2fsprogs [debugfs]=e2fsprogs
  [losetup]=util-linux [fio]=fio
  [prometheus]=prometheus [promtool]=prometheus
  [nginx]=nginx [systemd-analyze]=systemd
  [litmus]=litmus [rclone]=rclone
)

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
for tool in "${!want[@]}"; do
  have "$tool" || missing+=("${want[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all test tools present"
  exit 0
fi
pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages: $pkgs(not root: tests that need them will skip)"
  [ "${CI:-}" = "true" ] && { echo "deps: CI=true needs them; run as root"; exit 1; }
  exit 0
fi
echo "deps: installing $pkgs"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The packages' own services are not wanted: tests start their own.
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
for tool in "${!want[@]}"; do
  have "$tool" || { echo "deps: $tool still missing after install"; exit 1; }
done
echo "deps: installed $pkgs"
