#!/bin/bash
# Checkpoint/restore of a Linux guest (docs/checkpoint.md). The guest counts,
# printing COUNT i UP <uptime> and appending "line i" to a file on its
# virtio-blk data disk through an fd held open the whole time. It is
# checkpointed (--stop), killed with SIGKILL and restored, lazily and then
# eagerly from the same checkpoint (the disk put back in its checkpoint-time
# state first): the count goes on where it stopped, uptime goes on (no
# reboot), the file is intact in the guest and on the image after power-off
# (the power button, once the lazy fill is seen to finish).
# A disk whose referenced blocks changed is refused. An incremental
# checkpoint (taken while running, then --incremental --stop) restores too.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"

if [[ $QLITE_GUEST_VMM != qlite ]]; then
    echo "test-checkpoint: qlite's checkpoints only; nothing to do for $QLITE_GUEST_VMM"
    finish
    exit 0
fi
if [[ ! -f /guest/data.img ]]; then
    fail "no /guest/data.img (run-all.sh passes --guest-file data.img to the test host)"
    finish
fi

N=60 # iterations of the guest's counter, 0.1 s apart
# Reading the manifest's files puts disk blocks in the page cache (disk
# references in the checkpoint); fd 3 stays open across checkpoint and restore.
# shellcheck disable=SC2016 # $... expanded in the guest
gcmd='mount -t ext4 /dev/vda /mnt && cd /mnt && sha256sum -c -s MANIFEST.sha256'
gcmd+=' && echo CKPT-MANIFEST-OK && rm -f count.log && exec 3>>count.log && i=0'
gcmd+=" && while [ \$i -lt $N ]; do i=\$((i + 1)); read up _ </proc/uptime;"
# shellcheck disable=SC2016
gcmd+=' echo COUNT $i UP $up; echo line $i >&3; usleep 100000; done; exec 3>&-; sync'
gcmd+=" && seq 1 $N | sed 's/^/line /' | cmp - count.log && cd / && umount /mnt"
# Then wait for the power button (qlite powerdown), so that the host can
# query the restored VM for as long as it needs; the sleep bounds it.
gcmd+=' && echo CKPT-FILE-OK && sleep 120'
vm_boot_args 1 256 "qlite.cmd=\"$gcmd\""

# Last complete "COUNT i UP t" of a console: "i t".
last_count() { tr -d '\r' <"$1" | awk '/^COUNT [0-9]+ UP [0-9.]+$/ { c = $2; u = $4 } END { print c + 0, u + 0 }'; }
first_count() { tr -d '\r' <"$1" | awk '/^COUNT [0-9]+ UP [0-9.]+$/ { print $2, $4; exit } END { if (!NR) print "0 0" }'; }
# counts_continue FILE...: the COUNT lines of the consoles, joined (a line
# cut by the checkpoint joins up again), are 1..N in order with uptime rising.
counts_continue() {
    cat "$@" | tr -d '\r' | awk -v n="$N" '
        /^COUNT [0-9]+ UP [0-9.]+$/ {
            if ($2 != ++k || (k > 1 && $4 + 0 <= up)) bad = 1
            up = $4 + 0
        }
        END { exit bad || k != n }'
}
# host_file_ok IMG: after power-off, the guest's file on the image is whole.
host_file_ok() {
    local ok=1
    mkdir -p /mnt/check
    mount -o loop,ro -t ext4 "$1" /mnt/check || return 1
    seq 1 "$N" | sed 's/^/line /' | cmp -s - /mnt/check/count.log || ok=0
    umount /mnt/check
    [[ $ok == 1 ]]
}
json_int() { grep -o "\"$1\":[0-9]*" <<<"$2" | head -n1 | grep -o '[0-9]*$' || echo 0; }
# has_all TEXT RE...: TEXT matches every RE.
has_all() {
    local t=$1 r
    shift
    for r; do grep -q -- "$r" <<<"$t" || return 1; done
}
qmp_restore() { "$QLITE" qmp --qmp "$VM_SOCK" query-snapshot 2>&1 || true; }

