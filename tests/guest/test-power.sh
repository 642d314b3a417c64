#!/bin/bash
# Memory backends and the guest's reboot: --mem-backend memfd boots like the
# default; a guest reboot restarts the guest (a second boot), or ends qlite
# with status 0 under --no-reboot.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-power: qlite options only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

f0=$n_fail
QLITE_ARGS=(--mem-backend memfd)
vm_run memfd 2 256 'qlite.cmd=nproc'
QLITE_ARGS=()
check "memfd backend: guest printed QLITE-GUEST-READY" vm_saw QLITE-GUEST-READY
check "memfd backend: nproc is 2" test "$(vm_cmd_output)" = 2
check "memfd backend: exit status 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

f0=$n_fail
QLITE_ARGS=(--no-reboot)
vm_run noreboot 1 256 'qlite.cmd="reboot -f"'
QLITE_ARGS=()
check "--no-reboot: guest booted" vm_saw QLITE-GUEST-READY
check "--no-reboot: guest reboot ends qlite with status 0 (got $VM_RC)" test "$VM_RC" = 0
check "--no-reboot: qlite says why it exited" grep -q "guest reset; exiting" "$VM_LOG"
vm_dump_on_failure "$f0"

# Default: the reboot builds a fresh VM and the guest boots again. Stop it
# with SIGTERM after the second boot (a clean stop: status 0).
f0=$n_fail
VM_LOG=/tmp/$test_name-reboot.log
echo "---- $test_name: reboot: qlite restarts the guest"
"$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --mem 256M \
    --cmdline "$GUEST_BASE_CMDLINE qlite.cmd=\"reboot -f\"" </dev/null >"$VM_LOG" 2>&1 &
pid=$!
boots=0
for _ in $(seq 1 "$VM_TIMEOUT"); do
    boots=$(grep -c QLITE-GUEST-READY "$VM_LOG" || true)
    [[ $boots -ge 2 ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
done
kill -TERM "$pid" 2>/dev/null || true
set +e
wait "$pid"
VM_RC=$?
set -e
sed -i 's/\r$//' "$VM_LOG"
check "reboot: the guest booted a second time (boots: $boots)" test "$boots" -ge 2
check "reboot: SIGTERM stops qlite with status 0 (got $VM_RC)" test "$VM_RC" = 0
check "reboot: qlite reports the signal" grep -q "terminating on signal 15" "$VM_LOG"
vm_dump_on_failure "$f0"
# A kernel whose compressed payload is corrupt behind a valid header: the
# guest's decompressor fails (or the result crashes); either way qlite must
# end with status 2 and a diagnostic, not hang.
f0=$n_fail
bad=/tmp/vmlinuz-corrupt
cp "$GUEST_KERNEL" "$bad"
dd if=/dev/urandom of="$bad" bs=4096 seek=512 count=64 conv=notrunc 2>/dev/null
VM_LOG=/tmp/$test_name-corrupt.log
echo "---- $test_name: corrupt kernel payload"
set +e
timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$bad" --initrd "$GUEST_INITRD" --mem 256M \
    --cmdline "$GUEST_BASE_CMDLINE" </dev/null >"$VM_LOG" 2>&1
VM_RC=$?
set -e
check "corrupt kernel: qlite ends with status 2 (got $VM_RC)" test "$VM_RC" = 2
check "corrupt kernel: a diagnostic says why" \
    grep -qE "stopped for good|triple-faulted|internal error|crashed" "$VM_LOG"
vm_dump_on_failure "$f0"
finish
