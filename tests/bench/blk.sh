#!/bin/bash
# Block benchmark: fio in the guest against a virtio-blk PCI disk backed by
# the same raw file, qlite (--disk path=FILE,direct=on: io_uring, O_DIRECT)
# vs QEMU 7.2 (-drive ...,aio=io_uring,cache=none + virtio-blk-pci),
# alternating, in ONE test-host boot. Prints IOPS and MiB/s per job, medians
# over the runs, and the ratio qlite/QEMU. Figures, not assertions.
#
# usage (dev machine): tests/bench/blk.sh
#   BENCH_RUNS=N (default 2) boots per VMM; BENCH_RUNTIME=S (default 10);
#   BENCH_WARMUP=N (default 1) uncounted boots first
#   seconds per fio job after BENCH_RAMP=S (default 2); BENCH_DISK_MB
#   (default 512); BENCH_MEM, BENCH_CPUS (guest, default 512 MiB, 1 vCPU);
#   BENCH_QEMU_MACHINE (default q35).
#
# The raw file lives on ext4 on a RAM block device (brd) in the test host:
# O_DIRECT-capable (the test host's tmpfs is not), with no emulated disk
# under it, so the VMMs' I/O paths are what differs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"

BENCH_RUNTIME=${BENCH_RUNTIME:-10}
BENCH_RAMP=${BENCH_RAMP:-2}
BENCH_DISK_MB=${BENCH_DISK_MB:-512}

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    bench_reexec "$0" $((600 + (BENCH_RUNS * 2 + ${BENCH_WARMUP:-1}) * (6 * (BENCH_RUNTIME + BENCH_RAMP) + 120))) \
        --bin mke2fs --env BENCH_WARMUP="${BENCH_WARMUP:-1}" \
        --env BENCH_RUNTIME="$BENCH_RUNTIME" --env BENCH_RAMP="$BENCH_RAMP" \
        --env BENCH_DISK_MB="$BENCH_DISK_MB" -- "$@"
fi

# ---- the disk: ext4 on /dev/ram0, one raw file, written in full ------------
# brd loads at boot with its defaults (16 small disks); reload it sized.
rmmod brd 2>/dev/null || true
insmod "$(find /lib/modules -name 'brd.ko*' | head -n1)" rd_nr=1 \
    rd_size=$(((BENCH_DISK_MB + 64) * 1024))
mke2fs -q -F -t ext4 /dev/ram0
mkdir -p /mnt/bench
mount -t ext4 /dev/ram0 /mnt/bench
disk=/mnt/bench/disk.raw
# Real blocks (not a sparse file or unwritten extents), so reads hit the device.
dd if=/dev/zero of="$disk" bs=1M count="$BENCH_DISK_MB" conv=fsync 2>/dev/null

# ---- fio jobs (one guest boot runs them all, one after the other) ----------
jobs=(
    "randread-4k-qd1 randread 4k 1"
    "randread-4k-qd32 randread 4k 32"
    "randwrite-4k-qd1 randwrite 4k 1"
    "randwrite-4k-qd32 randwrite 4k 32"
    "read-128k-qd32 read 128k 32"
    "write-128k-qd32 write 128k 32"
)
fio_args="--output-format=terse --terse-version=3 --filename=/dev/vda --direct=1"
fio_args+=" --ioengine=libaio --time_based --runtime=$BENCH_RUNTIME --ramp_time=$BENCH_RAMP"
fio_args+=" --randrepeat=1 --norandommap"
for j in "${jobs[@]}"; do
    read -r name rw bs qd <<<"$j"
    fio_args+=" --name=$name --stonewall --rw=$rw --bs=$bs --iodepth=$qd"
done
# qlite.cmd cannot hold double quotes; the fio arguments need none.
cmdline="$BENCH_CMDLINE_BASE qlite.cmd=\"fio $fio_args\""

qlite_base "$cmdline"
qlite_cmd=("${QLITE_CMD[@]}" --disk "path=$disk,direct=on")
qemu_base "$cmdline"
qemu_cmd=("${QEMU_CMD[@]}"
    -drive "file=$disk,if=none,id=d0,format=raw,aio=io_uring,cache=none"
    -device "virtio-blk-pci,drive=d0")

vmms=(qemu)
if qlite_supports --disk; then
    vmms=(qlite qemu)
fi

