#!/bin/bash
# Checkpoint benchmark, in ONE test-host boot (docs/checkpoint.md, "Figures"):
#  1. elision: a 512 MiB guest that read BENCH_FILES_MB of files from its
#     virtio-blk disk (page cache) is checkpointed with I/O-aware elision and
#     without (--no-elide); QEMU 7.2 saves the same guest on the same disk
#     (stop, migrate "exec:cat > FILE"). Bytes written and time for each.
#  2. restore: a guest of each size in BENCH_SIZES with BENCH_TOUCH_PCT% of
#     its RAM touched is checkpointed (--stop), killed, and restored lazily
#     and eagerly, BENCH_RUNS times each, alternating: time to vCPUs running
#     (query-snapshot to-running-ms), launch to the guest's first output, and
#     the lazy fill's total-ms.
# Figures, not assertions: absolute times in the test host (nested KVM under
# TCG, files on tmpfs) mean little; ratios from the same boot do.
#
# usage (dev machine): tests/bench/checkpoint.sh
#   BENCH_RUNS=N (default 3) restores per size and mode; BENCH_ELIDE_RUNS=N
#   (default 2) elision rounds (the order of the two checkpoints alternates);
#   BENCH_FILES_MB (default 150); BENCH_SIZES (default "256 2048", MiB);
#   BENCH_TOUCH_PCT (default 40); BENCH_TESTHOST_MEM (default 6144).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Before lib.sh, which has its own BENCH_RUNS default.
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_ELIDE_RUNS=${BENCH_ELIDE_RUNS:-2}
BENCH_FILES_MB=${BENCH_FILES_MB:-150}
BENCH_SIZES=${BENCH_SIZES:-256 2048}
BENCH_TOUCH_PCT=${BENCH_TOUCH_PCT:-40}
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    root=$(cd "$here/../.." && pwd)
    # shellcheck disable=SC2086
    exec "$root/tests/testhost/run.sh" --with-qemu --timeout "${BENCH_TIMEOUT:-3600}" \
        --smp "${BENCH_TESTHOST_SMP:-2}" --mem "${BENCH_TESTHOST_MEM:-6144}" --bin mke2fs \
        --env BENCH_RUNS="$BENCH_RUNS" --env BENCH_ELIDE_RUNS="$BENCH_ELIDE_RUNS" \
        --env BENCH_FILES_MB="$BENCH_FILES_MB" --env "BENCH_SIZES=$BENCH_SIZES" \
        --env BENCH_TOUCH_PCT="$BENCH_TOUCH_PCT" --env BENCH_QEMU_MACHINE="$BENCH_QEMU_MACHINE" \
        ${QLITE_TESTHOST_ARGS:-} "$0" "$@"
fi

# The default guest (busybox): the bench image's fio and iperf3 are not needed.
# shellcheck disable=SC2034 # read by qlite_base / qemu_base (lib.sh)
BENCH_INITRD=$GUEST_INITRD
[[ -x ${QLITE:-} ]] || { echo "bench: no qlite binary in the test host"; exit 1; }
work=/tmp/ckpt-bench
rm -rf "$work"
mkdir -p "$work"
res=$work/results
: >"$res"
fails=0

