#!/bin/bash
# Bad input to `qlite run`: exit status 1, one clear message, no crash/hang.
# usage: test-errors.sh QLITE_BINARY
set -uo pipefail
qlite=$(realpath "$1")
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

# expect NAME EXPECTED_STATUS REGEX -- command...
expect() {
    local name=$1 want=$2 re=$3
    shift 4
    timeout 30 "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$?
    if [[ $rc -eq $want ]] && cat "$tmp/err" "$tmp/out" | grep -qE -e "$re"; then
        echo "PASS: $name"
        pass=$((pass + 1))
    else
        echo "FAIL: $name (status $rc, want $want; stderr: $(head -c 400 "$tmp/err"))"
        fail=$((fail + 1))
    fi
}

python3 "$here/mkbzimage.py" "$tmp/ok.bz"
python3 "$here/mkbzimage.py" "$tmp/trunc.bz" --syssize-extra 4096
python3 "$here/mkbzimage.py" "$tmp/old.bz" --version 0x0204
python3 "$here/mkbzimage.py" "$tmp/no64.bz" --no-64bit
python3 "$here/mkbzimage.py" "$tmp/huge.bz" --init-size $((200 << 20))
head -c 100000 /dev/urandom >"$tmp/garbage"
: >"$tmp/empty"
truncate -s 100M "$tmp/big.initrd"

expect "no arguments" 1 "Usage" -- "$qlite"
expect "unknown command" 1 "unknown command" -- "$qlite" frobnicate
expect "unknown flag" 1 "unknown option --frob" -- "$qlite" run --frob --kernel "$tmp/ok.bz"
expect "missing --kernel" 1 "--kernel is required" -- "$qlite" run --mem 64M
expect "flag without value" 1 "needs a value" -- "$qlite" run --kernel
expect "--mem 0" 1 "--mem must be greater than 0" -- "$qlite" run --kernel "$tmp/ok.bz" --mem 0
expect "--mem garbage" 1 "expected a size" -- "$qlite" run --kernel "$tmp/ok.bz" --mem 12X
expect "--mem above host" 1 "more than this host" -- "$qlite" run --kernel "$tmp/ok.bz" --mem 64T
expect "--cpus 0" 1 "--cpus must be at least 1" -- "$qlite" run --kernel "$tmp/ok.bz" --cpus 0
expect "--cpus too many" 1 "at most [0-9]+ vCPUs" -- "$qlite" run --kernel "$tmp/ok.bz" --cpus 100000
expect "--cpus garbage" 1 "expected a number" -- "$qlite" run --kernel "$tmp/ok.bz" --cpus two
expect "missing kernel" 1 "cannot read kernel .*No such file" -- "$qlite" run --kernel "$tmp/nope"
expect "missing initrd" 1 "cannot read initrd" -- "$qlite" run --kernel "$tmp/ok.bz" --initrd "$tmp/nope"
expect "--pmu bad mode" 1 "--pmu maybe: expected off, on or allow=" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --pmu maybe
expect "--pmu unknown event" 1 "unknown event 'frob'" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --pmu allow=cycles,frob
expect "--dirty-ring bad mode" 1 "--dirty-ring maybe: expected on, off or a number of entries" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --dirty-ring maybe
expect "--dirty-ring not a power of two" 1 "--dirty-ring 1000: entries must be a power of two from 256 to 65536" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --dirty-ring=1000
expect "--dirty-ring too small" 1 "--dirty-ring 64: entries must be a power of two" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --dirty-ring=64
expect "--dirty-ring empty" 1 "--dirty-ring : expected on, off" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --dirty-ring=
expect "--dirty-ring with --restore: parsed, then the checkpoint" 1 "cannot open checkpoint" -- \
    "$qlite" run --restore "$tmp" --dirty-ring=off
expect "profile: no --qmp" 1 "--qmp PATH is required" -- "$qlite" profile
expect "profile: --freq too high" 1 "above the limit of 10000 Hz" -- \
    "$qlite" profile --qmp x --freq 10001
expect "profile: --freq 0" 1 "at least 1 Hz" -- "$qlite" profile --qmp x --freq 0
# Checkpoints: bad options and bad checkpoint directories, before any VM exists.
expect "--restore with --kernel" 1 "--kernel cannot be combined with --restore" -- \
    "$qlite" run --restore "$tmp" --kernel "$tmp/ok.bz"
expect "--restore with --mem" 1 "--mem cannot be combined with --restore" -- \
    "$qlite" run --mem 64M --restore "$tmp"
