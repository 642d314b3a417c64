#!/bin/bash
# The guest profiler against a Linux guest: `qlite profile` samples a
# CPU-bound kernel workload (dd from /dev/zero to /dev/null: the kernel
# clears user buffers over and over), resolves it through the cloud
# kernel's System.map with the KASLR offset found from MSR_LSTAR, and
# accounts the exits of the guest's console output to the serial device and,
# over a profiled boot, those of PCI configuration and of a virtio device.
# Bad input leaves the guest running; a guest that powers off mid-profile
# still gets its profile written.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-profile: qlite's profiler only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

sysmap=${GUEST_SYSMAP:-/guest/System.map}

wait_log() { # pattern seconds
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        grep -q "$1" "$VM_LOG" 2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}
start_vm() { # name cmd
    sock=/tmp/$test_name-$1.sock
    VM_LOG=/tmp/$test_name-$1.log
    rm -f "$sock"
    echo "---- $test_name: $1: qlite run --qmp, 1 vCPU, 256M, qlite.cmd=\"$2\""
    timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
        --mem 256M --qmp "unix:$sock" --cmdline "$GUEST_BASE_CMDLINE qlite.cmd=\"$2\"" \
        </dev/null >"$VM_LOG" 2>&1 &
    vm=$!
    for _ in $(seq 1 100); do [[ -S $sock ]] && break; sleep 0.1; done
}
stop_vm() {
    "$QLITE" quit --qmp "$sock" >/dev/null 2>&1 || true
    set +e
    wait "$vm"
    VM_RC=$?
    set -e
    sed -i 's/\r$//' "$VM_LOG"
}
# The N hottest [kernel] functions of a folded file (already sorted by count).
top_kernel() { awk -v n="$2" '/^\[kernel\];/ && k++ < n { sub(/^\[kernel\];/, ""); NF--; print }' "$1"; }
json_num() { sed -n "s/^ *\"$2\": \([0-9.]*\),*$/\1/p" "$1" | head -n1; }
json_str() { sed -n "s/^ *\"$2\": \"\([^\"]*\)\",*$/\1/p" "$1" | head -n1; }

# 1. dd in a loop, one line of output per 64 MiB: kernel work plus serial exits.
f0=$n_fail
start_vm dd "while :; do dd if=/dev/zero of=/dev/null bs=1M count=64 2>&1 | tail -n 1; done"
check "guest booted to its workload" wait_log QLITE-CMD-BEGIN "$VM_TIMEOUT"
out=/tmp/$test_name-out
plog=/tmp/$test_name-profile.log
set +e
"$QLITE" profile --qmp "$sock" --duration 6s --freq 999 --symbols "$sysmap" --out "$out" \
    >"$plog" 2>&1
rc=$?
set -e
sed 's/^/     | /' "$plog"
check "qlite profile: exit status 0 (got $rc)" test "$rc" = 0
for f in profile.folded flamegraph.svg summary.json report.txt; do
    check "qlite profile: $f written" test -s "$out/$f"
done
top=$(top_kernel "$out/profile.folded" 5 | tr '\n' ' ')
echo "     top kernel functions: $top"
# Reading /dev/zero is clear_user (clear_user_erms/_rep_good/_original in 6.1,
# by CPU); the rest is the syscall path around it.
check "the top kernel functions include clear_user* (got: $top)" \
    grep -qE '(^| )(__)?clear_user' <<<"$top"
kernel=$(json_num "$out/summary.json" kernel_samples)
unres=$(json_num "$out/summary.json" unresolved_kernel_samples)
check "kernel samples: ${kernel:-0}, of which unresolved ${unres:-?} (< 10 %)" \
    awk -v k="${kernel:-0}" -v u="${unres:-999999}" 'BEGIN { exit !(k > 100 && u * 10 < k) }'
check "KASLR offset found from MSR_LSTAR ($(json_str "$out/summary.json" kaslr_offset), $(json_str "$out/summary.json" kaslr_source))" \
    grep -q '"kaslr_source": "auto: MSR_LSTAR - entry_SYSCALL_64"' "$out/summary.json"
check "exit accounting: the guest's console output counted at the serial device" \
    grep -qE '^  device serial[0-9]* +pio +[1-9][0-9]* exits' "$out/report.txt"
check "exit accounting: time in the VMM for IO exits" \
    grep -qE 'IO [1-9][0-9]* \([0-9.]+ ms\)' "$out/report.txt"
