#!/bin/bash
# Live migration benchmark, qlite vs QEMU 7.2, in ONE test-host boot
# (docs/migration.md, "Figures"). Two "hosts": network namespaces mig-src
# (10.77.0.1) and mig-dst (10.77.0.2) on a veth (tests/guest/lib/mig.sh).
# The same guest (default kernel, initrd-mw.img, BENCH_MEM MiB, 1 vCPU) runs
# qlite-memwriter; after BENCH_START_PASSES passes it is migrated over
# tcp:10.77.0.2:PORT, BENCH_RUNS times per mode:
#   qlite-pre    qlite pre-copy
#   qlite-pc     qlite post-copy (switch after round 0), x-prepage-pivots 7
#   qlite-pc0    qlite post-copy, x-prepage-pivots 0 (pre-paging off)
#   qemu-pre     QEMU pre-copy
#   qemu-pc      QEMU post-copy (postcopy-ram both sides, postcopy-blocktime on
#                the destination; migrate-start-postcopy once QEMU's second
#                dirty sync, the end of its first pass, is seen)
# Each run goes through the modes in turn, starting one mode later than the
# run before. Both VMMs get the same max-bandwidth and downtime-limit. Pre-copy workload:
# -m BENCH_PRE_MIB -s BENCH_PRE_SLEEP (converges); post-copy: -m BENCH_PC_MIB
# -s 0 (a working set rewritten continuously).
#
# Figures per run and medians: total-time, downtime, bytes (ram.transferred,
# from the source's query-migrate); post-copy: network faults (qlite: the
# destination's postcopy.faults-waited-network; QEMU: the source's
# ram.postcopy-requests), their share of the pages touched after the switch
# (= the memwriter's whole buffer, every page of which each pass rewrites; at
# least BENCH_AFTER_PASSES passes must end on the destination), fault
# service p50/p99 (qlite; QEMU 7.2 has none: "-"), QEMU's postcopy-blocktime.
# Each run is checked: its MW pass sums equal what `qlite-memwriter -e` prints,
# no MW-CORRUPT; a run that fails is reported loudly and not counted.
# Figures, not assertions: nested KVM under TCG, 2 CPUs shared.
#
# usage (dev machine): tests/bench/migrate.sh
#   BENCH_RUNS=N (default 2), BENCH_MODES="qlite-pre qlite-pc ...",
#   BENCH_MEM (512), BENCH_BW bytes/s (134217728), BENCH_DOWNTIME ms (300),
#   BENCH_PRE_MIB (32), BENCH_PRE_SLEEP ms (500), BENCH_PC_MIB (256),
#   BENCH_START_PASSES (3), BENCH_AFTER_PASSES (3), BENCH_TIMEOUT s (1500).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BENCH_MEM=${BENCH_MEM:-512}
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"
BENCH_MODES=${BENCH_MODES:-qlite-pre qemu-pre qlite-pc qlite-pc0 qemu-pc}
BENCH_BW=${BENCH_BW:-134217728}
BENCH_DOWNTIME=${BENCH_DOWNTIME:-300}
BENCH_PRE_MIB=${BENCH_PRE_MIB:-32}
BENCH_PRE_SLEEP=${BENCH_PRE_SLEEP:-500}
BENCH_PC_MIB=${BENCH_PC_MIB:-256}
BENCH_START_PASSES=${BENCH_START_PASSES:-3}
BENCH_AFTER_PASSES=${BENCH_AFTER_PASSES:-3}
MIG_TIMEOUT=${MIG_TIMEOUT:-240}

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    root=$(cd "$here/../.." && pwd)
    envs=()
    for v in BENCH_RUNS BENCH_MODES BENCH_MEM BENCH_BW BENCH_DOWNTIME BENCH_PRE_MIB \
        BENCH_PRE_SLEEP BENCH_PC_MIB BENCH_START_PASSES BENCH_AFTER_PASSES \
        BENCH_QEMU_MACHINE MIG_TIMEOUT; do
        envs+=(--env "$v=${!v}")
    done
    # shellcheck disable=SC2086
    exec "$root/tests/testhost/run.sh" --with-qemu --timeout "${BENCH_TIMEOUT:-1500}" \
        --smp "${BENCH_TESTHOST_SMP:-2}" --mem "${BENCH_TESTHOST_MEM:-3072}" \
        --guest-file initrd-mw.img --guest-file qlite-memwriter --bin /bin/ip \
        "${envs[@]}" ${QLITE_TESTHOST_ARGS:-} "$0" "$@"