expect "--restore-mode bad" 1 "--restore-mode sometimes: expected lazy or eager" -- \
    "$qlite" run --restore "$tmp" --restore-mode sometimes
expect "--restore-mode alone" 1 "--restore-mode needs --restore" -- \
    "$qlite" run --kernel "$tmp/ok.bz" --restore-mode eager
expect "--restore no checkpoint" 1 "cannot open checkpoint $tmp/state.qst" -- \
    "$qlite" run --restore "$tmp"
head -c 100 /dev/urandom >"$tmp/state.qst"
expect "--restore foreign file" 1 "not a qlite state stream" -- "$qlite" run --restore "$tmp"
rm -f "$tmp/state.qst"
expect "snapshot: no action" 1 "save or load" -- "$qlite" snapshot --qmp x
expect "snapshot: bad action" 1 "unknown action 'take'" -- "$qlite" snapshot take --qmp x d
expect "snapshot: no dir" 1 "no checkpoint directory" -- "$qlite" snapshot save --qmp x
expect "snapshot: no --qmp" 1 "--qmp PATH is required" -- "$qlite" snapshot save d
expect "snapshot: --mode on save" 1 "--mode is for load" -- \
    "$qlite" snapshot save --qmp x d --mode eager
expect "snapshot: nothing listening" 1 "cannot connect to" -- \
    "$qlite" snapshot save --qmp "$tmp/nobody.sock" "$tmp/ck"
expect "snapshot help" 0 "Usage: qlite snapshot save" -- "$qlite" snapshot --help
expect "migrate: no --qmp" 1 "--qmp PATH is required" -- "$qlite" migrate tcp:h:1
expect "migrate: no URI" 1 "no destination URI" -- "$qlite" migrate --qmp x
expect "migrate: bad URI" 1 "expected tcp:HOST:PORT, unix:PATH or fd:N" -- \
    "$qlite" migrate --qmp x exec:cat
expect "migrate: --postcopy=auto without --wait" 1 "--postcopy=auto needs --wait" -- \
    "$qlite" migrate --qmp x --postcopy=auto unix:/m
expect "migrate: nothing listening" 1 "cannot connect to" -- \
    "$qlite" migrate --qmp "$tmp/nobody.sock" unix:/m --wait
expect "migrate help" 0 "Usage: qlite migrate" -- "$qlite" migrate --help
expect "--incoming with --mem" 1 "--mem cannot be combined with --incoming" -- \
    "$qlite" run --incoming defer --mem 64M
expect "--incoming bad URI" 1 "expected tcp:HOST:PORT" -- "$qlite" run --incoming later
expect "--incoming fd not a socket" 1 "fd:0 is not a socket" -- "$qlite" run --incoming fd:0
touch "$tmp/taken-mig.sock"
expect "--incoming unix path exists" 1 "already exists" -- \
    "$qlite" run --incoming "unix:$tmp/taken-mig.sock"
expect "--incoming unix path not writable" 1 "cannot listen on unix:/proc/qlite-mig.sock" -- \
    "$qlite" run --incoming unix:/proc/qlite-mig.sock
# A destination waiting for its VM: QMP answers, refuses what needs a VM, quits.
"$qlite" run --incoming defer --qmp "unix:$tmp/inq.sock" --console none </dev/null \
    >"$tmp/inq.out" 2>&1 &
inq=$!
for _ in $(seq 100); do [[ -S "$tmp/inq.sock" ]] && break; sleep 0.05; done
expect "--incoming defer: inmigrate" 0 "inmigrate" -- "$qlite" status --qmp "$tmp/inq.sock"
expect "--incoming defer: migrate refused" 1 "arriving by migration" -- \
    "$qlite" qmp --qmp "$tmp/inq.sock" migrate '{"uri": "unix:/x"}'
expect "--incoming defer: bad URI" 1 "expected tcp:HOST:PORT" -- \
    "$qlite" qmp --qmp "$tmp/inq.sock" migrate-incoming '{"uri": "udp:x"}'
expect "--incoming defer: listening" 0 '"status": ?"setup"' -- \
    sh -c "'$qlite' qmp --qmp '$tmp/inq.sock' migrate-incoming '{\"uri\": \"unix:$tmp/inq-mig.sock\"}' &&
           '$qlite' qmp --qmp '$tmp/inq.sock' query-migrate"
