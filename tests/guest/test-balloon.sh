#!/bin/bash
# virtio-balloon: inflating the balloon gives guest memory back to the host
# (the VMM's RSS falls), deflating returns it; with free page reporting, memory
# the guest frees goes back to the host without any inflate.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-balloon: qlite options only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi

rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
qlite_pid() { # the qlite process (timeout may be its parent)
    local d
    for d in /proc/[0-9]*; do
        if [[ $(cat "$d/comm" 2>/dev/null) == qlite ]] &&
            tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- "--name $1"; then
            echo "${d#/proc/}"; return
        fi
    done
}
wait_log() { # pattern seconds
    local i
    for ((i = 0; i < $2 * 2; i++)); do
        grep -q "$1" "$VM_LOG" 2>/dev/null && return 0
        sleep 0.5
    done
    return 1
}
start_vm() { # name balloon-option cmd
    sock=/tmp/$1.sock
    VM_LOG=/tmp/$test_name-$1.log
    rm -f "$sock"
    echo "---- $test_name: $1: --mem 512M $2"
    timeout -k 5 "$VM_TIMEOUT" "$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" \
        --mem 512M --name "$1" --qmp "unix:$sock" "$2" \
        --cmdline "$GUEST_BASE_CMDLINE qlite.cmd=\"$3\"" </dev/null >"$VM_LOG" 2>&1 &
    vm=$!
    for _ in $(seq 1 100); do [[ -S $sock ]] && break; sleep 0.1; done
    pid=$(qlite_pid "$1")
}
actual_mb() {
    "$QLITE" qmp --qmp "$sock" query-balloon | grep -o '"actual":[0-9]*' | grep -o '[0-9]*$' |
        awk '{ print int($1 / 1048576) }'
}

# 1. Inflate / deflate, reporting off so that only the balloon frees memory.
f0=$n_fail
start_vm inflate --balloon=reporting=off \
    "dd if=/dev/zero of=/tmp/fill bs=1M count=300 2>/dev/null; rm /tmp/fill; echo FREED; sleep 120"
check "guest touched and freed 300M" wait_log FREED 120
sleep 2
rss1=$(rss_kb "$pid")
check "RSS holds the freed memory before inflating (${rss1} kB)" test "$rss1" -gt 300000
"$QLITE" qmp --qmp "$sock" balloon '{"value": 134217728}' >/dev/null
for _ in $(seq 1 60); do [[ $(actual_mb) -le 136 ]] && break; sleep 1; done
act=$(actual_mb)
check "query-balloon: guest down to ~128M (actual ${act}M)" test "$act" -le 136
rss2=$(rss_kb "$pid")
check "inflate lowered the VMM's RSS: ${rss1} -> ${rss2} kB" test "$rss2" -lt $((rss1 - 150000))
"$QLITE" qmp --qmp "$sock" balloon '{"value": 536870912}' >/dev/null
for _ in $(seq 1 60); do [[ $(actual_mb) -ge 510 ]] && break; sleep 1; done
check "deflate: guest back to 512M (actual $(actual_mb)M)" test "$(actual_mb)" -ge 510
st=$("$QLITE" qmp --qmp "$sock" query-balloon)
check "guest memory stats arrive" grep -q '"stat-total-memory"' <<<"$st"
"$QLITE" quit --qmp "$sock" >/dev/null
wait "$vm" || true
vm_dump_on_failure "$f0"

# 2. Free page reporting: freed guest memory leaves the VMM's RSS by itself.
f0=$n_fail
start_vm report --balloon \
    "dd if=/dev/zero of=/tmp/fill bs=1M count=300 2>/dev/null; echo FILLED; sleep 4; rm /tmp/fill; echo FREED; sleep 120"
check "guest filled 300M" wait_log FILLED 120
rss1=$(rss_kb "$pid")
check "RSS with 300M in use (${rss1} kB)" test "$rss1" -gt 300000
wait_log FREED 30 || true
low=$rss1
for _ in $(seq 1 40); do
    low=$(rss_kb "$pid")
    [[ $low -lt $((rss1 - 150000)) ]] && break
    sleep 1
done
check "free page reporting returned freed memory: ${rss1} -> ${low} kB" \
    test "$low" -lt $((rss1 - 150000))
"$QLITE" quit --qmp "$sock" >/dev/null
wait "$vm" || true
vm_dump_on_failure "$f0"
finish
