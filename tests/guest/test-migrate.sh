#!/bin/bash
# Live migration of a Linux guest between two network namespaces (docs/
# migration.md), mig-src 10.77.0.1 and mig-dst 10.77.0.2 on a veth pair
# (lib/mig.sh): the source `qlite run` in one, the destination `qlite run
# --incoming tcp:10.77.0.2:PORT` in the other, `qlite migrate` from the source.
# The guest runs qlite-memwriter (tests/guest/memwriter.c: rewrites a buffer
# pass after pass, verifying every word, one checksum line per pass) while a
# loop appends numbered lines to a file on its data disk through an fd held
# open throughout; the disk image is shared (the same path on both sides).
# 1. pre-copy, a memwriter that sleeps between passes (converges);
# 2. post-copy (--postcopy), one that never sleeps (pre-copy would not converge);
# 3. --postcopy=auto, a writer the throttled link cannot keep up with: it
#    switches by itself;
# 4. bad input: a destination port already in use, a migration to an address
#    where nobody listens (the source runs on).
# Each migration: `qlite migrate --wait --json` completes with a downtime
# figure, the source exits 0 by itself, the joined consoles' checksum lines
# are exactly those of a correct run (no gap, repeat or corruption), uptime
# rises across the switch with no second boot, the guest finds its file
# whole, and after the power button (destination exit status 0) so does the
# test host on the image.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"
# shellcheck source=tests/guest/lib/mig.sh
. "$(dirname "$0")/lib/mig.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-migrate: qlite's live migration only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi
for f in /guest/data.img "$MIG_INITRD" /guest/qlite-memwriter "$MIG_IP"; do
    if [[ ! -e $f ]]; then
        fail "no $f (run-all.sh passes --guest-file data.img, initrd-mw.img, qlite-memwriter, --bin /bin/ip)"
        finish
    fi
done

t_start=$(cut -d' ' -f1 /proc/uptime)
# qlite in a namespace, as vm_start's $QLITE (ip netns exec execs it).
for ns in src dst; do
    printf '#!/bin/sh\nexec %s netns exec mig-%s %s "$@"\n' "$MIG_IP" "$ns" "$QLITE" \
        >"/tmp/qlite-mig-$ns"
    chmod +x "/tmp/qlite-mig-$ns"
done
EV_PID=
MIG_CLIENT=
MIG_DURING= # a function migrate_and_check runs beside qlite migrate
MIG_DURING_PID=
SRC_PID=
DST_PID=
# On any exit: no stray VMM or event reader for the tests after this one.
cleanup() {
    local p v
    [[ -z $EV_PID ]] || kill "$EV_PID" 2>/dev/null || true
    [[ -z $MIG_CLIENT ]] || kill "$MIG_CLIENT" 2>/dev/null || true
    [[ -z $MIG_DURING_PID ]] || kill "$MIG_DURING_PID" 2>/dev/null || true
    for p in SRC DST; do
        v=${p}_PID
        if [[ -n ${!v:-} ]] && kill -0 "${!v}" 2>/dev/null; then
            vm_use "${p,,}"
            vm_kill >/dev/null || true
        fi
    done
    "$MIG_IP" netns del mig-src 2>/dev/null || true
    "$MIG_IP" netns del mig-dst 2>/dev/null || true
    rm -f /tmp/qlite-mig-src /tmp/qlite-mig-dst
    return 0
}
trap cleanup EXIT

if ! mig_netns_setup; then
    fail "network namespaces mig-src and mig-dst on a veth (ping $MIG_DST_ADDR)"
    finish
fi
pass "namespaces mig-src ($MIG_SRC_ADDR) and mig-dst ($MIG_DST_ADDR) ping each other"

# Two background VMs at a time: vm.sh's VM_LOG/VM_SOCK/VM_PID per side.
vm_keep() { # vm_keep src|dst
    if [[ $1 == src ]]; then SRC_LOG=$VM_LOG SRC_SOCK=$VM_SOCK SRC_PID=$VM_PID; else
        DST_LOG=$VM_LOG DST_SOCK=$VM_SOCK DST_PID=$VM_PID; fi
}
vm_use() { # vm_use src|dst
    if [[ $1 == src ]]; then VM_LOG=$SRC_LOG VM_SOCK=$SRC_SOCK VM_PID=$SRC_PID; else
        VM_LOG=$DST_LOG VM_SOCK=$DST_SOCK VM_PID=$DST_PID; fi
}

