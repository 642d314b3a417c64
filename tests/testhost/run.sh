#!/bin/bash
# Run SCRIPT inside the KVM test host: Debian's cloud kernel under QEMU TCG with
# an emulated AMD SVM CPU, where the real kvm-amd module loads and Linux guests
# boot through real (nested) KVM. See tests/testhost/README.md.
#
# usage: tests/testhost/run.sh [--qlite PATH] [--with-qemu] [--timeout SEC]
#            [--smp N] [--mem MB] [--env NAME=VALUE]... [--bin PATH]...
#            [--guest-file NAME]... SCRIPT [ARGS...]
# Exit status: SCRIPT's, read from the "TESTHOST-EXIT: <rc>" console line;
# 124 on timeout, 125 if KVM did not come up, 126 if the line is missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/tests/testhost
# shellcheck source=guest-images/lib.sh
. "$root/guest-images/lib.sh"

usage() { sed -n '6,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

qlite=$root/build/src/qlite
qlite_explicit=0
with_qemu=0
timeout_s=600
smp=1
mem=2048
envs=()
bins=()
guest_files=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --qlite) qlite=$2; qlite_explicit=1; shift 2 ;;
    --with-qemu) with_qemu=1; shift ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --env) [[ $2 == [A-Za-z_]*=* ]] || die "--env wants NAME=VALUE"; envs+=("$2"); shift 2 ;;
    --bin) bins+=("$2"); shift 2 ;;
    --guest-file) guest_files+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
