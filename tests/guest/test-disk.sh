#!/bin/bash
# The default data disk (guest-images/data.sh) on virtio-blk: the guest
# mounts it, checks every file against MANIFEST.sha256, writes a file with
# its checksum, syncs and remounts to read it back, and powers off; the
# test host then checks the image itself (loop mount): the manifest and the
# guest's file. A read-only disk mounts and checks, refuses writes, and the
# image stays byte-identical.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ ! -f /guest/data.img ]]; then
    fail "no /guest/data.img (run-all.sh passes --guest-file data.img to the test host)"
    finish
fi

img=/tmp/data.img
cp /guest/data.img "$img"
disk_args() { # [readonly]
    local ro=${1:-}
    QLITE_ARGS=(--disk "path=$img${ro:+,readonly=on}")
    QEMU_ARGS=(-drive "file=$img,if=none,id=d0,format=raw${ro:+,readonly=on}"
        -device "virtio-blk-device,drive=d0")
}

# Read, write, sync, drop caches, remount, read back.
f0=$n_fail
disk_args
gcmd='mount -t ext4 /dev/vda /mnt && cd /mnt && sha256sum -c MANIFEST.sha256 && echo DISK-MANIFEST-OK'
gcmd+=' && dd if=/dev/urandom of=/mnt/guest.bin bs=64k count=32 2>/dev/null'
gcmd+=' && sha256sum guest.bin >guest.sha256 && sync && cd / && umount /mnt'
gcmd+=' && echo 3 >/proc/sys/vm/drop_caches && mount -t ext4 /dev/vda /mnt && cd /mnt'
gcmd+=' && sha256sum -c guest.sha256 && echo DISK-READBACK-OK && cd / && umount /mnt'
vm_run rw 1 256 "qlite.cmd=\"$gcmd\""
check "guest: every file of the data disk matches MANIFEST.sha256" vm_saw DISK-MANIFEST-OK
check "guest: 2 MiB written, synced, read back after remount" vm_saw DISK-READBACK-OK
check "guest command exit status 0 (got $(vm_cmd_rc))" test "$(vm_cmd_rc)" = 0
check "VMM exit status 0 after poweroff (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

# After power-off, from the host side.
f0=$n_fail
mkdir -p /mnt/check
if mount -o loop,ro -t ext4 "$img" /mnt/check; then
    check "host: the manifest still matches" sh -c 'cd /mnt/check && sha256sum -c -s MANIFEST.sha256'
    check "host: the guest's file is in the image with its checksum" \
        sh -c 'cd /mnt/check && sha256sum -c -s guest.sha256'
    umount /mnt/check
else
    fail "host: loop-mount the image after power-off"
fi
vm_dump_on_failure "$f0"

# Read-only: mounts and reads, refuses writes; the image is unchanged.
f0=$n_fail
disk_args ro
before=$(sha256sum "$img" | cut -d' ' -f1)
# shellcheck disable=SC2016 # expanded in the guest
gcmd='echo DISK-RO=$(cat /sys/block/vda/ro) && mount -o ro -t ext4 /dev/vda /mnt'
gcmd+=' && cd /mnt && sha256sum -c -s MANIFEST.sha256 && echo DISK-RO-MANIFEST-OK && cd /'
gcmd+=' && umount /mnt; dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct 2>/dev/null'
gcmd+=' || echo DISK-RO-WRITE-REFUSED'
vm_run ro 1 256 "qlite.cmd=\"$gcmd\""
check "guest sees the disk read-only (/sys/block/vda/ro = 1)" vm_saw DISK-RO=1
check "guest: manifest matches on the read-only disk" vm_saw DISK-RO-MANIFEST-OK
check "guest: a write to the read-only disk fails" vm_saw DISK-RO-WRITE-REFUSED
check "the image is byte-identical after the read-only boot" \
    test "$(sha256sum "$img" | cut -d' ' -f1)" = "$before"
check "VMM exit status 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

finish