# guest_cmd MIB PASSES SLEEP_MS: mount the data disk, append "line i" to
# mig.log every 50 ms through fd 3 while qlite-memwriter runs, then check the
# file, unmount, and wait for the power button (the sleep bounds it).
guest_cmd() {
    local c
    # shellcheck disable=SC2016 # $... expanded in the guest
    c='mount -t ext4 /dev/vda /mnt && cd /mnt && rm -f mig.log && exec 3>>mig.log || exit 1;'
    # shellcheck disable=SC2016
    c+=' (i=0; while [ ! -e /tmp/mw-end ]; do i=$((i + 1)); echo line $i >&3; usleep 50000; done;'
    # shellcheck disable=SC2016
    c+=' echo $i >/tmp/lines) & qlite-memwriter -m '"$1 -p $2 -s $3"'; echo MW-RC $?;'
    # shellcheck disable=SC2016
    c+=' touch /tmp/mw-end; wait; exec 3>&-; sync; n=$(cat /tmp/lines);'
    # shellcheck disable=SC2016
    c+=" seq 1 \$n | sed 's/^/line /' | cmp - mig.log && cd / && umount /mnt"
    # shellcheck disable=SC2016
    c+=' && echo MIG-FILE-OK $n && sleep 120'
    echo "$c"
}

# mw_up first|last LOG: the uptime on LOG's first or last checksum line.
mw_up() {
    tr -d '\r' <"$2" | awk -v w="$1" '/^MW pass [0-9]+ sum [0-9a-f]+ up [0-9.]+$/ {
            if (w == "last" || u == "") u = $7
        }
        END { print u }'
}
mw_count() {
    local c
    c=$(grep -ac '^MW pass ' "$1" 2>/dev/null) || true
    echo "${c:-0}"
}
# json_int KEY JSON / json_str KEY JSON: KEY's first value in (plain) JSON.
json_int() {
    local re="\"$1\": *([0-9]+)"
    if [[ $2 =~ $re ]]; then echo "${BASH_REMATCH[1]}"; else echo 0; fi
}
json_str() {
    local re="\"$1\": *\"([^\"]*)\""
    if [[ $2 =~ $re ]]; then echo "${BASH_REMATCH[1]}"; fi
}
# host_file_ok IMG N: after power-off, mig.log on the image holds lines 1..N.
host_file_ok() {
    local ok=1
    [[ $2 -gt 0 ]] || return 1
    mkdir -p /mnt/check
    mount -o loop,ro -t ext4 "$1" /mnt/check || return 1
    seq 1 "$2" | sed 's/^/line /' | cmp -s - /mnt/check/mig.log || ok=0
    umount /mnt/check
    [[ $ok == 1 ]]
}
# passes_exact MIB PASSES LOG...: the joined consoles' checksum lines are a
# correct run's, all of them, once each, in order.
passes_exact() {
    local mib=$1 p=$2
    shift 2
    diff <(mw_expect "$mib" "$p") <(mw_passes "$@") >/tmp/mig-passes.diff
}

# start_pair NAME PORT MIB PASSES SLEEP_MS MEM_MB: the source (booting the
# memwriter guest on a fresh copy of the data disk) and the destination.
start_pair() {
    local name=$1 port=$2
    IMG=/tmp/mig-$name.img
    cp /guest/data.img "$IMG"
    GUEST_INITRD=$MIG_INITRD vm_boot_args 1 "$6" "qlite.cmd=\"$(guest_cmd "$3" "$4" "$5")\""
    QLITE=/tmp/qlite-mig-src vm_start "$name-src" "${VM_BOOT_ARGS[@]}" --disk "path=$IMG" ||
        fail "$name: source qlite run started (stderr: $(head -c 300 "$VM_LOG.err" 2>/dev/null))"
    vm_keep src
    QLITE=/tmp/qlite-mig-dst vm_start "$name-dst" --incoming "tcp:$MIG_DST_ADDR:$port" ||
        fail "$name: destination qlite run --incoming started (stderr: $(head -c 300 "$VM_LOG.err" 2>/dev/null))"
    vm_keep dst
}

