# shellcheck shell=bash
# Helpers for guest tests (sourced; they run inside the KVM test host).
# The VMM is qlite by default; QLITE_GUEST_VMM=qemu boots the same guest with
# QEMU microvm instead, to validate tests and image without qlite.

: "${QLITE:=/usr/bin/qlite}" "${GUEST_KERNEL:=/guest/vmlinuz}" "${GUEST_INITRD:=/guest/initrd.img}"
QLITE_GUEST_VMM=${QLITE_GUEST_VMM:-qlite}
# A hung guest or VMM must fail the check, not stall the whole test host.
VM_TIMEOUT=${VM_TIMEOUT:-180}
GUEST_BASE_CMDLINE="console=ttyS0 quiet panic=-1"

test_name=${0##*/}; test_name=${test_name%.sh}
n_pass=0
n_fail=0
VM_LOG=
VM_RC=
VM_SECS=
QLITE_ARGS=()
QEMU_ARGS=()

pass() { echo "PASS: $test_name: $*"; n_pass=$((n_pass + 1)); }
fail() { echo "FAIL: $test_name: $*"; n_fail=$((n_fail + 1)); }

# check DESCRIPTION COMMAND...: PASS/FAIL line from the command's status.
check() {
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

# vm_run NAME CPUS MEM_MB EXTRA_CMDLINE: boot the default guest, console to
# $VM_LOG; sets VM_RC (VMM exit status) and VM_SECS (wall time).
# QLITE_ARGS (array) adds qlite options for one call, QEMU_ARGS QEMU's
# (-M microvm: virtio devices are virtio-*-device, on virtio-mmio).
vm_run() {
    local name=$1 cpus=$2 mem=$3 extra=$4 cmdline t0 t1
    VM_LOG=/tmp/$test_name-$name.log
    cmdline="$GUEST_BASE_CMDLINE $extra"
    echo "---- $test_name: $name: $QLITE_GUEST_VMM, $cpus vCPU, ${mem}M, cmdline: $cmdline"
    t0=$(cut -d' ' -f1 /proc/uptime)
    set +e
    case $QLITE_GUEST_VMM in
    qlite)
        if [[ ! -x $QLITE ]]; then
            echo "no qlite binary at $QLITE" >"$VM_LOG"; VM_RC=127
        else
            timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$GUEST_KERNEL" \
                --initrd "$GUEST_INITRD" --cmdline "$cmdline" --mem "${mem}M" \
                --cpus "$cpus" "${QLITE_ARGS[@]}" </dev/null >"$VM_LOG" 2>&1
            VM_RC=$?
        fi ;;
    qemu)
        timeout -k 5 "$VM_TIMEOUT" qemu-system-x86_64 -M microvm -enable-kvm -cpu host \
            -m "$mem" -smp "$cpus" -nodefaults -no-user-config -display none \
            -serial stdio -no-reboot -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" \
            -append "$cmdline" "${QEMU_ARGS[@]}" </dev/null >"$VM_LOG" 2>&1
        VM_RC=$? ;;
    *) echo "unknown QLITE_GUEST_VMM=$QLITE_GUEST_VMM" >"$VM_LOG"; VM_RC=127 ;;
    esac
    set -e
    t1=$(cut -d' ' -f1 /proc/uptime)
    VM_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    # The serial console emits CRLF.
    sed -i 's/\r$//' "$VM_LOG"
    echo "     exit status $VM_RC after ${VM_SECS}s"
}

# Output of qlite.cmd: the lines between QLITE-CMD-BEGIN and QLITE-CMD-END,
# without kernel messages.
vm_cmd_output() {
    awk '/^QLITE-CMD-END/ { on = 0 } on && !/^\[ *[0-9]+\.[0-9]+\]/ { print } /^QLITE-CMD-BEGIN$/ { on = 1 }' "$VM_LOG"
}
vm_cmd_rc() { sed -n 's/^QLITE-CMD-END rc=\([0-9]*\)$/\1/p' "$VM_LOG" | tail -n1; }
vm_saw() { grep -qx -- "$1" "$VM_LOG"; }

# vmm_supports OPTION: true for QEMU, and for qlite if `qlite run` has
# OPTION (--disk, --net, ...). Tests of devices not yet in qlite skip.
vmm_supports() {
    [[ $QLITE_GUEST_VMM != qlite ]] || "$QLITE" run --help 2>&1 | grep -q -- "$1"
}

# Console of the last VM, shown after failed checks so the log explains them.
vm_dump_on_failure() {
    if [[ $n_fail -gt ${1:-0} ]]; then
        echo "     console of $VM_LOG:"
        sed 's/^/     | /' "$VM_LOG"
    fi
}

finish() {
    echo "$test_name: $n_pass passed, $n_fail failed"
    [[ $n_fail -eq 0 ]]
}