# ---- running a VMM in the background -------------------------------------------
# vmm_start LOG CMD...: CMD in the background, its console read through a FIFO
# and each line stamped with bash's $EPOCHREALTIME when read (as boot.sh
# does); T0 is taken just before the fork. Sets VMM_PID (a subshell around
# the VMM, so that bash prints no "Killed" line), READER_PID, T0.
vmm_start() {
    local log=$1 fifo=$1.fifo
    shift
    rm -f "$fifo" "$log"
    mkfifo "$fifo"
    echo "bench: $(date +%T) $*" >&2
    T0=$EPOCHREALTIME
    (
        timeout -k 5 "$BENCH_VM_TIMEOUT" "$@" </dev/null >"$fifo" 2>"$log.err"
        true
    ) 2>/dev/null &
    VMM_PID=$!
    (
        while IFS= read -r line; do echo "$EPOCHREALTIME ${line%$'\r'}"; done <"$fifo" >"$log"
    ) &
    READER_PID=$!
}
# wait_line LOG ERE SECONDS: prints the stamp of the first console line
# matching ERE; false on timeout or if the VMM exited without one.
wait_line() {
    local i l
    for ((i = 0; i < $3 * 20; i++)); do
        l=$(grep -m1 -E "^[0-9.]+ ($2)" "$1" 2>/dev/null || true)
        if [[ -n $l ]]; then echo "${l%% *}"; return 0; fi
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.05
    done
    return 1
}
# vmm_kill: SIGKILL the VMM (the subshell's child; its grandchild under a
# timeout(1) that forks, busybox's execs).
vmm_kill() {
    local p=$VMM_PID c i
    for ((i = 0; i < 3; i++)); do
        c=$(cat /proc/"$p"/task/*/children 2>/dev/null | awk '{ print $1; exit }')
        [[ -n $c ]] || break
        p=$c
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == timeout ]] || break
    done
    [[ $p == "$VMM_PID" ]] || kill -KILL "$p" 2>/dev/null || true
}
# vmm_end: wait for the VMM (killing it if still there after 30 s) and its reader.
vmm_end() {
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$VMM_PID" 2>/dev/null && vmm_kill
    wait "$VMM_PID" 2>/dev/null || true
    wait "$READER_PID" 2>/dev/null || true
}
vmm_fail() { # WHAT LOG
    echo "bench: FAILED: $1; console and stderr:"
    tail -n 40 "$2" | sed 's/^/  | /'
    sed 's/^/  | stderr: /' "$2.err" 2>/dev/null | tail -n 20
    fails=$((fails + 1))
}
qmp() { "$QLITE" qmp --qmp "$@"; }
# jnum KEY JSON: the first numeric value of "KEY" in JSON (- if none).
jnum() { grep -o "\"$1\": *[0-9.e+-]*" <<<"$2" | head -n1 | sed 's/.*: *//' | grep . || echo -; }
mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f\n", b / 1048576 }'; }

echo "bench: checkpoint: kernel $(cat /guest/VERSION); test host $(nproc) CPUs," \
    "$(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)"
echo "bench: qemu: $(qemu-system-x86_64 --version | head -n1), -M $BENCH_QEMU_MACHINE"

# ==== 1. elision ===================================================================
# The data disk: BENCH_FILES_MB files of 1 MiB of random bytes (no zero pages,
# nothing two files share), ext4 with 4 KiB blocks, built here once.
disk=$work/disk.img
stage=$work/stage
mkdir -p "$stage/files"
for ((i = 0; i < BENCH_FILES_MB; i++)); do
    head -c 1048576 /dev/urandom >"$stage/files/f$i"
done
truncate -s "$((BENCH_FILES_MB + 96))M" "$disk" # else mke2fs announces creating it
mke2fs -q -F -t ext4 -b 4096 -d "$stage" "$disk"
rm -rf "$stage"
echo "bench: elision: disk $disk: ext4, $((BENCH_FILES_MB + 96)) MiB, $BENCH_FILES_MB files of 1 MiB random"

ELIDE_MEM=512
# The guest reads every file (page cache), reports its memory, then idles.
gcmd='mount -o ro -t ext4 /dev/vda /mnt && cat /mnt/files/* >/dev/null'
gcmd+=' && grep -E ^Cached: /proc/meminfo && echo BENCH-CACHED && sleep 3600'
cmdline="$BENCH_CMDLINE_BASE qlite.cmd=\"$gcmd\""
# shellcheck disable=SC2034 # read by qlite_base / qemu_base
BENCH_MEM=$ELIDE_MEM
# shellcheck disable=SC2034
BENCH_CPUS=1
qlite_base "$cmdline"
qlite_cmd=("${QLITE_CMD[@]}" --disk "path=$disk")
qemu_base "$cmdline"
qemu_cmd=("${QEMU_CMD[@]}" -drive "file=$disk,if=none,id=d0,format=raw"
    -device "virtio-blk-pci,drive=d0")

# elide_qlite RUN: one boot, two checkpoints of the paused VM (elision on and
# off; which one goes first alternates with RUN).
elide_qlite() {
    local run=$1 log=$work/elide-qlite-$1.log sock=$work/qlite.sock order v js t0 t1 dir
    if ((run % 2)); then order="elide no-elide"; else order="no-elide elide"; fi
    rm -f "$sock"
    vmm_start "$log" "${qlite_cmd[@]}" --qmp "unix:$sock,server=on,wait=off"
    if ! wait_line "$log" BENCH-CACHED 900 >/dev/null; then
        vmm_fail "qlite elision run $run: the guest did not read its files" "$log"
        vmm_end
        return
    fi
    grep -o 'Cached: .*' "$log" | sed "s/^/bench: qlite run $run: guest /"
    for v in $order; do
        dir=$work/ckpt-$v
        rm -rf "$dir"
        local flags=(--stop --json)
        [[ $v == no-elide ]] && flags+=(--no-elide)
        t0=$EPOCHREALTIME
        js=$("$QLITE" snapshot save --qmp "$sock" "$dir" "${flags[@]}" 2>"$log.snap") || js=
        t1=$EPOCHREALTIME
        if [[ -z $js ]]; then
            vmm_fail "qlite snapshot save ${flags[*]}: $(cat "$log.snap")" "$log"
            continue
        fi
        echo "bench: qlite $v run $run: $js"
        # qlite-elide|qlite-no-elide run bytes memory-bytes duration-ms wall-ms data disk zero allocated-bytes
        echo "qlite-$v $run $(jnum bytes "$js") $(jnum memory-bytes "$js") $(jnum duration-ms "$js")" \
            "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }')" \
            "$(jnum data "$js") $(jnum disk "$js") $(jnum zero "$js")" \
            "$(($(du -sk "$dir" | cut -f1) * 1024))" >>"$res"
    done
    "$QLITE" quit --qmp "$sock" >/dev/null 2>&1 || true
    vmm_end
    rm -rf "$work"/ckpt-elide "$work"/ckpt-no-elide
}

# elide_qemu RUN: QEMU 7.2 saves the same guest the way `virsh save` does:
# stop, unlimited migration bandwidth, migrate to a file through exec:.
elide_qemu() {
    local run=$1 log=$work/elide-qemu-$1.log sock=$work/qemu.sock file=$work/qemu.state
    local t0 t1 st i total
    rm -f "$sock" "$file"
    vmm_start "$log" "${qemu_cmd[@]}" -qmp "unix:$sock,server=on,wait=off"
    if ! wait_line "$log" BENCH-CACHED 900 >/dev/null; then
        vmm_fail "QEMU elision run $run: the guest did not read its files" "$log"
        vmm_end
        return
    fi
    grep -o 'Cached: .*' "$log" | sed "s/^/bench: qemu run $run: guest /"
    qmp "$sock" stop >/dev/null
    qmp "$sock" migrate-set-parameters '{"max-bandwidth": 107374182400}' >/dev/null
    [[ $run == 1 ]] && echo "bench: qemu: max-bandwidth" \
        "$(jnum max-bandwidth "$(qmp "$sock" query-migrate-parameters)") bytes/s"
    t0=$EPOCHREALTIME
    qmp "$sock" migrate "{\"uri\": \"exec:cat > $file\"}" >/dev/null
    for ((i = 0; i < 6000; i++)); do
        st=$(qmp "$sock" query-migrate)
        grep -q '"status": *"\(completed\|failed\|cancelled\)"' <<<"$st" && break
        sleep 0.05
    done
    t1=$EPOCHREALTIME
    echo "bench: qemu run $run: $st"
    if ! grep -q '"status": *"completed"' <<<"$st"; then
        vmm_fail "QEMU migrate to $file did not complete" "$log"
    else
        total=$(jnum total-time "$st")
        echo "qemu $run $(stat -c %s "$file") - $total" \
            "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) * 1000 }') - - - -" >>"$res"
    fi
    qmp "$sock" quit >/dev/null 2>&1 || true
    vmm_end
    rm -f "$file"
}

echo "bench: elision: qlite: ${qlite_cmd[*]}"
echo "bench: elision: qemu:  ${qemu_cmd[*]}"
for ((r = 1; r <= BENCH_ELIDE_RUNS; r++)); do
    elide_qlite "$r"
    elide_qemu "$r"
done

# ==== 2. lazy vs eager restore ======================================================
# The guest fills BENCH_TOUCH_PCT% of its RAM (tmpfs; a random MiB repeated:
# no zero pages), then prints TICK <uptime> every 20 ms: after a restore the
# first TICK is the guest's first output.
# tick_uptime first|last LOG: the uptime on the first or last whole TICK line.
tick_uptime() {
    awk -v w="$1" '$2 == "TICK" && $3 ~ /^[0-9]+\.[0-9][0-9]$/ { u = $3; if (w == "first") exit }
        END { print u }' "$2"
}
restore_size() {
    local size=$1 fill=$(($1 * BENCH_TOUCH_PCT / 100)) log sock dir js r m modes t q i first up0 g
    log=$work/restore-$size-boot.log
    sock=$work/r.sock
    dir=$work/ckpt-$size
    # shellcheck disable=SC2016 # expanded in the guest
    local g='head -c 1048576 /dev/urandom >/tmp/r && i=0 && while [ $i -lt '"$fill"' ];'
    # shellcheck disable=SC2016
    g+=' do cat /tmp/r; i=$((i + 1)); done >/tmp/fill && echo BENCH-FILLED'
    # shellcheck disable=SC2016
    g+=' && while :; do read up _ </proc/uptime; echo TICK $up; usleep 20000; done'
    # shellcheck disable=SC2034 # read by qlite_base
    BENCH_MEM=$size
    qlite_base "$BENCH_CMDLINE_BASE qlite.cmd=\"$g\""
    rm -rf "$dir" "$sock"
    vmm_start "$log" "${QLITE_CMD[@]}" --qmp "unix:$sock,server=on,wait=off"
    if ! wait_line "$log" TICK 1800 >/dev/null; then
        vmm_fail "restore bench: the ${size} MiB guest did not fill ${fill} MiB" "$log"
        vmm_end
        return
    fi
    js=$("$QLITE" snapshot save --qmp "$sock" "$dir" --stop --json 2>"$log.snap") || js=
    echo "bench: restore: ${size} MiB guest, ${fill} MiB touched: checkpoint $js"
    vmm_kill
    vmm_end
    if [[ -z $js ]]; then
        vmm_fail "restore bench: checkpoint of the ${size} MiB guest: $(cat "$log.snap")" "$log"
        return
    fi
    echo "ckpt $size $(jnum bytes "$js") $(jnum data "$js")" >>"$res"
    # The guest's uptime at the checkpoint: its clock is held until the
    # restored vCPUs run, so the first TICK after a restore tells how long
    # the guest ran (by its own clock) before that output.
    up0=$(tick_uptime last "$log")
    for ((r = 1; r <= BENCH_RUNS; r++)); do
        if ((r % 2)); then modes="lazy eager"; else modes="eager lazy"; fi
        for m in $modes; do
            log=$work/restore-$size-$m-$r.log
            rm -f "$sock"
            vmm_start "$log" "$QLITE" run --restore "$dir" --restore-mode "$m" \
                --qmp "unix:$sock,server=on,wait=off"
            if ! first=$(wait_line "$log" TICK 300); then
                vmm_fail "restore bench: $m restore of the ${size} MiB guest: no output" "$log"
                vmm_end
                continue
            fi
            t=$(awk -v a="$T0" -v b="$first" 'BEGIN { printf "%.1f", (b - a) * 1000 }')
            for ((i = 0; i < 1200; i++)); do
                q=$(qmp "$sock" query-snapshot 2>&1) || true
                grep -q '"done":true' <<<"$q" && break
                sleep 0.1
            done
            g=$(awk -v a="$up0" -v b="$(tick_uptime first "$log")" \
                'BEGIN { if (a == "" || b == "") print "-"; else printf "%.0f", (b - a) * 1000 }')
            echo "bench: restore ${size} MiB $m run $r: first output after ${t} ms" \
                "(guest clock +${g} ms); $q"
            # restore SIZE MODE RUN to-running-ms first-output-ms total-ms faults
            #   prefetched guest-ms fault-p50-us fault-p99-us
            echo "restore $size $m $r $(jnum to-running-ms "$q") $t $(jnum total-ms "$q")" \
                "$(jnum faults "$q") $(jnum prefetched "$q") $g" \
                "$(jnum fault-p50-us "$q") $(jnum fault-p99-us "$q")" >>"$res"
            qmp "$sock" quit >/dev/null 2>&1 || vmm_kill
            vmm_end
        done
    done
    rm -rf "$dir"
}

for s in $BENCH_SIZES; do
    restore_size "$s"
done

# ==== tables =========================================================================
# col KEY FIELD [MATCH...]: median of FIELD over the result lines whose
# first fields are KEY MATCH... (one decimal at most).
col() {
    local key=$1 f=$2
    shift 2
    # shellcheck disable=SC2046
    median $(awk -v k="$key" -v f="$f" -v m="$*" '
        BEGIN { n = split(m, mm, " ") }
        $1 == k { for (i = 1; i <= n; i++) if ($(i + 1) != mm[i]) next; print $f }' "$res") |
        awk '/^[0-9]+$/ || $0 == "-" { print; next } { printf "%.1f\n", $1 }'
}
pct_less() { # A B: how much less A is than B, in %
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.1f%%\n", (1 - a / b) * 100 }'
}
echo
echo "==== elision: ${ELIDE_MEM} MiB guest, 1 vCPU, after reading ${BENCH_FILES_MB} MiB of files from"
echo "     its virtio-blk disk; medians over $BENCH_ELIDE_RUNS runs (test host, nested KVM, files on tmpfs)"
printf '%-17s %12s %12s %10s %10s %10s %11s %9s\n' variant written_MiB memory_MiB data_pages \
    disk_refs zero_pages duration_ms wall_ms
for v in qlite-elide qlite-no-elide qemu; do
    printf '%-17s %12s %12s %10s %10s %10s %11s %9s\n' "$v" "$(mib "$(col "$v" 3)")" \
        "$(mib "$(col "$v" 4)")" "$(col "$v" 7)" "$(col "$v" 8)" "$(col "$v" 9)" \
        "$(col "$v" 5)" "$(col "$v" 6)"
done
echo "elision vs --no-elide: $(pct_less "$(col qlite-elide 3)" "$(col qlite-no-elide 3)") less data," \
    "$(pct_less "$(col qlite-elide 5)" "$(col qlite-no-elide 5)") less time (duration_ms)"
echo "ratio qlite (elision) / QEMU: size $(ratio "$(col qlite-elide 3)" "$(col qemu 3)")," \
    "time $(ratio "$(col qlite-elide 5)" "$(col qemu 5)") (duration_ms vs QEMU total-time)," \
    "wall $(ratio "$(col qlite-elide 6)" "$(col qemu 6)")"
echo "ratio qlite (--no-elide) / QEMU: size $(ratio "$(col qlite-no-elide 3)" "$(col qemu 3)")," \
    "time $(ratio "$(col qlite-no-elide 5)" "$(col qemu 5)")"
echo "written = qlite: SNAPSHOT_COMPLETED bytes (state.qst + memory.img data); QEMU: size of the"
echo "  migration stream file. duration_ms = qlite: pause to files renamed; QEMU: query-migrate"
echo "  total-time. wall_ms = the client command (qlite snapshot save / QEMU migrate to completed)."
echo
echo "==== restore: guest with ${BENCH_TOUCH_PCT}% of RAM touched, checkpoint --stop, killed, then"
echo "     qlite run --restore; medians over $BENCH_RUNS runs per mode"
printf '%-5s %-5s %8s %13s %15s %8s %9s %6s %10s %9s %9s\n' MiB mode ckpt_MiB to_running_ms \
    first_output_ms guest_ms total_ms faults prefetched fault_p50 fault_p99
for s in $BENCH_SIZES; do
    for m in lazy eager; do
        printf '%-5s %-5s %8s %13s %15s %8s %9s %6s %10s %9s %9s\n' "$s" "$m" \
            "$(mib "$(col ckpt 3 "$s")")" "$(col restore 5 "$s" "$m")" "$(col restore 6 "$s" "$m")" \
            "$(col restore 10 "$s" "$m")" "$(col restore 7 "$s" "$m")" "$(col restore 8 "$s" "$m")" \
            "$(col restore 9 "$s" "$m")" "$(col restore 11 "$s" "$m")" "$(col restore 12 "$s" "$m")"
    done
    echo "${s} MiB: lazy/eager to_running $(ratio "$(col restore 5 "$s" lazy)" "$(col restore 5 "$s" eager)")," \
        "first_output $(ratio "$(col restore 6 "$s" lazy)" "$(col restore 6 "$s" eager)")"
done
echo "to_running_ms = query-snapshot restore.to-running-ms: from the start of the restore (VM"
echo "  created, checkpoint not yet read) to the vCPUs' first run; first_output_ms = launch of"
echo "  qlite run --restore to the guest's first console line (20 ms ticker; includes process"
echo "  start and VM creation); guest_ms = the guest's uptime on that line minus at the"
echo "  checkpoint (how long it ran before printing); total_ms = to all of memory in place"
echo "  (lazy: prefetch done); faults, prefetched = pages the lazy engine filled on a fault,"
echo "  ahead of one; fault_p50/p99 = its service time per fault (us), event read to resolved."
echo "reproduce: BENCH_RUNS=$BENCH_RUNS BENCH_ELIDE_RUNS=$BENCH_ELIDE_RUNS BENCH_FILES_MB=$BENCH_FILES_MB" \
    "BENCH_SIZES=\"$BENCH_SIZES\" tests/bench/checkpoint.sh"
rm -rf "$work"
[[ $fails -eq 0 ]]