# migrate_and_check NAME PORT MIB PASSES START_PASS MIGRATE_ARGS...: once the
# source's memwriter printed pass START_PASS, migrate; then check everything.
migrate_and_check() {
    local name=$1 port=$2 mib=$3 passes=$4 at=$5 f0=$n_fail js rc st n u0 u1
    shift 5
    vm_use src
    check "$name: the memwriter runs on the source (pass $at)" vm_wait_log "^MW pass $at " 120
    # The destination's events: MIGRATION statuses it went through.
    "$QLITE" events --qmp "$DST_SOCK" >"/tmp/mig-$name-dst-events.log" 2>&1 &
    EV_PID=$!
    echo "     qlite migrate $* (source at pass $(mw_count "$SRC_LOG"))"
    in_src "$QLITE" migrate --qmp "$SRC_SOCK" "tcp:$MIG_DST_ADDR:$port" --wait --json "$@" \
        >"/tmp/mig-$name-migrate.json" 2>"/tmp/mig-$name-migrate.err" &
    MIG_CLIENT=$!
    if [[ -n $MIG_DURING ]]; then
        "$MIG_DURING" &
        MIG_DURING_PID=$!
    fi
    rc=0
    wait "$MIG_CLIENT" || rc=$?
    MIG_CLIENT=
    if [[ -n $MIG_DURING_PID ]]; then
        wait "$MIG_DURING_PID" || fail "$name: $MIG_DURING (the migration ended first?)"
        MIG_DURING_PID=
    fi
    js=$(cat "/tmp/mig-$name-migrate.json")
    echo "     migrate (exit $rc): $js"
    sed 's/^/     | migrate: /' "/tmp/mig-$name-migrate.err"
    st=$(json_str status "$js")
    check "$name: qlite migrate exits 0 (got $rc)" test "$rc" = 0
    check "$name: status completed (got $st) with a downtime figure ($(json_int downtime "$js") ms)" \
        grep -q '"downtime":[0-9]' <<<"$js"
    check "$name: migrated at pass $(mw_count "$SRC_LOG") of $passes (mid-run)" \
        test "$(mw_count "$SRC_LOG")" -lt "$passes"
    vm_use src
    vm_wait_exit 30
    check "$name: the source qlite exits 0 by itself (got $VM_RC)" test "$VM_RC" = 0
    SRC_PID=
    MIG_JSON=$js
    vm_use dst
    check "$name: the guest runs on and finds its file whole on the destination" \
        vm_wait_log '^MIG-FILE-OK [0-9]+' 120
    DST_Q=$("$QLITE" qmp --qmp "$DST_SOCK" query-migrate 2>&1 || true)
    echo "     destination query-migrate: $DST_Q"
    check "$name: qlite powerdown (destination)" "$QLITE" powerdown --qmp "$DST_SOCK"
    vm_wait_exit 60
    DST_PID=
    kill "$EV_PID" 2>/dev/null || true
    wait "$EV_PID" 2>/dev/null || true
    EV_PID=
    sed -i 's/\r$//' "$SRC_LOG"
    check "$name: the destination exits 0 after the power button (got $VM_RC)" test "$VM_RC" = 0
    check "$name: the guest shut down on the power button" grep -q QLITE-GUEST-POWERDOWN "$DST_LOG"
    check "$name: the memwriter finished on the destination (MW-DONE, exit 0)" \
        grep -q '^MW-RC 0$' "$DST_LOG"
    check "$name: no MW-CORRUPT on either side" sh -c "! grep -qa MW-CORRUPT '$SRC_LOG' '$DST_LOG'"
    check "$name: the checksum lines, joined, are exactly a correct run's ($mib MiB, $passes passes)" \
        passes_exact "$mib" "$passes" "$SRC_LOG" "$DST_LOG"
    [[ -s /tmp/mig-passes.diff ]] && head -n 20 /tmp/mig-passes.diff | sed 's/^/     | diff: /'
    check "$name: the source ran some passes, the destination the rest ($(mw_count "$SRC_LOG") + $(mw_count "$DST_LOG"))" \
        test "$(mw_count "$SRC_LOG")" -gt 0 -a "$(mw_count "$DST_LOG")" -gt 0
    u0=$(mw_up last "$SRC_LOG")
    u1=$(mw_up first "$DST_LOG")
    check "$name: uptime rises across the switch (last on the source $u0 s, first on the destination $u1 s)" \
        mw_uptimes_rise "$SRC_LOG" "$DST_LOG"
    check "$name: no reboot on the destination (no QLITE-GUEST-READY, no kernel banner)" \
        sh -c "! grep -qa -e QLITE-GUEST-READY -e 'Linux version' '$DST_LOG'"
    n=$(sed -n 's/^MIG-FILE-OK \([0-9]*\)$/\1/p' "$DST_LOG" | tail -n1)
    check "$name: host: mig.log on the image after power-off holds lines 1..${n:-?}" \
        host_file_ok "$IMG" "${n:-0}"
    if [[ $n_fail -gt $f0 ]]; then
        sed 's/^/     | src stderr: /' "$SRC_LOG.err"
        sed 's/^/     | dst stderr: /' "$DST_LOG.err"
        sed 's/^/     | dst events: /' "/tmp/mig-$name-dst-events.log"
        echo "     source console:"
        sed 's/^/     | /' "$SRC_LOG"
        echo "     destination console:"
        sed 's/^/     | /' "$DST_LOG"
    fi
    rm -f "$IMG"
}