[[ $# -ge 1 ]] || usage
script=$(realpath "$1"); shift
[[ -f $script ]] || die "no such script: $script"

out=${QLITE_TESTHOST_DIR:-$root/build/testhost}
mkdir -p "$out/logs"
guest=${QLITE_GUEST_DIR:-$root/build/guest}
QLITE_GUEST_DIR=$guest "$root/guest-images/build.sh"

kver=$(cat "$guest/VERSION")
kdir=$(fetch_kernel "$kver")
bb=$(fetch_busybox)
# kvm + kvm-amd + irqbypass for KVM; tun/veth/bridge for networking tests;
# loop (mount -o loop a guest disk) and brd (RAM block devices: an O_DIRECT
# capable filesystem for disk images, which the test host's tmpfs is not).
host_modules=(irqbypass kvm kvm_amd tun veth bridge loop brd)

# --- base archive: busybox, bash, modules, /init (cached) -------------------
base_stamp=$(printf '%s\n' "$kver" "$bb" "${host_modules[*]}" "$(sha256sum "$(command -v bash)")" |
    cat - "$here/init" "$here/run.sh" "$root/guest-images/lib.sh" | sha256sum | cut -c1-16)
base=$out/base-$base_stamp.cpio
if [[ ! -s $base ]]; then
    log "building test host base archive"
    rm -f "$out"/base-*.cpio
    stage=$out/.base-root
    rm -rf "$stage"; mkdir -p "$stage"/{proc,sys,dev,tmp,run,root,etc/testhost,mnt,qlite}
    install_busybox "$bb" "$stage"
    install_modules "$kdir/lib/modules/$kver" "$stage" "$kver" "${host_modules[@]}"
    # Scripts run in the test host are bash (set -euo pipefail); busybox is the rest.
    rm -f "$stage/bin/bash"
    install_elf "$(realpath "$(command -v bash)")" "$stage" /bin/bash
    install -m 0755 "$here/init" "$stage/init"
    echo "root:x:0:0:root:/root:/bin/sh" >"$stage/etc/passwd"
    echo "root:x:0:" >"$stage/etc/group"
    make_cpio "$stage" "$base"
    rm -rf "$stage"
fi
parts=("$base")

# --- QEMU archive (cached): binary, libs, firmware ----------------------------
if [[ $with_qemu == 1 ]]; then
    qemu_bin=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not installed"
    qemu_bin=$(realpath "$qemu_bin")
    # -M microvm -kernel needs qboot (bios-microvm.bin) and the linuxboot option
    # ROM; -M q35/pc (PCI devices, as the benchmarks use) SeaBIOS and kvmvapic.
    # QEMU looks for them beside its binary: ../share/qemu, ../share/seabios.
    fw_files=(/usr/share/qemu/{bios-microvm.bin,linuxboot_dma.bin,linuxboot.bin,pvh.bin,kvmvapic.bin}
        /usr/share/seabios/bios-256k.bin)
    qstamp=$( { ls -lL "$qemu_bin" "${fw_files[@]}"; } | sha256sum | cut -c1-16)
    qarch=$out/qemu-$qstamp.cpio
    if [[ ! -s $qarch ]]; then
        log "building test host QEMU archive"
        rm -f "$out"/qemu-*.cpio
        stage=$out/.qemu-root
        rm -rf "$stage"
        install_elf "$qemu_bin" "$stage" /usr/bin/qemu-system-x86_64
        for f in "${fw_files[@]}"; do
            mkdir -p "$stage${f%/*}"
            cp -L "$f" "$stage$f"
        done
        # make_cpio's dev-node prefix is harmless when repeated.
        make_cpio "$stage" "$qarch"
        rm -rf "$stage"
    fi
    parts+=("$qarch")
fi

# --- per-run archive: qlite, guest image, tests, script, env ----------------
stage=$out/.run-root
rm -rf "$stage"; mkdir -p "$stage"/{etc/testhost,guest,qlite/tests}
if [[ -x $qlite ]]; then
    install_elf "$(realpath "$qlite")" "$stage" /usr/bin/qlite
elif [[ $qlite_explicit == 1 ]]; then
    die "qlite binary $qlite not found"
else
    log "note: $qlite not built; the test host has no /usr/bin/qlite"
fi
cp "$guest"/{vmlinuz,initrd.img,System.map,VERSION} "$stage/guest/"
# Further guest-image files on request (the 64 MiB data disk, the bench initrd).
for f in "${guest_files[@]}"; do
    [[ -f $guest/$f ]] || die "--guest-file: no $guest/$f (guest-images/build.sh [--bench] builds it)"
    cp "$guest/$f" "$stage/guest/"
done
# Host binaries for scripts (iperf3, mke2fs, ...) with their libraries.
for b in "${bins[@]}"; do
    p=$(command -v "$b") || die "--bin: $b not found on this host"
    install_elf "$(realpath "$p")" "$stage" "$p"
done
for d in guest bench; do
    [[ -d $root/tests/$d ]] && cp -a "$root/tests/$d" "$stage/qlite/tests/"
done
# Keep repo-relative paths so scripts can find their siblings; others go to ext/.
case $script in
"$root"/*) rel=${script#"$root"/} ;;
*) rel=ext/${script##*/} ;;
esac
mkdir -p "$stage/qlite/$(dirname "$rel")"
cp -n "$script" "$stage/qlite/$rel"
chmod +x "$stage/qlite/$rel"
{
    echo "QLITE=/usr/bin/qlite"
    echo "GUEST_KERNEL=/guest/vmlinuz"
    echo "GUEST_INITRD=/guest/initrd.img"
    echo "GUEST_SYSMAP=/guest/System.map"
    echo "QLITE_TESTHOST=1"
    for e in "${envs[@]}"; do printf '%s=%q\n' "${e%%=*}" "${e#*=}"; done
} >"$stage/etc/testhost/env"
# A script without #! runs under bash (exec would fail with ENOEXEC).
interp=()
[[ $(head -c2 "$script") == '#!' ]] || interp=(/bin/bash)
{
    printf 'exec'
    printf ' %q' "${interp[@]}" "/qlite/$rel" "$@"
    echo
} >"$stage/etc/testhost/cmd"
run_cpio=$out/run.cpio
make_cpio "$stage" "$run_cpio"
rm -rf "$stage"
cat "${parts[@]}" "$run_cpio" >"$out/host.cpio"

# --- boot -------------------------------------------------------------------
logf=$out/logs/$(date +%Y%m%d-%H%M%S)-${script##*/}.log
ln -sfn "${logf##*/}" "$out/logs/latest.log"
log "booting test host (smp $smp, ${mem}M, timeout ${timeout_s}s), log: $logf"
t0=$(date +%s.%N)
set +e
# No stdin (CI has none): the serial port is output only. sed strips the CRs
# of the serial tty unbuffered, so the console streams live, and drops the
# harmless "TCG doesn't support" warnings for the EPYC model.
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -cpu EPYC,+svm,+npt -m "$mem" -smp "$smp" \
    -nodefaults -no-user-config -display none -monitor none -serial stdio -no-reboot \
    -kernel "$guest/vmlinuz" -initrd "$out/host.cpio" \
    -append "console=ttyS0 panic=-1 quiet ${QLITE_TESTHOST_APPEND:-}" \
    </dev/null 2>&1 | sed -u -e 's/\r$//' -e "/TCG doesn't support requested feature/d" | tee "$logf"
qrc=${PIPESTATUS[0]}
set -e
t1=$(date +%s.%N)
wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')

rc=$(awk '/^TESTHOST-EXIT: [0-9]+$/ { rc = $2 } END { print rc }' "$logf")
if [[ $qrc == 124 || $qrc == 137 ]]; then
    log "FAIL: test host timed out after ${timeout_s}s (log: $logf)"
    exit 124
elif grep -q '^TESTHOST-ERROR:' "$logf"; then
    log "FAIL: $(grep -m1 '^TESTHOST-ERROR:' "$logf")"
    exit 125
elif [[ -z $rc ]]; then
    log "FAIL: no TESTHOST-EXIT line (qemu rc $qrc; crash or panic?) (log: $logf)"
    exit 126
fi
log "script exit status $rc, test host wall ${wall}s (log: $logf)"
exit "$rc"
