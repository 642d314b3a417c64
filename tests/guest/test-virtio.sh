#!/bin/bash
# virtio over PCI in a Linux guest: the devices enumerate on the PCI bus the
# DSDT describes, bind to virtio-pci, use MSI-X, and do their job.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-virtio: qlite device options only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

f0=$n_fail
QLITE_ARGS=(--rng)
vm_run rng 2 256 'qlite.cmd="cat /sys/bus/pci/devices/0000:00:01.0/uevent; cat /sys/class/misc/hw_random/rng_current; dd if=/dev/hwrng of=/tmp/r bs=1024 count=64 2>/dev/null; wc -c </tmp/r; gzip -c /tmp/r | wc -c; grep -c PCI-MSI /proc/interrupts"'
QLITE_ARGS=()
out=$(vm_cmd_output)
check "virtio-rng enumerated at 00:01.0 as 1af4:1044" grep -q 'PCI_ID=1AF4:1044' <<<"$out"
check "bound to the virtio-pci driver" grep -q 'DRIVER=virtio-pci' <<<"$out"
check "the kernel's hwrng is virtio_rng" grep -q '^virtio_rng' <<<"$out"
lines=($(grep -E '^ *[0-9]+$' <<<"$out" || true))
check "64 KiB read from /dev/hwrng (got ${lines[0]:-none})" test "${lines[0]:-0}" = 65536
check "the bytes are random: gzip cannot shrink them (${lines[1]:-0} bytes)" \
    test "${lines[1]:-0}" -gt 65000
check "interrupts arrive as MSI-X (${lines[2]:-0} PCI-MSI lines)" test "${lines[2]:-0}" -ge 2
check "guest poweroff -> exit 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"
finish