# ---- 1. pre-copy (and 4. bad input, on the way) -----------------------------
PRE_MIB=16 PRE_PASSES=30 PRE_SLEEP=200
start_pair pre 4444 "$PRE_MIB" "$PRE_PASSES" "$PRE_SLEEP" 256
vm_use src
check "pre: the memwriter runs on the source" vm_wait_log '^MW pass 2 ' 120

# 4a. The destination's port is held (by the destination itself): exit 1.
set +e
out=$(timeout -k 5 30 /tmp/qlite-mig-dst run --incoming "tcp:$MIG_DST_ADDR:4444" 2>&1 </dev/null)
rc=$?
set -e
echo "     port in use: exit $rc: $out"
check "bad input: --incoming on a port in use exits 1 (got $rc)" test "$rc" = 1
check "bad input: the message names the address and says it is in use" \
    grep -q "cannot listen on tcp:$MIG_DST_ADDR:4444: Address.* in use" <<<"$out"

# 4b. Nobody listens there: migrate fails, the source runs on.
c0=$(mw_count "$SRC_LOG")
set +e
out=$(in_src "$QLITE" migrate --qmp "$SRC_SOCK" "tcp:$MIG_DST_ADDR:4447" --wait 2>&1)
rc=$?
set -e
echo "     nobody listening: exit $rc: $out"
check "bad input: migrate to $MIG_DST_ADDR:4447 (nobody listens) exits 1 (got $rc)" test "$rc" = 1
check "bad input: the reason is given (connection refused)" grep -qi "refused" <<<"$out"
st=$("$QLITE" status --qmp "$SRC_SOCK" 2>&1 || true)
check "bad input: the source VM is still running (status $st)" test "$st" = running
check "bad input: the memwriter keeps printing on the source" vm_wait_log "^MW pass $((c0 + 2)) " 30

migrate_and_check pre 4444 "$PRE_MIB" "$PRE_PASSES" $((c0 + 2))

# ---- 2. post-copy -----------------------------------------------------------------
PC_MIB=96 PC_PASSES=30
start_pair pc 4445 "$PC_MIB" "$PC_PASSES" 0 384
migrate_and_check pc 4445 "$PC_MIB" "$PC_PASSES" 5 --postcopy
check "pc: the destination went through postcopy-active (MIGRATION events)" \
    grep -q '"status": *"postcopy-active"' /tmp/mig-pc-dst-events.log
