#!/bin/bash
# INTx: a guest booted with pci=nomsi has no MSI-X, so virtio-pci falls back
# to the pin interrupt. The DSDT's _PRT routes slot S's INTA to IOAPIC GSI
# 16 + S % 8, level-triggered (fasteoi): virtio-rng at 00:01.0 gets 17, the
# disk at 00:02.0 gets 18. Both devices must work on it (hwrng bytes; the
# data disk mounted, its manifest checked, a file written, read back after a
# remount) and the guest must power off cleanly.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-intx: qlite's PCI transport only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi
if [[ ! -f /guest/data.img ]]; then
    fail "no /guest/data.img (run-all.sh passes --guest-file data.img to the test host)"
    finish
fi

img=/tmp/intx-data.img
cp /guest/data.img "$img"
f0=$n_fail
QLITE_ARGS=(--rng --disk "path=$img")
gcmd='for d in 01 02; do echo IRQ-$d-$(cat /sys/bus/pci/devices/0000:00:$d.0/irq); done'
gcmd+='; dd if=/dev/hwrng of=/tmp/r bs=1024 count=64 2>/dev/null; echo RNG-BYTES-$(wc -c </tmp/r)'
gcmd+='; mount -t ext4 /dev/vda /mnt && cd /mnt && sha256sum -c MANIFEST.sha256 >/dev/null && echo DISK-MANIFEST-OK'
gcmd+=' && dd if=/dev/urandom of=/mnt/intx.bin bs=64k count=32 2>/dev/null'
gcmd+=' && sha256sum intx.bin >intx.sha256 && sync && cd / && umount /mnt'
gcmd+=' && echo 3 >/proc/sys/vm/drop_caches && mount -t ext4 /dev/vda /mnt && cd /mnt'
gcmd+=' && sha256sum -c intx.sha256 >/dev/null && echo DISK-READBACK-OK && cd / && umount /mnt'
gcmd+='; grep -e virtio -e MSI /proc/interrupts'
vm_run nomsi 2 256 "pci=nomsi qlite.cmd=\"$gcmd\""
QLITE_ARGS=()
out=$(vm_cmd_output)
# /proc/interrupts: " 17:   12   3   IO-APIC  17-fasteoi   virtio0"
irqs=$(grep -E 'virtio[0-9]' <<<"$out" || true)
nvirtio=$(grep -c . <<<"$irqs" || true)
echo "$irqs" | sed 's/^/     | /'
count=$(awk '{ for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i } END { print s + 0 }' <<<"$irqs")
check "rng at 00:01.0 on IRQ 17 (_PRT: GSI 16 + slot % 8)" grep -qx 'IRQ-01-17' <<<"$out"
check "disk at 00:02.0 on IRQ 18" grep -qx 'IRQ-02-18' <<<"$out"
no_msi() { ! grep -q PCI-MSI <<<"$out"; }
all_level() { ! grep -v 'IO-APIC.*fasteoi' <<<"$irqs" | grep -q .; }
check "no PCI-MSI interrupts at all" no_msi
check "both virtio devices have an interrupt line ($nvirtio)" test "$nvirtio" -ge 2
check "each is an IO-APIC level (fasteoi) line" all_level
check "interrupts were taken on them ($count)" test "$count" -gt 10
check "64 KiB read from /dev/hwrng" grep -qx 'RNG-BYTES-65536' <<<"$out"
check "guest: the data disk's manifest matches" vm_saw DISK-MANIFEST-OK
check "guest: 2 MiB written, synced, read back after remount" vm_saw DISK-READBACK-OK
check "guest poweroff -> exit 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

# The guest's file is in the image, from the host side.
f0=$n_fail
mkdir -p /mnt/check
if mount -o loop,ro -t ext4 "$img" /mnt/check; then
    check "host: the guest's file is in the image with its checksum" \
        sh -c 'cd /mnt/check && sha256sum -c -s intx.sha256'
    umount /mnt/check
else
    fail "host: loop-mount the image after power-off"
fi
rm -f "$img"
vm_dump_on_failure "$f0"
finish
