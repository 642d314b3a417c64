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

# ---- qlite in the background, driven over QMP (test-checkpoint.sh) --------
# vm_boot_args CPUS MEM_MB EXTRA_CMDLINE: VM_BOOT_ARGS, the options vm_run boots with.
# shellcheck disable=SC2034 # VM_BOOT_ARGS is the result
vm_boot_args() {
    VM_BOOT_ARGS=(--kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --mem "${2}M"
        --cpus "$1" --cmdline "$GUEST_BASE_CMDLINE $3")
}

# vm_start NAME QLITE_RUN_ARGS...: `qlite run --qmp VM_SOCK ARGS...` in the
# background under timeout. The console (stdout) goes to $VM_LOG and qlite's
# own messages (stderr) to $VM_LOG.err, so consoles of a VM and of its
# restored self can be joined. Sets VM_PID (a subshell that records qlite's
# exit status, so that bash prints no "Killed" line) and VM_SOCK; waits for
# the socket and fails if qlite exits first (vm_wait_exit gives the status).
vm_start() {
    local name=$1 i
    shift
    VM_LOG=/tmp/$test_name-$name.log
    VM_SOCK=/tmp/$test_name-$name.sock
    VM_RC=
    rm -f "$VM_SOCK" "$VM_LOG.rc"
    echo "---- $test_name: $name: qlite run $*"
    (
        timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --qmp "unix:$VM_SOCK,server=on,wait=off" "$@" \
            </dev/null >"$VM_LOG" 2>"$VM_LOG.err"
        echo $? >"$VM_LOG.rc"
    ) 2>/dev/null & # nor a "Killed" line from the subshell
    VM_PID=$!
    for ((i = 0; i < 300; i++)); do
        [[ -S $VM_SOCK ]] && return 0
        kill -0 "$VM_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# vm_wait_log ERE SECONDS: true once the console of the background VM has a
# line matching ERE; false on timeout or if qlite has exited without one.
vm_wait_log() {
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        grep -qaE -- "$1" "$VM_LOG" 2>/dev/null && return 0
        kill -0 "$VM_PID" 2>/dev/null || { grep -qaE -- "$1" "$VM_LOG"; return; }
        sleep 0.2
    done
    return 1
}

# The qlite process of the background VM: the subshell's child, or its
# grandchild under a timeout(1) that forks (busybox's execs qlite).
vm_qlite_pid() {
    local p=$VM_PID c i
    for ((i = 0; i < 3; i++)); do
        c=$(cat /proc/"$p"/task/*/children 2>/dev/null | awk '{ print $1; exit }')
        [[ -n $c ]] || return 0
        p=$c
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == timeout ]] || break
    done
    echo "$p"
}

# vm_wait_exit [SECONDS]: wait for the background VM (killing it after
# SECONDS if given, which makes VM_RC 137); sets VM_RC, strips the console's CRs.
vm_wait_exit() {
    local i
    if [[ -n ${1:-} ]]; then
        for ((i = 0; i < $1 * 5; i++)); do
            kill -0 "$VM_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$VM_PID" 2>/dev/null && kill -KILL "$(vm_qlite_pid)" 2>/dev/null
    fi
    wait "$VM_PID" || true
    VM_RC=$(cat "$VM_LOG.rc" 2>/dev/null || echo none)
    sed -i 's/\r$//' "$VM_LOG"
    echo "     exit status $VM_RC"
}

# vm_kill: SIGKILL the background qlite (no clean-up of any kind), then reap it.
vm_kill() {
    local p
    p=$(vm_qlite_pid)
    [[ -n $p ]] && kill -KILL "$p" 2>/dev/null
    vm_wait_exit 30
}