check "pc: the destination's query-migrate has post-copy figures" \
    grep -q '"postcopy":{' <<<"${DST_Q// /}"
check "pc: pages came after the switch ($(json_int postcopy-bytes "$MIG_JSON") post-copy bytes, $(json_int pages-pushed "$MIG_JSON") pushed)" \
    test "$(json_int postcopy-bytes "$MIG_JSON")" -gt 0 -a "$(json_int pages-pushed "$MIG_JSON")" -gt 0
echo "     post-copy (destination): faults $(json_int faults "${DST_Q// /}")," \
    "faults-waited-network $(json_int faults-waited-network "${DST_Q// /}")," \
    "p50 $(json_int fault-p50-us "${DST_Q// /}") us, p99 $(json_int fault-p99-us "${DST_Q// /}") us;" \
    "source: pages-pushed $(json_int pages-pushed "$MIG_JSON"), pages-requested $(json_int pages-requested "$MIG_JSON")," \
    "downtime $(json_int downtime "$MIG_JSON") ms"

# ---- 3. --postcopy=auto --------------------------------------------------------
# The test host has one CPU, and the guest's writes fault into KVM once per
# page and round (dirty logging, nested): it dirties slower than the link
# carries and pre-copy converges (section 2's workload in 4 rounds even with
# a 20 ms downtime limit). So, as an operator would, the bandwidth goes down
# to 12 MiB/s late in round 0 (QMP migrate-set-parameters; throttled from
# the start, round 0 would take long): the guest rewrites much of its 8 MiB
# every round, which a 20 ms limit never lets through. Its vCPU thread gets
# the larger share of the CPU (nice -5, standing in for a CPU of its own)
# so that it keeps writing while the sender works.
AU_MIB=8 AU_PASSES=1000
# au_throttle: beside qlite migrate; fails if the migration ended first.
au_throttle() {
    local i q rem=0
    for ((i = 0; i < 600; i++)); do
        q=$("$QLITE" qmp --qmp "$SRC_SOCK" query-migrate 2>/dev/null) || return 1
        rem=$(json_int remaining "$q")
        [[ $(json_int dirty-sync-count "$q") -ge 2 ]] && break
        [[ $rem -gt 0 && $rem -lt $((80 << 20)) ]] && break
        sleep 0.05
    done
    "$QLITE" qmp --qmp "$SRC_SOCK" migrate-set-parameters '{"max-bandwidth": 12582912}' >/dev/null &&
        echo "     auto: max-bandwidth 12 MiB/s from round $(json_int dirty-sync-count "$q") on, $((rem >> 20)) MiB left"
}
start_pair auto 4446 "$AU_MIB" "$AU_PASSES" 0 128
vm_use src
vm_wait_log '^MW pass 2 ' 120 || true
au_pid=$(vm_qlite_pid)
au_vcpu=$(grep -lx vcpu0 /proc/"$au_pid"/task/*/comm 2>/dev/null | head -n1 | cut -d/ -f5) || true
check "auto: the source's vcpu0 thread ($au_vcpu of qlite $au_pid) reniced to -5" \
    renice -n -5 -p "${au_vcpu:-none}"
MIG_DURING=au_throttle
migrate_and_check auto 4446 "$AU_MIB" "$AU_PASSES" 5 --postcopy=auto --downtime-limit 20
MIG_DURING=
check "auto: it switched to post-copy by itself (postcopy-active)" \
    grep -q '"status": *"postcopy-active"' /tmp/mig-auto-dst-events.log
check "auto: after some pre-copy rounds ($(json_int dirty-sync-count "$MIG_JSON"))" \
    test "$(json_int dirty-sync-count "$MIG_JSON")" -ge 3
echo "     auto: switched after $(json_int dirty-sync-count "$MIG_JSON") rounds, total $(json_int total-time "$MIG_JSON") ms," \
    "downtime $(json_int downtime "$MIG_JSON") ms, post-copy bytes $(json_int postcopy-bytes "$MIG_JSON")"

t_end=$(cut -d' ' -f1 /proc/uptime)
echo "     test-migrate wall time in the test host: $(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }') s"
finish