fi

# shellcheck source=tests/guest/lib/mig.sh
. "$here/../guest/lib/mig.sh"
[[ -x ${QLITE:-} ]] || { echo "bench: no qlite binary in the test host"; exit 1; }
BENCH_INITRD=$MIG_INITRD
work=/tmp/mig-bench
rm -rf "$work"
mkdir -p "$work"
res=$work/results
: >"$res"
fails=0
port=4600

qmp() { "$QLITE" qmp --qmp "$@"; }
# jnum KEY JSON: the first numeric value of "KEY" in JSON (- if none).
jnum() { grep -o "\"$1\": *[0-9.e+-]*" <<<"$2" | head -n1 | sed 's/.*: *//' | grep . || echo -; }
jstatus() { { grep -o '"status": *"[a-z-]*"' <<<"$1" || true; } | head -n1 | sed 's/.*: *"//; s/"$//'; }
mw_count() { tr -d '\r' <"$1" 2>/dev/null | grep -ac '^MW pass [0-9]* sum [0-9a-f]* up ' || true; }

# wait_mw LOG N SECONDS: LOG shows at least N whole MW lines.
wait_mw() {
    local end=$((SECONDS + $3))
    while ((SECONDS < end)); do
        (($(mw_count "$1") >= $2)) && return 0
        grep -aq MW-CORRUPT "$1" 2>/dev/null && return 1
        sleep 0.1
    done
    return 1
}
wait_sock() { # SOCK SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -S $1 ]] && return 0
        sleep 0.1
    done
    return 1
}

# vmm_bg VAR NS LOG CMD...: CMD in namespace NS in the background, console
# to LOG, stderr to LOG.err; its pid in VAR.
vmm_bg() {
    local var=$1 ns=$2 log=$3
    shift 3
    echo "bench: $(date +%T) [$ns] $*" >&2
    "in_$ns" timeout -k 5 "$BENCH_VM_TIMEOUT" "$@" </dev/null >"$log" 2>"$log.err" &
    printf -v "$var" %s $!
}
# vmm_reap PID: wait up to 20 s for it, then kill it.
vmm_reap() {
    local i
    for ((i = 0; i < 200; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$1" 2>/dev/null; then
        kill -TERM "$1" 2>/dev/null || true
        sleep 3
        kill -KILL "$1" 2>/dev/null || true
    fi
    wait "$1" 2>/dev/null || true
}

fail_msg() { # WHAT LOG...
    local what=$1 l
    shift
    echo "bench: FAILED (run not counted): $what"
    for l in "$@"; do
        echo "  --- $l"
        tail -n 15 "$l" 2>/dev/null | sed 's/^/  | /'
        # The first lines hold the cause, the last what followed.
        { head -n 5 "$l.err"; echo ...; tail -n 5 "$l.err"; } 2>/dev/null | cut -c1-400 |
            sed 's/^/  | stderr: /'
    done
}
run_fail() {
    fail_msg "$@"
    fails=$((fails + 1))
}

# The guest-visible pause: the destination's RESUME minus the source's STOP,
# both QMP event timestamps (gettimeofday in the same test host). Each VMM's
# own "downtime" differs: qlite's runs from the pause request to the
# destination's RUNNING answer (its load and start included), QEMU 7.2's to
# the last byte of device state written on the source.
# ev_listen SOCK LOG: print SOCK's events to LOG in the background (EV_PIDS).
EV_PIDS=()
ev_listen() {
    "$QLITE" events --qmp "$1" >"$2" 2>/dev/null &
    EV_PIDS+=($!)
}
ev_reap() {
    local p i
    for p in "${EV_PIDS[@]}"; do
        for ((i = 0; i < 50; i++)); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    EV_PIDS=()
}
ev_ts() { # LOG EVENT: its first timestamp, seconds
    awk -v ev="\"event\":\"$2\"" 'index($0, ev) {
            s = $0; sub(/.*"seconds":/, "", s); sub(/[,}].*/, "", s)
            u = $0; sub(/.*"microseconds":/, "", u); sub(/[,}].*/, "", u)
            printf "%d.%06d\n", s, u; exit }' "$1"
}
pause_ms() { # SRC_EVENTS DST_EVENTS
    local a b
    a=$(ev_ts "$1" STOP) b=$(ev_ts "$2" RESUME)
    if [[ -z $a || -z $b ]]; then echo -; return; fi
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%.1f\n", (b - a) * 1000 }'
}