echo "bench: blk: $BENCH_RUNS runs per VMM, alternating; guest ${BENCH_MEM}M, $BENCH_CPUS vCPU;" \
    "kernel $(cat /guest/VERSION); test host $(nproc) CPUs"
echo "bench: disk: $disk, ${BENCH_DISK_MB} MiB raw on ext4 on brd (/dev/ram0)"
echo "bench: fio $fio_args"
echo "bench: qlite: ${qlite_cmd[*]}"
echo "bench: qemu:  $(qemu-system-x86_64 --version | head -n1): ${qemu_cmd[*]}"
[[ -n ${QLITE_MISSING:-} ]] && echo "bench: qlite: not available ($QLITE_MISSING)"

res=/tmp/bench-blk.results
: >"$res"
fails=0
# The first guest a fresh test host boots runs cold (measured: qlite's
# randwrite-4k-qd1 at 775 IOPS first, 1772 the next time, QEMU 1551/1423):
# BENCH_WARMUP uncounted boots go first, and the order alternates between
# runs, so that neither VMM always goes first.
for ((w = 1; w <= ${BENCH_WARMUP:-1}; w++)); do
    v=${vmms[$(((w - 1) % ${#vmms[@]}))]}
    if [[ $v == qlite ]]; then cmd=("${qlite_cmd[@]}"); else cmd=("${qemu_cmd[@]}"); fi
    echo "bench: warm-up boot $w ($v), not counted"
    guest_run "/tmp/bench-blk-warmup-$w.log" "${cmd[@]}" || true
done
for i in $(seq 1 "$BENCH_RUNS"); do
    order=("${vmms[@]}")
    if ((i % 2 == 0 && ${#vmms[@]} == 2)); then order=("${vmms[1]}" "${vmms[0]}"); fi
    for v in "${order[@]}"; do
        log=/tmp/bench-blk-$v-$i.log
        if [[ $v == qlite ]]; then cmd=("${qlite_cmd[@]}"); else cmd=("${qemu_cmd[@]}"); fi
        rc=0
        guest_run "$log" "${cmd[@]}" || rc=$?
        # terse v3: 3 job name; read 7 KiB/s, 8 IOPS; write 48 KiB/s, 49 IOPS.
        guest_cmd_output "$log" | awk -F';' -v v="$v" -v i="$i" '
            $1 == "3" && $2 ~ /^fio-/ {
                bw = $7 + $48; iops = $8 + $49
                printf "%s %d %s %.0f %.1f\n", v, i, $3, iops, bw / 1024
            }' | tee -a "$res"
        n=$(awk -v v="$v" -v i="$i" '$1 == v && $2 == i' "$res" | wc -l)
        if [[ $rc != 0 || $n != "${#jobs[@]}" ]]; then
            echo "bench: $v run $i: exit status $rc, $n of ${#jobs[@]} fio results; console:"
            sed 's/^/  | /' "$log" | tail -n 60
            fails=$((fails + 1))
        fi
    done
done

col() { # VMM JOB FIELD(4 iops, 5 MiB/s) -> median over runs
    # shellcheck disable=SC2046
    median $(awk -v v="$1" -v j="$2" -v f="$3" '$1 == v && $3 == j { print $f }' "$res")
}
echo
echo "==== block benchmark: fio in the guest, libaio, direct=1, ${BENCH_RUNTIME}s per job;" \
    "medians over $BENCH_RUNS runs (test host, nested KVM)"
[[ -n ${QLITE_MISSING:-} ]] && echo "qlite: not available ($QLITE_MISSING)"
printf '%-18s %11s %11s %11s %11s %9s %9s\n' job qlite_IOPS qlite_MiB/s QEMU_IOPS QEMU_MiB/s \
    IOPS_ratio MiB_ratio
for j in "${jobs[@]}"; do
    read -r name _ <<<"$j"
    qi=$(col qlite "$name" 4); qb=$(col qlite "$name" 5)
    ei=$(col qemu "$name" 4); eb=$(col qemu "$name" 5)
    printf '%-18s %11s %11s %11s %11s %9s %9s\n' "$name" "$qi" "$qb" "$ei" "$eb" \
        "$(ratio "$qi" "$ei")" "$(ratio "$qb" "$eb")"
done
echo "ratio = qlite/QEMU (higher is better for qlite); - = not measured"
echo "reproduce: BENCH_RUNS=$BENCH_RUNS BENCH_RUNTIME=$BENCH_RUNTIME tests/bench/blk.sh"
umount /mnt/bench
[[ $fails -eq 0 ]]
