#!/bin/bash
# The default guest's data disk: a 64 MiB ext4 image built with `mke2fs -d`
# (Debian's e2fsprogs) from a few known files, with MANIFEST.sha256 at its
# root (`cd /mnt && sha256sum -c MANIFEST.sha256` in the guest) and the same
# manifest beside it as data.sha256 for checks from the host side.
# Called by build.sh; tests that write to the disk should use a copy.
#
# usage: guest-images/data.sh OUTDIR   ->  OUTDIR/data.img  OUTDIR/data.sha256
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=guest-images/lib.sh
. "$here/lib.sh"

out=${1:?usage: data.sh OUTDIR}
size=64M
label=qlite-data
# Fixed, so the guest can find it by UUID too (blkid / mount UUID=...).
uuid=7c1e0da7-a000-4000-8000-00000000da7a
command -v mke2fs >/dev/null || die "mke2fs not found (Debian package e2fsprogs)"

stage=$out/.data-root
rm -rf "$stage"
mkdir -p "$stage/docs/nested/deeper" "$stage/blobs"
cat >"$stage/README.txt" <<'TXT'
qlite default data disk (guest-images/data.sh).
MANIFEST.sha256 lists every file with its SHA-256:
    mount /dev/vda /mnt && cd /mnt && sha256sum -c MANIFEST.sha256
TXT
echo "hello from the qlite data disk" >"$stage/hello.txt"
seq 1 100000 >"$stage/docs/numbers.txt"
echo "three levels down" >"$stage/docs/nested/deeper/leaf.txt"
# Incompressible data, so a corrupted block shows up as a wrong checksum.
head -c 1M /dev/urandom >"$stage/blobs/random-1M.bin"
head -c 4097 /dev/urandom >"$stage/blobs/odd-size.bin"
: >"$stage/empty.txt"
(cd "$stage" && find . -type f | LC_ALL=C sort | sed 's|^\./||' | xargs sha256sum) >"$out/data.sha256.tmp"
cp "$out/data.sha256.tmp" "$stage/MANIFEST.sha256"

rm -f "$out/data.img.tmp"
truncate -s "$size" "$out/data.img.tmp" # mke2fs would announce creating it
mke2fs -q -F -t ext4 -b 4096 -L "$label" -U "$uuid" -E root_owner=0:0 -d "$stage" "$out/data.img.tmp" "$size"
mv "$out/data.img.tmp" "$out/data.img"
mv "$out/data.sha256.tmp" "$out/data.sha256"
rm -rf "$stage"
log "built $out/data.img: ext4 $size, label $label, $(wc -l <"$out/data.sha256") files in MANIFEST.sha256"