# diag_stall SOCK: why a destination guest made no progress: the run state and,
# per thread of the VMM serving SOCK, state, wchan and CPU ticks over 2 s.
diag_stall() {
    local p pid='' t
    echo "bench:   destination query-status: $(qmp "$1" query-status 2>&1)"
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$1"; then
            [[ $(cat "$p/comm" 2>/dev/null) == timeout ]] && continue
            pid=${p#/proc/}
            break
        fi
    done
    [[ -n $pid ]] || return 0
    for t in /proc/"$pid"/task/*; do
        echo "bench:   thread $(cat "$t/comm") $(awk '{ print "state", $3, "ticks", $14 + $15 }' "$t/stat") wchan $(cat "$t/wchan" 2>/dev/null)"
    done
    sleep 2
    for t in /proc/"$pid"/task/*; do
        echo "bench:   2 s later: $(cat "$t/comm") $(awk '{ print "state", $3, "ticks", $14 + $15 }' "$t/stat")"
    done
    # qlite: where the guest is (its profiler); QEMU has no such command.
    if [[ $(cat /proc/"$pid"/comm 2>/dev/null) == qlite ]]; then
        "$QLITE" profile --qmp "$1" --duration 2s --refresh 0 --symbols "$GUEST_SYSMAP" \
            --out "$work/stall-profile" >/dev/null 2>&1 || true
        sed -n 1,30p "$work/stall-profile/report.txt" 2>/dev/null | sed 's/^/bench:   profile: /'
    fi
}

# Expected MW lines per buffer size, computed once and grown on demand.
mw_expect_n() { # MIB N
    local f=$work/expect-$1
    if [[ ! -f $f ]] || (($(wc -l <"$f") < $2)); then
        mw_expect "$1" "$(($2 + 20))" >"$f"
    fi
    head -n "$2" "$f"
}

# verify MODE RUN MIB SRCLOG DSTLOG: the pass sums are right, none corrupt,
# and BENCH_AFTER_PASSES passes ended on the destination (the first of them
# may have started on the source: whole passes after the switch are one
# fewer). Prints the number of passes on the destination; on failure, why
# (on stderr), and the caller counts it.
verify() {
    local mode=$1 run=$2 mib=$3 src=$4 dst=$5 got n ndst
    if grep -aq MW-CORRUPT "$src" "$dst"; then
        fail_msg "$mode run $run: MEMORY CORRUPTED: $(grep -ah MW-CORRUPT "$src" "$dst" | head -n 3 | tr '\n' ' ')" "$dst" >&2
        return 1
    fi
    got=$(mw_passes "$src" "$dst")
    n=$(grep -c . <<<"$got" || true)
    if [[ $got != "$(mw_expect_n "$mib" "$n")" ]]; then
        fail_msg "$mode run $run: MW PASS SUMS WRONG (a page lost or stale): $(diff <(echo "$got") <(mw_expect_n "$mib" "$n") | head -n 4 | tr '\n' ' ')" "$src" "$dst" >&2
        return 1
    fi
    ndst=$(mw_count "$dst")
    if ((ndst < BENCH_AFTER_PASSES)); then
        fail_msg "$mode run $run: only $ndst passes on the destination" "$dst" >&2
        return 1
    fi
    echo "$ndst"
}

guest_cmdline() { # MIB SLEEP_MS
    echo "$BENCH_CMDLINE_BASE qlite.cmd=\"/bin/qlite-memwriter -m $1 -p 0 -s $2\""
}

# ---- qlite -------------------------------------------------------------------------
run_qlite() {
    local mode=$1 run=$2 mib sleep_ms pivots=7 pc=() srcpid dstpid js dq st i ndst
    local slog=$work/$mode-$run-src.log dlog=$work/$mode-$run-dst.log
    local ssock=$work/qs.sock dsock=$work/qd.sock uri
    port=$((port + 1))
    uri=tcp:$MIG_DST_ADDR:$port
    case $mode in
    qlite-pre) mib=$BENCH_PRE_MIB sleep_ms=$BENCH_PRE_SLEEP ;;
    qlite-pc) mib=$BENCH_PC_MIB sleep_ms=0 pc=(--postcopy) ;;
    qlite-pc0) mib=$BENCH_PC_MIB sleep_ms=0 pc=(--postcopy) pivots=0 ;;
    esac
    rm -f "$ssock" "$dsock" "$ssock.ev" "$dsock.ev"
    qlite_base "$(guest_cmdline "$mib" "$sleep_ms")"
    vmm_bg dstpid dst "$dlog" "$QLITE" run --incoming "$uri" --no-reboot \
        --qmp "unix:$dsock,server=on,wait=off"
    vmm_bg srcpid src "$slog" "${QLITE_CMD[@]}" --qmp "unix:$ssock,server=on,wait=off"
    if wait_sock "$dsock" 30 && wait_sock "$ssock" 30; then
        ev_listen "$dsock" "$dlog.ev"
        ev_listen "$ssock" "$slog.ev"
    fi
    if ! wait_sock "$dsock" 30 || ! wait_mw "$slog" "$BENCH_START_PASSES" 300; then
        run_fail "$mode run $run: the guest did not start" "$slog" "$dlog"
        qmp "$ssock" quit >/dev/null 2>&1 || true
        qmp "$dsock" quit >/dev/null 2>&1 || true
        vmm_reap "$srcpid"
        vmm_reap "$dstpid"
        ev_reap
        return
    fi
    if ! qmp_do "$ssock" migrate-set-parameters "{\"x-prepage-pivots\": $pivots}"; then
        run_fail "$mode run $run: $QMP_ERR" "$slog" "$dlog"
        qmp "$ssock" quit >/dev/null 2>&1 || true
        qmp "$dsock" quit >/dev/null 2>&1 || true
        vmm_reap "$srcpid"
        vmm_reap "$dstpid"
        ev_reap
        return
    fi
    js=$(timeout "$MIG_TIMEOUT" "$QLITE" migrate --qmp "$ssock" "$uri" --wait --json \
        --max-bandwidth "$BENCH_BW" --downtime-limit "$BENCH_DOWNTIME" "${pc[@]}" \
        2>"$work/migrate.err") || true
    st=$(jstatus "$js")
    dq=
    if [[ $st == completed ]]; then
        for ((i = 0; i < 100; i++)); do
            dq=$(qmp "$dsock" query-migrate 2>/dev/null) || dq=
            [[ $(jstatus "$dq") == completed ]] && break
            sleep 0.2
        done
        if ! wait_mw "$dlog" "$BENCH_AFTER_PASSES" 60; then
            echo "bench: $mode run $run: the destination's guest stalls: $(mw_count "$dlog") MW lines"
            diag_stall "$dsock"
        fi
        dq=$(qmp "$dsock" query-migrate 2>/dev/null) || dq=
    fi
    qmp "$dsock" quit >/dev/null 2>&1 || true
    qmp "$ssock" quit >/dev/null 2>&1 || true
    vmm_reap "$srcpid"
    vmm_reap "$dstpid"
    ev_reap
    echo "bench: $mode run $run: source: $js"
    echo "bench: $mode run $run: destination: $dq"
    if [[ $st != completed ]]; then
        run_fail "$mode run $run: migration $st: $(cat "$work/migrate.err")" "$slog" "$dlog"
        return
    fi
    if ! ndst=$(verify "$mode" "$run" "$mib" "$slog" "$dlog"); then
        fails=$((fails + 1))
        return 0
    fi
    # Pages the destination lacked at the switch: pushed or requested.
    local missing=-
    if [[ $mode != qlite-pre ]]; then
        missing=$(awk -v a="$(jnum pages-pushed "$js")" -v b="$(jnum pages-requested "$js")" \
            'BEGIN { if (a == "-" || b == "-") print "-"; else print a + b }')
    fi
    # mode run total downtime bytes netfaults faults p50 p99 blocktime touched dstpasses
    # requested pushed pause missing
    echo "$mode $run $(jnum total-time "$js") $(jnum downtime "$js") $(jnum transferred "$js")" \
        "$(jnum faults-waited-network "$dq") $(jnum faults "$dq") $(jnum fault-p50-us "$dq")" \
        "$(jnum fault-p99-us "$dq") - $((mib * 256)) $ndst $(jnum pages-requested "$js")" \
        "$(jnum pages-pushed "$js") $(pause_ms "$slog.ev" "$dlog.ev") $missing" >>"$res"
}

# ---- QEMU --------------------------------------------------------------------------
# qmp_do SOCK CMD [ARGS]: a command whose failure fails the run (QMP_ERR says why).
qmp_do() {
    if ! QMP_ERR=$(qmp "$@" 2>&1); then
        QMP_ERR="$2 on $1: $QMP_ERR"
        return 1
    fi
}
qemu_caps() { # SOCK CAP...
    local sock=$1 c list=
    shift
    for c in "$@"; do list+="${list:+, }{\"capability\": \"$c\", \"state\": true}"; done
    qmp_do "$sock" migrate-set-capabilities "{\"capabilities\": [$list]}"
}
run_qemu() {
    local mode=$1 run=$2 mib sleep_ms is_pc=0 srcpid dstpid js dq st i ndst sw=-
    local slog=$work/$mode-$run-src.log dlog=$work/$mode-$run-dst.log
    local ssock=$work/es.sock dsock=$work/ed.sock uri params
    port=$((port + 1))
    uri=tcp:$MIG_DST_ADDR:$port
    case $mode in
    qemu-pre) mib=$BENCH_PRE_MIB sleep_ms=$BENCH_PRE_SLEEP ;;
    qemu-pc) mib=$BENCH_PC_MIB sleep_ms=0 is_pc=1 ;;
    esac
    rm -f "$ssock" "$dsock" "$ssock.ev" "$dsock.ev"
    qemu_base "$(guest_cmdline "$mib" "$sleep_ms")"
    vmm_bg dstpid dst "$dlog" "${QEMU_CMD[@]}" -qmp "unix:$dsock,server=on,wait=off" \
        -qmp "unix:$dsock.ev,server=on,wait=off" -incoming defer
    vmm_bg srcpid src "$slog" "${QEMU_CMD[@]}" -qmp "unix:$ssock,server=on,wait=off" \
        -qmp "unix:$ssock.ev,server=on,wait=off"
    # A second monitor for the events: QEMU serves one client per monitor.
    if wait_sock "$dsock.ev" 30 && wait_sock "$ssock.ev" 30; then
        ev_listen "$dsock.ev" "$dlog.ev"
        ev_listen "$ssock.ev" "$slog.ev"
    fi
    if ! wait_sock "$dsock" 30 || ! wait_mw "$slog" "$BENCH_START_PASSES" 300; then
        run_fail "$mode run $run: the guest did not start" "$slog" "$dlog"
        qmp "$ssock" quit >/dev/null 2>&1 || true
        qmp "$dsock" quit >/dev/null 2>&1 || true
        vmm_reap "$srcpid"
        vmm_reap "$dstpid"
        ev_reap
        return
    fi
    params="{\"max-bandwidth\": $BENCH_BW, \"downtime-limit\": $BENCH_DOWNTIME}"
    if ! qmp_do "$ssock" migrate-set-parameters "$params" ||
        ! qmp_do "$dsock" migrate-set-parameters "$params" ||
        { ((is_pc)) && ! { qemu_caps "$ssock" postcopy-ram &&
            qemu_caps "$dsock" postcopy-ram postcopy-blocktime; }; } ||
        ! qmp_do "$dsock" migrate-incoming "{\"uri\": \"$uri\"}" ||
        ! qmp_do "$ssock" migrate "{\"uri\": \"$uri\"}"; then
        run_fail "$mode run $run: $QMP_ERR" "$slog" "$dlog"
        qmp "$ssock" quit >/dev/null 2>&1 || true
        qmp "$dsock" quit >/dev/null 2>&1 || true
        vmm_reap "$srcpid"
        vmm_reap "$dstpid"
        ev_reap
        return
    fi
    if [[ $run == 1 ]]; then
        echo "bench: $mode: source parameters: $(qmp "$ssock" query-migrate-parameters)"
    fi
    st=
    for ((i = 0; i < MIG_TIMEOUT * 10; i++)); do
        js=$(qmp "$ssock" query-migrate 2>/dev/null) || js=
        st=$(jstatus "$js")
        [[ $st == completed || $st == failed || $st == cancelled ]] && break
        # As qlite's --postcopy: switch once the first pass is through (the
        # second dirty sync comes at its end).
        if ((is_pc)) && [[ $sw == - && $st == active ]] &&
            [[ $(jnum dirty-sync-count "$js") != - ]] && (($(jnum dirty-sync-count "$js") >= 2)); then
            qmp_do "$ssock" migrate-start-postcopy || echo "bench: $mode run $run: $QMP_ERR"
            sw=$(jnum transferred "$js")
        fi
        sleep 0.1
    done
    dq=
    if [[ $st == completed ]]; then
        if ! wait_mw "$dlog" "$BENCH_AFTER_PASSES" 60; then
            echo "bench: $mode run $run: the destination's guest stalls: $(mw_count "$dlog") MW lines"
            diag_stall "$dsock"
        fi
        dq=$(qmp "$dsock" query-migrate 2>/dev/null) || dq=
    fi
    qmp "$dsock" quit >/dev/null 2>&1 || true
    qmp "$ssock" quit >/dev/null 2>&1 || true
    vmm_reap "$srcpid"
    vmm_reap "$dstpid"
    ev_reap
    echo "bench: $mode run $run: source: $js"
    echo "bench: $mode run $run: destination: $dq"
    if ((is_pc)); then
        echo "bench: $mode run $run: migrate-start-postcopy sent at $sw bytes transferred"
    fi
    if [[ $st != completed ]]; then
        run_fail "$mode run $run: migration ${st:-did not finish}" "$slog" "$dlog"
        return
    fi
    if ((is_pc)) && [[ $sw == - ]]; then
        run_fail "$mode run $run: pre-copy completed before the switch to post-copy" "$slog" "$dlog"
        return
    fi
    if ! ndst=$(verify "$mode" "$run" "$mib" "$slog" "$dlog"); then
        fails=$((fails + 1))
        return 0
    fi
    local netf=- bt=- missing=-
    if ((is_pc)); then
        netf=$(jnum postcopy-requests "$js")
        bt=$(jnum postcopy-blocktime "$dq")
        # Pages sent after the switch (their headers included: approximate).
        missing=$(awk -v a="$(jnum postcopy-bytes "$js")" \
            'BEGIN { if (a == "-") print "-"; else printf "%d\n", a / 4096 }')
    fi
    echo "$mode $run $(jnum total-time "$js") $(jnum downtime "$js") $(jnum transferred "$js")" \
        "$netf - - - $bt $((mib * 256)) $ndst - - $(pause_ms "$slog.ev" "$dlog.ev") $missing" >>"$res"
}

# ---- main --------------------------------------------------------------------------
echo "bench: migrate: kernel $(cat /guest/VERSION); test host $(nproc) CPUs," \
    "$(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)"
echo "bench: qemu: $(qemu-system-x86_64 --version | head -n1), -M $BENCH_QEMU_MACHINE"
echo "bench: guest ${BENCH_MEM} MiB, $BENCH_CPUS vCPU, $BENCH_INITRD; max-bandwidth $BENCH_BW B/s," \
    "downtime-limit $BENCH_DOWNTIME ms on both VMMs; migration after $BENCH_START_PASSES MW passes"
echo "bench: pre-copy workload: qlite-memwriter -m $BENCH_PRE_MIB -s $BENCH_PRE_SLEEP;" \
    "post-copy: -m $BENCH_PC_MIB -s 0"
mig_netns_setup || { echo "bench: cannot set up the namespaces"; exit 1; }
read -r -a modes <<<"$BENCH_MODES"
for ((r = 1; r <= BENCH_RUNS; r++)); do
    # Each run starts one mode later, so no mode always follows the same one.
    order=()
    for ((k = 0; k < ${#modes[@]}; k++)); do
        order+=("${modes[(k + r - 1) % ${#modes[@]}]}")
    done
    for m in "${order[@]}"; do
        case $m in
        qlite-*) run_qlite "$m" "$r" ;;
        qemu-*) run_qemu "$m" "$r" ;;
        *) echo "bench: unknown mode $m"; exit 2 ;;
        esac
    done
done

echo
echo "bench: per run (ms, bytes; total, down: the source's query-migrate total-time and"
echo "bench: downtime; pause: destination RESUME - source STOP event timestamps, the"
echo "bench: guest-visible pause; net = faults that waited on the network: qlite's"
echo "bench: postcopy.faults-waited-network, QEMU's ram.postcopy-requests; touched ="
echo "bench: pages of the memwriter buffer, all rewritten each pass; dst = MW passes"
echo "bench: ended on the destination; blocktime = QEMU's postcopy-blocktime, ms)"
printf '%-10s %3s %7s %6s %7s %11s %6s %6s %7s %8s %9s %7s %4s\n' mode run total down pause \
    bytes net faults p50us p99us blocktime touched dst
while read -r m r t d b n f p50 p99 bt tc nd _ _ pz _; do
    printf '%-10s %3s %7s %6s %7s %11s %6s %6s %7s %8s %9s %7s %4s\n' "$m" "$r" "$t" "$d" "$pz" \
        "$b" "$n" "$f" "$p50" "$p99" "$bt" "$tc" "$nd"
done <"$res"

col() { awk -v m="$1" -v c="$2" '$1 == m { print $c }' "$res"; }
med() { # MODE COLUMN
    # shellcheck disable=SC2046
    median $(col "$1" "$2")
}
share() { # MODE COLUMN: median network faults / that column's pages, %
    awk -v m="$1" -v c="$2" '$1 == m && $6 ~ /^[0-9]+$/ && $c > 0 { printf "%.2f\n", 100 * $6 / $c }' "$res" |
        sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f\n", b / 1048576 }'; }

echo
echo "bench: medians ($BENCH_RUNS runs per mode; ratio = qlite/QEMU)"
printf '%-26s %7s %7s %6s %6s %6s %6s %7s %7s %6s %7s %7s %6s\n' "mode (q = qlite, Q = QEMU)" \
    "time q" "time Q" ratio "down q" "down Q" ratio "pause q" "pause Q" ratio "MiB q" "MiB Q" ratio
line() { # LABEL QLITE_MODE QEMU_MODE
    local tq tQ dq dQ pq pQ bq bQ
    tq=$(med "$2" 3) tQ=$(med "$3" 3) dq=$(med "$2" 4) dQ=$(med "$3" 4)
    pq=$(med "$2" 15) pQ=$(med "$3" 15)
    bq=$(mib "$(med "$2" 5)") bQ=$(mib "$(med "$3" 5)")
    printf '%-26s %7s %7s %6s %6s %6s %6s %7s %7s %6s %7s %7s %6s\n' "$1" "$tq" "$tQ" \
        "$(ratio "$tq" "$tQ")" "$dq" "$dQ" "$(ratio "$dq" "$dQ")" "$pq" "$pQ" "$(ratio "$pq" "$pQ")" \
        "$bq" "$bQ" "$(ratio "$bq" "$bQ")"
}
line "pre-copy" qlite-pre qemu-pre
line "post-copy, pre-paging on" qlite-pc qemu-pc
line "post-copy, pre-paging off" qlite-pc0 qemu-pc

echo
echo "bench: post-copy faults (medians): network-fault share = faults that waited"
echo "bench: on the network / pages the guest touched after the switch (the whole"
echo "bench: memwriter buffer: every page is rewritten each pass, >= 1 whole pass ran"
echo "bench: on the destination); missing = pages the destination lacked at the switch"
echo "bench: (qlite: pushed + requested; QEMU: postcopy-bytes / 4096), of-miss% = net /"
echo "bench: missing; p50/p99 = fault service time (QEMU 7.2: none), blocktime: QEMU's, ms"
printf '%-26s %6s %8s %7s %8s %8s %7s %8s %10s\n' mode "net" touched "share%" missing \
    "of-miss%" p50us p99us blocktime
for m in qlite-pc qlite-pc0 qemu-pc; do
    case $m in
    qlite-pc) l="qlite, pre-paging on (7)" ;;
    qlite-pc0) l="qlite, pre-paging off (0)" ;;
    qemu-pc) l="QEMU 7.2 post-copy" ;;
    esac
    printf '%-26s %6s %8s %7s %8s %8s %7s %8s %10s\n' "$l" "$(med $m 6)" "$(med $m 11)" \
        "$(share $m 11)" "$(med $m 16)" "$(share $m 16)" "$(med $m 8)" "$(med $m 9)" "$(med $m 10)"
done
echo
if ((fails)); then
    echo "bench: $fails run(s) FAILED (see above): not counted"
    exit 1
fi
echo "bench: all runs verified (MW sums exact, no corruption)"