expect "--incoming defer: quit" 0 "" -- "$qlite" quit --qmp "$tmp/inq.sock"
wait "$inq"
inq_rc=$?
if [[ $inq_rc -eq 0 && ! -e "$tmp/inq-mig.sock" ]]; then
    echo "PASS: --incoming defer: exits 0 on quit, socket removed"
    pass=$((pass + 1))
else
    echo "FAIL: --incoming defer: exit $inq_rc, $(cat "$tmp/inq.out")"
    fail=$((fail + 1))
fi
expect "help" 0 "Usage: qlite run" -- "$qlite" run --help
expect "version" 0 "^qlite [0-9]" -- "$qlite" --version

# The rest need /dev/kvm to get as far as loading the kernel.
if [[ -w /dev/kvm ]]; then
    expect "garbage kernel" 1 "not a Linux bzImage" -- "$qlite" run --kernel "$tmp/garbage" --mem 64M
    expect "empty kernel" 1 "not a Linux kernel image" -- "$qlite" run --kernel "$tmp/empty" --mem 64M
    expect "truncated kernel" 1 "truncated" -- "$qlite" run --kernel "$tmp/trunc.bz" --mem 64M
    expect "old boot protocol" 1 "too old" -- "$qlite" run --kernel "$tmp/old.bz" --mem 64M
    expect "no 64-bit entry" 1 "no 64-bit entry" -- "$qlite" run --kernel "$tmp/no64.bz" --mem 64M
    expect "kernel needs more RAM" 1 "too small for this kernel" -- \
        "$qlite" run --kernel "$tmp/huge.bz" --mem 64M
    expect "initrd too large" 1 "initrd .* does not fit in --mem 64M" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --initrd "$tmp/big.initrd" --mem 64M
    expect "--cmdline too long" 1 "this kernel accepts at most 2046" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --cmdline "$(head -c 3000 /dev/zero | tr '\0' x)"
    expect "--qmp path not writable" 1 "cannot create the QMP socket /proc/qlite.sock" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --qmp unix:/proc/qlite.sock
    touch "$tmp/taken.sock"
    expect "--qmp path exists" 1 "already exists" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --qmp "unix:$tmp/taken.sock"
    expect "--qmp bad spec" 1 "expected unix:PATH or fd:N" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --qmp tcp:1234
    expect "--qmp fd not a socket" 1 "not a listening socket" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --qmp fd:0
    # No host PMU here (kvm-pvm, TCG): --pmu on must say so, not run without one.
    if [[ ! -e /sys/bus/event_source/devices/cpu && ! -e /sys/bus/event_source/devices/cpu_core ]]; then
        expect "--pmu on without a host PMU" 1 "--pmu on: this host's KVM offers guests no PMU" -- \
            "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --pmu on
        expect "--pmu allow= without a host PMU" 1 "--pmu allow: this host's KVM offers guests no PMU" -- \
            "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --pmu allow=instructions
    fi
    expect "client: no --qmp" 1 "--qmp PATH is required" -- "$qlite" status
    expect "client: nothing listening" 1 "cannot connect to" -- \
        "$qlite" status --qmp "$tmp/nobody.sock"
    expect "--disk missing file" 1 "$tmp/nodisk" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk "path=$tmp/nodisk"
    expect "--disk is a directory" 1 "is a directory" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk "path=$tmp"
    expect "--disk empty file" 1 "empty" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk "path=$tmp/empty"
    expect "--disk without path" 1 "needs path=FILE" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk readonly=on
    expect "--disk unknown key" 1 "unknown option 'cache'" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk "path=$tmp/ok.bz,cache=none"
    expect "--disk bad on/off" 1 "expected on or off" -- \
        "$qlite" run --kernel "$tmp/ok.bz" --mem 64M --disk "path=$tmp/ok.bz,readonly=maybe"
    # Without /dev/kvm: a private mount namespace with an empty /dev.
    if unshare -m true 2>/dev/null; then
        expect "no /dev/kvm" 1 "/dev/kvm does not exist" -- \
            unshare -m sh -c "mount -t tmpfs none /dev && exec $qlite run --kernel $tmp/ok.bz --mem 64M"
    fi
    # No permission: nobody (no kvm group) when /dev/kvm is closed to others.
    if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null &&
        (((8#$(stat -c %a /dev/kvm) & 6) == 0)); then
        chmod 755 "$tmp" && chmod 644 "$tmp/ok.bz"
        expect "no permission on /dev/kvm" 1 "no permission to open /dev/kvm" -- \
            setpriv --reuid=65534 --regid=65534 --clear-groups "$qlite" run --kernel "$tmp/ok.bz" --mem 64M
    fi
fi
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
