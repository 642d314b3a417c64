#!/bin/bash
# virtio-console as the console (--console virtio, guest console=hvc0): the
# guest's output reaches qlite's stdout and stdin reaches the guest.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-console: qlite options only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

VM_LOG=/tmp/$test_name.log
echo "---- $test_name: --console virtio, console=hvc0, a line on stdin"
# Input typed before the guest opens its console is lost in the guest's tty
# layer (as on a serial line), so the line goes in once the command runs.
fifo=/tmp/$test_name.fifo
rm -f "$fifo"
mkfifo "$fifo"
timeout -k 5 "$VM_TIMEOUT" "$QLITE" run \
    --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --mem 256M --console virtio \
    --cmdline 'console=hvc0 quiet panic=-1 qlite.cmd="readlink /proc/self/fd/0; cat /proc/consoles; read -t 60 l; echo got:$l"' \
    <"$fifo" >"$VM_LOG" 2>&1 &
vm=$!
exec 3>"$fifo"
for _ in $(seq 1 "$VM_TIMEOUT"); do grep -q QLITE-CMD-BEGIN "$VM_LOG" && break; sleep 1; done
sleep 1
echo ping-from-host >&3
exec 3>&-
set +e
wait "$vm"
VM_RC=$?
set -e
sed -i 's/\r$//' "$VM_LOG"
check "marker on hvc0 reached qlite's stdout" vm_saw QLITE-GUEST-READY
check "the guest's stdin is /dev/hvc0" grep -qx /dev/hvc0 "$VM_LOG"
check "host input reached the guest over virtio-console" grep -qx got:ping-from-host "$VM_LOG"
check "the kernel console is hvc0" grep -q "^hvc0" "$VM_LOG"
check "exit status 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure 0
finish
