#!/bin/bash
# A command passed on the kernel command line (qlite.cmd=...) runs in the guest;
# its output and exit status reach the console.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

kver=$(cat /guest/VERSION 2>/dev/null || echo unknown)

# Quoted value with spaces, semicolons, a pipe and a non-zero exit status.
f0=$n_fail
vm_run quoted 1 256 "qlite.cmd=\"echo 'hello  qlite'; uname -r; echo a b c | wc -w; grep MemTotal /proc/meminfo; exit 3\""
out=$(vm_cmd_output)
check "marker printed" vm_saw QLITE-GUEST-READY
check "command began" vm_saw QLITE-CMD-BEGIN
check "echo output with inner spaces" grep -qx 'hello  qlite' <<<"$out"
check "guest kernel is $kver" grep -qx "$kver" <<<"$out"
check "pipeline ran in guest (wc -w = 3)" grep -qx 3 <<<"$out"
memkb=$(awk '/^MemTotal:/ { print $2 }' <<<"$out")
check "guest MemTotal ${memkb:-?} kB is within (200M, 256M] for --mem 256M" \
    test "${memkb:-0}" -gt 204800 -a "${memkb:-0}" -le 262144
check "command exit status 3 reported (QLITE-CMD-END rc=3)" test "$(vm_cmd_rc)" = 3
check "VMM exit status 0 after guest poweroff (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

# Unquoted single-word form.
f0=$n_fail
vm_run unquoted 1 256 "qlite.cmd=uname"
check "unquoted qlite.cmd=uname printed Linux" test "$(vm_cmd_output)" = Linux
check "VMM exit status 0 (got $VM_RC)" test "$VM_RC" = 0
vm_dump_on_failure "$f0"

# The init loaded the image's virtio modules (independent of the VMM's devices).
f0=$n_fail
vm_run modules 1 256 "qlite.cmd=\"lsmod | awk '{ print \$1 }'\""
out=$(vm_cmd_output)
for m in virtio_pci virtio_blk virtio_net virtio_console; do
    check "init loaded module $m" grep -qx "$m" <<<"$out"
done
vm_dump_on_failure "$f0"
finish
