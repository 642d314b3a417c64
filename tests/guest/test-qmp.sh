#!/bin/bash
# The control plane against a Linux guest: qlite run --qmp, then the qlite
# client verbs. stop/cont change the run state, query-cpus-fast reports the
# real vCPU thread ids, and system_powerdown (ACPI power button) makes the
# guest shut down cleanly: SHUTDOWN event, exit status 0.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-qmp: qlite's control socket only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

sock=/tmp/test-qmp.sock
VM_LOG=/tmp/$test_name.log
events=/tmp/$test_name-events.log
rm -f "$sock"
echo "---- $test_name: qlite run --qmp unix:$sock, 2 vCPUs"
timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
    --mem 256M --cpus 2 --qmp "unix:$sock,server=on,wait=off" --name guest-qmp \
    --cmdline "$GUEST_BASE_CMDLINE qlite.cmd=\"sleep 600\"" </dev/null >"$VM_LOG" 2>&1 &
vm=$!
for _ in $(seq 1 200); do [[ -S $sock ]] && break; sleep 0.1; done
"$QLITE" events --qmp "$sock" >"$events" 2>&1 &
evpid=$!
for _ in $(seq 1 "$VM_TIMEOUT"); do
    grep -q QLITE-CMD-BEGIN "$VM_LOG" 2>/dev/null && break
    sleep 1
done
# timeout(1) may run qlite as its child: find the real process.
pid=
for d in /proc/[0-9]*; do
    if [[ $(cat "$d/comm" 2>/dev/null) == qlite ]] &&
        tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- "--name guest-qmp"; then
        pid=${d#/proc/}
    fi
done

check "guest booted to its command" grep -q QLITE-CMD-BEGIN "$VM_LOG"
check "qlite status: running" test "$("$QLITE" status --qmp "$sock")" = running

cpus=$("$QLITE" qmp --qmp "$sock" query-cpus-fast)
for i in 0 1; do
    tid=$(grep -o "\"cpu-index\":$i,[^{}]*\"thread-id\":[0-9]*" <<<"$cpus" | grep -o '[0-9]*$' || true)
    comm=$(cat "/proc/$pid/task/${tid:-0}/comm" 2>/dev/null || echo none)
    check "query-cpus-fast: vCPU $i thread $tid is /proc/$pid/task/$tid comm=vcpu$i (got $comm)" \
        test "$comm" = "vcpu$i"
done

check "qlite pause" "$QLITE" pause --qmp "$sock"
check "qlite status: paused" test "$("$QLITE" status --qmp "$sock")" = paused
sleep 1
check "qlite resume" "$QLITE" resume --qmp "$sock"
check "qlite status: running again" test "$("$QLITE" status --qmp "$sock")" = running

check "qlite powerdown" "$QLITE" powerdown --qmp "$sock"
set +e
wait "$vm"
VM_RC=$?
wait "$evpid"
set -e
sed -i 's/\r$//' "$VM_LOG"
check "the guest saw the power button and shut down" grep -q QLITE-GUEST-POWERDOWN "$VM_LOG"
check "qlite exit status 0 after the guest's shutdown (got $VM_RC)" test "$VM_RC" = 0
check "events: STOP" grep -q '"event":"STOP"' "$events"
check "events: RESUME" grep -q '"event":"RESUME"' "$events"
check "events: POWERDOWN" grep -q '"event":"POWERDOWN"' "$events"
check "events: SHUTDOWN from the guest" \
    grep -q '"data":{"guest":true,"reason":"guest-shutdown"},"event":"SHUTDOWN"\|"event":"SHUTDOWN","data":{"guest":true,"reason":"guest-shutdown"}' "$events"
check "the socket is removed" test ! -e "$sock"
if [[ $n_fail -gt 0 ]]; then
    echo "     events:"; sed 's/^/     | /' "$events"
    vm_dump_on_failure 0
fi
finish