check "the SVG flame graph names clear_user*" grep -q 'clear_user' "$out/flamegraph.svg"

# 2. Bad input: one clear message, exit 1, the guest keeps running.
for bad in "--freq 20000:above the limit" "--symbols /nonexistent.map:cannot open symbol file" \
    "--out /proc/version:not a directory"; do
    set +e
    # shellcheck disable=SC2086
    msg=$("$QLITE" profile --qmp "$sock" --duration 1s ${bad%%:*} 2>&1 >/dev/null)
    rc=$?
    set -e
    check "bad input ${bad%%:*}: exit 1 and \"${bad#*:}\" (got $rc: $msg)" \
        test "$rc" = 1 -a -n "$(grep -F "${bad#*:}" <<<"$msg")"
done
check "the guest still runs" test "$("$QLITE" status --qmp "$sock")" = running
stop_vm
check "qlite exit status 0 after quit (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

# 3. Profiling a boot (-S, profile, resume) with a virtio device: the boot's
#    port and MMIO exits are attributed to the PCI config ports and to the
#    virtio-rng device's BAR. (In steady state virtio notifications reach KVM's
#    ioeventfds, not qlite: they show as guest time at the notify, not as exits.)
f0=$n_fail
sock=/tmp/$test_name-boot.sock
VM_LOG=/tmp/$test_name-boot.log
rm -f "$sock"
echo "---- $test_name: boot: qlite run -S --rng --qmp, profiled from the first instruction"
timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
    --mem 256M -S --rng --qmp "unix:$sock" \
    --cmdline "$GUEST_BASE_CMDLINE qlite.cmd=\"head -c 64 /dev/hwrng | wc -c\"" \
    </dev/null >"$VM_LOG" 2>&1 &
vm=$!
for _ in $(seq 1 100); do [[ -S $sock ]] && break; sleep 0.1; done
out=/tmp/$test_name-boot-out
"$QLITE" profile --qmp "$sock" --duration 120s --refresh 0 --symbols "$sysmap" --out "$out" \
    >"$plog" 2>&1 &
prof=$!
for _ in $(seq 1 50); do grep -q "sampling for" "$plog" && break; sleep 0.1; done
"$QLITE" resume --qmp "$sock" >/dev/null
set +e
wait "$prof"
rc=$?
wait "$vm"
VM_RC=$?
set -e
sed -i 's/\r$//' "$VM_LOG"
grep -E '^vCPU|^  device' "$out/report.txt" 2>/dev/null | sed 's/^/     | /'
check "qlite profile over the whole boot: exit status 0 (got $rc)" test "$rc" = 0
check "the guest read 64 bytes from virtio-rng and powered off" \
    grep -qx 64 <<<"$(vm_cmd_output)"
check "exit accounting: PCI configuration cycles at pci-config (port I/O)" \
    grep -qE '^  device pci-config +pio +[1-9]' "$out/report.txt"
check "exit accounting: the driver's accesses to the virtio-rng BAR (MMIO)" \
    grep -qE '^  device virtio-rng +mmio +[1-9]' "$out/report.txt"
check "exit accounting: the boot console at serial0" \
    grep -qE '^  device serial0 +pio +[1-9]' "$out/report.txt"
vm_dump_on_failure "$f0"

# 4. The guest powers off while a 120 s profile runs: the profile is written.
f0=$n_fail
start_vm short "sleep 1; dd if=/dev/zero of=/dev/null bs=1M count=256; echo WORK-DONE"
check "guest booted to its workload" wait_log QLITE-CMD-BEGIN "$VM_TIMEOUT"
out=/tmp/$test_name-short
set +e
"$QLITE" profile --qmp "$sock" --duration 120s --symbols "$sysmap" --out "$out" >"$plog" 2>&1
rc=$?
wait "$vm"
VM_RC=$?
set -e
sed -i 's/\r$//' "$VM_LOG"
sed 's/^/     | /' "$plog"
check "guest finished its work and powered off" grep -q WORK-DONE "$VM_LOG"
check "qlite profile: exit status 0 (got $rc)" test "$rc" = 0
check "qlite profile says the VM stopped and writes what it has" \
    grep -q "writing what was collected" "$plog"
check "the profile was written: stop_reason vm-stopped" \
    grep -q '"stop_reason": "vm-stopped"' "$out/summary.json"
check "the profile holds the guest's samples ($(json_num "$out/summary.json" samples))" \
    test "$(json_num "$out/summary.json" samples)" -gt 0
vm_dump_on_failure "$f0"
finish