# restore_and_check NAME DIR MODE IMG ORIG_LOG: restore DIR, then check the
# run is the original's continuation, then power it off with the power button.
restore_and_check() {
    local name=$1 dir=$2 mode=$3 img=$4 orig=$5 f0=$n_fail c0 u0 c1 u1 q i
    read -r c0 u0 < <(last_count "$orig")
    if ! vm_start "$name" --restore "$dir" --restore-mode "$mode"; then
        fail "$name: qlite run --restore started (stderr: $(head -c 300 "$VM_LOG.err" 2>/dev/null))"
        vm_wait_exit 30
        vm_dump_on_failure "$f0"
        return
    fi
    for ((i = 0; i < 25; i++)); do
        q=$(qmp_restore)
        grep -q '"to-running-ms"' <<<"$q" && break
        sleep 0.2
    done
    check "$name: query-snapshot reports a $mode restore with to-running-ms" \
        has_all "$q" "\"mode\":\"$mode\"" '"to-running-ms":[0-9]'
    check "$name: the guest finds its file intact and unmounts it" vm_wait_log '^CKPT-FILE-OK' 120
    if [[ $mode == lazy ]]; then
        # The prefetch thread fills the rest in the background.
        for ((i = 0; i < 150; i++)); do
            q=$(qmp_restore)
            grep -q '"done":true' <<<"$q" && break
            sleep 0.2
        done
        echo "     query-snapshot: $q"
        check "$name: lazy restore: the background fill finished (query-snapshot done, total-ms)" \
            has_all "$q" '"done":true' '"total-ms":[0-9]'
    fi
    check "$name: qlite powerdown" "$QLITE" powerdown --qmp "$VM_SOCK"
    vm_wait_exit 60
    read -r c1 u1 < <(first_count "$VM_LOG")
    echo "     checkpoint at COUNT $c0 (uptime $u0 s); restored run starts at COUNT $c1 (uptime $u1 s)"
    check "$name: no reboot (no QLITE-GUEST-READY, no kernel banner)" \
        sh -c "! grep -qa -e QLITE-GUEST-READY -e 'Linux version' '$VM_LOG'"
    check "$name: the count goes on from the checkpoint ($c0 -> $c1) to $N, uptime rising" \
        counts_continue "$orig" "$VM_LOG"
    check "$name: uptime goes on ($u0 s at the checkpoint, $u1 s after)" \
        awk -v a="$u0" -v b="$u1" 'BEGIN { exit !(a > 0 && b > a) }'
    check "$name: the guest shut down on the power button" grep -q QLITE-GUEST-POWERDOWN "$VM_LOG"
    check "$name: qlite exit status 0 after power-off (got $VM_RC)" test "$VM_RC" = 0
    check "$name: host: the file on the image after power-off is whole" host_file_ok "$img"
    [[ $n_fail -gt $f0 ]] && sed 's/^/     | stderr: /' "$VM_LOG.err"
    vm_dump_on_failure "$f0"
}

# ---- 1. checkpoint --stop, SIGKILL, restore lazily, then eagerly ---------------
img=/tmp/ckpt-data.img
dir=/tmp/ckpt-full
cp /guest/data.img "$img"
rm -rf "$dir"
f0=$n_fail
vm_start full "${VM_BOOT_ARGS[@]}" --disk "path=$img" || true
check "full: the guest counts" vm_wait_log '^COUNT 15 UP' 120
js=$("$QLITE" snapshot save --qmp "$VM_SOCK" "$dir" --stop --json 2>"$dir.err") || true
echo "     checkpoint: $js"
check "full: qlite snapshot save --stop completes" test -n "$js"
check "full: the VM stays paused after --stop" test "$("$QLITE" status --qmp "$VM_SOCK")" = paused
check "full: the checkpoint has disk references (pages.disk $(json_int disk "$js"))" \
    test "$(json_int disk "$js")" -gt 0
check "full: state.qst and memory.img in $dir" test -s "$dir/state.qst" -a -e "$dir/memory.img"
full_log=/tmp/$test_name-full-orig.log
vm_kill
cp "$VM_LOG" "$full_log"
check "full: the guest had not finished at the checkpoint" \
    sh -c "! grep -qa CKPT-FILE-OK '$full_log'"
