#!/bin/bash
# Build qlite's default guest (Debian cloud kernel + busybox initramfs) from
# Debian packages only. Outputs in $QLITE_GUEST_DIR (default build/guest):
#   vmlinuz  System.map  initrd.img  config  VERSION
# Cached: re-running with unchanged inputs does nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=guest-images/lib.sh
. "$here/lib.sh"

out=${QLITE_GUEST_DIR:-$QLITE_ROOT/build/guest}
# gzip by default: measured under QEMU microvm in the test host, gzip (1.2 MB)
# reached the marker in a median 5.94 s vs 6.16 s uncompressed (2.8 MB), 3 runs
# each: loading the bigger file costs more than in-guest inflate saves.
# QLITE_GUEST_INITRD_COMPRESS=none gives a plain newc cpio.
compress=${QLITE_GUEST_INITRD_COMPRESS:-gzip}

# virtio drivers for both transports (qlite: PCI; QEMU microvm: MMIO). Their
# dependencies come from modules.dep.
modules=(virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_mmio virtio_blk virtio_net failover net_failover virtio_console virtio_rng
    virtio_balloon button evdev)

kver=$(kernel_version)
bbver=$(pkg_version busybox-static)

# Everything the result depends on; a changed stamp means rebuild.
stamp=$(printf '%s\n' "$kver" "$(pkg_version "linux-image-$kver")" "$bbver" \
    "$compress" "${modules[*]}" "${QLITE_GUEST_NO_DBG:-0}" |
    cat - "$here/build.sh" "$here/lib.sh" "$here/init" <(cd "$here/rootfs" && find . -type f -exec sha256sum {} +) |
    sha256sum | cut -d' ' -f1)
if [[ -e $out/.stamp && $(cat "$out/.stamp") == "$stamp" &&
      -s $out/vmlinuz && -s $out/initrd.img && -s $out/System.map ]]; then
    log "up to date: $out ($kver)"
    exit 0
fi

kdir=$(fetch_kernel "$kver")
bb=$(fetch_busybox)

mkdir -p "$out"
stage=$out/.initrd-root
rm -rf "$stage"
mkdir -p "$stage"/{proc,sys,dev,tmp,run,root,etc,mnt}
install_busybox "$bb" "$stage"
install_modules "$kdir/lib/modules/$kver" "$stage" "$kver" "${modules[@]}"
install -m 0755 "$here/init" "$stage/init"
# Files of the guest's root as they are (the power-button handler, ...).
cp -a "$here/rootfs/." "$stage/"
echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
echo "qlite-guest" >"$stage/etc/hostname"
make_cpio "$stage" "$out/initrd.img" "$compress"
rm -rf "$stage"

cp "$kdir/boot/vmlinuz-$kver" "$out/vmlinuz"
if [[ ${QLITE_GUEST_NO_DBG:-0} == 1 ]]; then
    log "QLITE_GUEST_NO_DBG=1: System.map is Debian's stub"
    cp "$kdir/boot/System.map-$kver" "$out/System.map"
else
    cp "$(fetch_sysmap "$kver")" "$out/System.map"
fi
cp "$kdir/boot/config-$kver" "$out/config"
echo "$kver" >"$out/VERSION"
echo "$stamp" >"$out/.stamp"
log "built $out: kernel $kver, busybox $bbver, initrd $(du -h "$out/initrd.img" | cut -f1) ($compress)"
