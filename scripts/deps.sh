#!/bin/bash
# Install what qlite needs from Debian's packages (build, tests, guest image,
# KVM test host). The one place the package list lives, beside
# guest-images/packages.txt for the image/test-host side.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
    gcc meson ninja-build pkg-config
    libc6-dev iproute2 linux-libc-dev liburing-dev libelf-dev zlib1g-dev libcap-ng-dev libjson-c-dev libxxhash-dev
    libcmocka-dev
    clang llvm libclang-rt-14-dev python3
)
while read -r p; do
    [[ -n $p && $p != \#* ]] && pkgs+=("$p")
done <"$root/guest-images/packages.txt"

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