[[ $n_fail -gt $f0 ]] && sed 's/^/     | /' "$dir.err" "$VM_LOG.err"
vm_dump_on_failure "$f0"

# Each restore needs the disk as it was at the checkpoint: keep a copy.
cp "$img" "$img.at-ckpt"
restore_and_check lazy "$dir" lazy "$img" "$full_log"
# Put back in place (same size, new mtime): every referenced block is re-hashed.
cp "$img.at-ckpt" "$img"
restore_and_check eager "$dir" eager "$img" "$full_log"

# ---- 2. a disk changed in referenced blocks is refused --------------------------
f0=$n_fail
bad=/tmp/ckpt-changed.img
cp "$img.at-ckpt" "$bad"
mkdir -p /mnt/check
if mount -o loop -t ext4 "$bad" /mnt/check; then
    # In place: the same blocks, which the guest's page cache refers to.
    dd if=/dev/urandom of=/mnt/check/blobs/random-1M.bin bs=64k count=16 conv=notrunc 2>/dev/null
    umount /mnt/check
    vm_start changed --restore "$dir" --disk "path=$bad" || true
    vm_wait_exit 30
    err=$(cat "$VM_LOG.err")
    echo "     stderr: $err"
    check "changed disk: restore refused, exit status 1 (got $VM_RC)" test "$VM_RC" = 1
    check "changed disk: the message names the disk and the differing blocks" \
        grep -q "disk 0 ($bad) changed since the checkpoint: [0-9]* of the [0-9]* blocks it refers to differ" <<<"$err"
    check "changed disk: the guest did not run" sh -c "! grep -qa COUNT '$VM_LOG'"
else
    fail "changed disk: loop-mount a copy of the image"
fi
vm_dump_on_failure "$f0"
rm -f "$bad" "$img.at-ckpt"

# ---- 3. incremental: checkpoint #1 running, #2 --incremental --stop, restore #2 -
img=/tmp/ckpt-inc.img
cp /guest/data.img "$img"
rm -rf /tmp/ckpt-inc1 /tmp/ckpt-inc2
f0=$n_fail
vm_start inc "${VM_BOOT_ARGS[@]}" --disk "path=$img" || true
check "inc: the guest counts" vm_wait_log '^COUNT 10 UP' 120
js1=$("$QLITE" snapshot save --qmp "$VM_SOCK" /tmp/ckpt-inc1 --json 2>/tmp/ckpt-inc1.err) || true
echo "     checkpoint #1: $js1"
check "inc: checkpoint #1 of the running VM completes" test -n "$js1"
check "inc: the VM runs on after checkpoint #1" test "$("$QLITE" status --qmp "$VM_SOCK")" = running
check "inc: the count goes on after checkpoint #1" vm_wait_log '^COUNT 25 UP' 60
js2=$("$QLITE" snapshot save --qmp "$VM_SOCK" /tmp/ckpt-inc2 --incremental --stop --json \
    2>/tmp/ckpt-inc2.err) || true
echo "     checkpoint #2: $js2"
check "inc: incremental checkpoint #2 completes" test -n "$js2"
check "inc: #2 takes pages from #1 (pages.parent $(json_int parent "$js2"))" \
    test "$(json_int parent "$js2")" -gt 0
check "inc: #2 writes less than #1 ($(json_int memory-bytes "$js2") < $(json_int memory-bytes "$js1") bytes)" \
    test "$(json_int memory-bytes "$js2")" -lt "$(json_int memory-bytes "$js1")"
inc_log=/tmp/$test_name-inc-orig.log
vm_kill
cp "$VM_LOG" "$inc_log"
[[ $n_fail -gt $f0 ]] && sed 's/^/     | /' /tmp/ckpt-inc1.err /tmp/ckpt-inc2.err "$VM_LOG.err"
vm_dump_on_failure "$f0"
restore_and_check inc-restore /tmp/ckpt-inc2 lazy "$img" "$inc_log"

rm -rf "$dir" /tmp/ckpt-inc1 /tmp/ckpt-inc2 /tmp/ckpt-data.img /tmp/ckpt-inc.img
finish
