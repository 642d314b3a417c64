#!/bin/bash
# The default guest boots to its marker with 1 and 2 vCPUs, sees that many
# CPUs, and its poweroff makes the VMM exit 0.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

for cpus in 1 2; do
    f0=$n_fail
    vm_run "smp$cpus" "$cpus" 256 'qlite.cmd=nproc'
    check "$cpus vCPU: guest printed QLITE-GUEST-READY" vm_saw QLITE-GUEST-READY
    out=$(vm_cmd_output)
    check "$cpus vCPU: guest nproc is $cpus (got '${out//$'\n'/ }')" test "$out" = "$cpus"
    check "$cpus vCPU: command finished with rc=0" test "$(vm_cmd_rc)" = 0
    check "$cpus vCPU: guest poweroff -> VMM exit status 0 (got $VM_RC)" test "$VM_RC" = 0
    vm_dump_on_failure "$f0"
done
finish
