#!/bin/bash
# Build qlite's default guest (Debian cloud kernel + busybox initramfs) from
# Debian packages only. Outputs in $QLITE_GUEST_DIR (default build/guest):
#   vmlinuz  System.map  initrd.img  config  VERSION
#   data.img  data.sha256       64 MiB ext4 data disk and its manifest (data.sh)
#   initrd-bench.img            only with --bench: initrd.img + fio and iperf3
#   initrd-mw.img               initrd.img + /bin/qlite-memwriter (static, from
#                               tests/guest/memwriter.c): the migration workload
#   qlite-memwriter             that binary (the host side runs it with -e)
# Cached: each output is rebuilt only when its inputs changed.
#
# usage: guest-images/build.sh [--bench]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=guest-images/lib.sh
. "$here/lib.sh"

bench=0
case ${1:-} in
--bench) bench=1 ;;
'') ;;
*) echo "usage: $0 [--bench]" >&2; exit 2 ;;
esac

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
# The bench variant's extra tools, copied from the host with the libraries
# ldd lists (the guest is the same Debian release; scripts/deps.sh installs
# them from guest-images/packages.txt). fio alone brings ~85 MB of libraries
# (it links Ceph, Gluster, RDMA...), which is why it is not in the default image.
bench_tools=(fio iperf3)

kver=$(kernel_version)
bbver=$(pkg_version busybox-static)

# Everything an output depends on; a changed stamp means rebuild.
stamp=$(printf '%s\n' "$kver" "$(pkg_version "linux-image-$kver")" "$bbver" \
    "$compress" "${modules[*]}" "${QLITE_GUEST_NO_DBG:-0}" |
    cat - "$here/build.sh" "$here/lib.sh" "$here/init" <(cd "$here/rootfs" && find . -type f -exec sha256sum {} +) |
    sha256sum | cut -d' ' -f1)
data_stamp=$(cat "$here/data.sh" "$here/lib.sh" | sha256sum | cut -d' ' -f1)
mw_src=$QLITE_ROOT/tests/guest/memwriter.c
mw_stamp=$(cat "$mw_src" <(echo "$stamp") <(cc --version | head -n1) | sha256sum | cut -d' ' -f1)
bench_stamp() {
    local t
    for t in "${bench_tools[@]}"; do
        command -v "$t" >/dev/null || die "$t is not installed (scripts/deps.sh installs it)"
        printf '%s %s\n' "$t" "$(dpkg-query -W -f='${Version}' "$t")"
    done | cat - <(echo "$stamp") | sha256sum | cut -d' ' -f1
}
fresh() { [[ -e $out/$1 && $(cat "$out/$1") == "$2" ]]; }

main_ok=0
if fresh .stamp "$stamp" && [[ -s $out/vmlinuz && -s $out/initrd.img && -s $out/System.map ]]; then
    main_ok=1
fi
data_ok=0
if fresh .data-stamp "$data_stamp" && [[ -s $out/data.img && -s $out/data.sha256 ]]; then
    data_ok=1
fi
bench_ok=1
if [[ $bench == 1 ]]; then
    bstamp=$(bench_stamp)
    fresh .bench-stamp "$bstamp" && [[ -s $out/initrd-bench.img ]] || bench_ok=0
fi
mw_ok=0
if fresh .mw-stamp "$mw_stamp" && [[ -s $out/initrd-mw.img && -s $out/qlite-memwriter ]]; then
    mw_ok=1
fi
if [[ $main_ok == 1 && $data_ok == 1 && $bench_ok == 1 && $mw_ok == 1 ]]; then
    log "up to date: $out ($kver)"
    exit 0
fi
mkdir -p "$out"

if [[ $data_ok == 0 ]]; then
    "$here/data.sh" "$out"
    echo "$data_stamp" >"$out/.data-stamp"
fi

if [[ $main_ok == 0 || $bench_ok == 0 ]]; then
    kdir=$(fetch_kernel "$kver")
    bb=$(fetch_busybox)
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
    if [[ $main_ok == 0 ]]; then
        make_cpio "$stage" "$out/initrd.img" "$compress"
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
    fi
    if [[ $bench_ok == 0 ]]; then
        for t in "${bench_tools[@]}"; do
            install_elf "$(command -v "$t")" "$stage"
        done
        make_cpio "$stage" "$out/initrd-bench.img" "$compress"
        echo "$bstamp" >"$out/.bench-stamp"
        log "built $out/initrd-bench.img (+ ${bench_tools[*]}): $(du -h "$out/initrd-bench.img" | cut -f1) ($compress)"
    fi
    rm -rf "$stage"
fi

if [[ $mw_ok == 0 || $main_ok == 0 ]]; then
    # An uncompressed cpio in front of the gzip one: the kernel unpacks both
    # (the other order fails: it takes what follows a gzip stream as another).
    stage=$out/.mw-root
    rm -rf "$stage"; mkdir -p "$stage/bin"
    cc -O2 -static -Wall -o "$stage/bin/qlite-memwriter" "$mw_src" ||
        die "cannot build qlite-memwriter (static: needs libc6-dev)"
    (cd "$stage" && printf 'bin\nbin/qlite-memwriter\n' | cpio --quiet -o -H newc -R 0:0) >"$out/mw.cpio"
    cat "$out/mw.cpio" "$out/initrd.img" >"$out/initrd-mw.img.tmp"
    mv "$out/initrd-mw.img.tmp" "$out/initrd-mw.img"
    cp "$stage/bin/qlite-memwriter" "$out/qlite-memwriter"
    rm -rf "$stage" "$out/mw.cpio"
    echo "$mw_stamp" >"$out/.mw-stamp"
    log "built $out/initrd-mw.img (+ qlite-memwriter)"
fi
