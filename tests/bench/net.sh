#!/bin/bash
# Network benchmark: iperf3 from the guest to the test host over a tap, with
# a virtio-net PCI device: qlite (--net tap=NAME) vs QEMU 7.2 (-netdev
# tap,vhost=off + virtio-net-pci: userspace virtio-net on both sides),
# alternating, in ONE test-host boot. Prints Gbit/s per direction, medians
# over the runs, and the ratio qlite/QEMU. Figures, not assertions.
#
# usage (dev machine): tests/bench/net.sh
#   BENCH_RUNS=N (default 2) boots per VMM; BENCH_SECONDS=S (default 10)
#   per iperf3 run; BENCH_MEM, BENCH_CPUS (guest, default 512 MiB, 1 vCPU);
#   BENCH_QEMU_MACHINE (default q35).
#
# The tap is created persistent before each boot (busybox tunctl) and given
# the host address, so both VMMs attach to a configured interface; the
# test host runs `iperf3 -s` on that address.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/bench/lib.sh
. "$here/lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-10}

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    bench_reexec "$0" $((600 + BENCH_RUNS * 2 * (2 * BENCH_SECONDS + 120))) \
        --bin iperf3 --env BENCH_SECONDS="$BENCH_SECONDS" -- "$@"
fi

tap=qtap0
host_ip=10.0.2.1
guest_ip=10.0.2.15
mac=52:54:00:12:34:56
# Guest: address eth0, then guest -> host (the figure) and host -> guest (-R).
gcmd="ip addr add $guest_ip/24 dev eth0 && ip link set eth0 up"
gcmd+=" && echo BENCH-DIR tx && iperf3 -c $host_ip -t $BENCH_SECONDS -f m"
gcmd+=" && echo BENCH-DIR rx && iperf3 -c $host_ip -t $BENCH_SECONDS -f m -R"
cmdline="$BENCH_CMDLINE_BASE qlite.cmd=\"$gcmd\""

qlite_base "$cmdline"
qlite_cmd=("${QLITE_CMD[@]}" --net "tap=$tap,mac=$mac")
qemu_base "$cmdline"
qemu_cmd=("${QEMU_CMD[@]}"
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off"
    -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=")

vmms=(qemu)
if qlite_supports --net; then
    vmms=(qlite qemu)
fi

tap_up() {
    tunctl -t "$tap" >/dev/null
    ip addr add "$host_ip/24" dev "$tap"
    ip link set "$tap" up
}
tap_down() { tunctl -d "$tap" >/dev/null 2>&1 || true; }

echo "bench: net: $BENCH_RUNS runs per VMM, alternating; guest ${BENCH_MEM}M, $BENCH_CPUS vCPU;" \
    "kernel $(cat /guest/VERSION); test host $(nproc) CPUs"
echo "bench: guest: $gcmd"
echo "bench: qlite: ${qlite_cmd[*]}"
echo "bench: qemu:  $(qemu-system-x86_64 --version | head -n1): ${qemu_cmd[*]}"
[[ -n ${QLITE_MISSING:-} ]] && echo "bench: qlite: not available ($QLITE_MISSING)"

res=/tmp/bench-net.results
: >"$res"
fails=0
for i in $(seq 1 "$BENCH_RUNS"); do
    for v in "${vmms[@]}"; do
        log=/tmp/bench-net-$v-$i.log
        if [[ $v == qlite ]]; then cmd=("${qlite_cmd[@]}"); else cmd=("${qemu_cmd[@]}"); fi
        tap_up
        iperf3 -s -B "$host_ip" >/tmp/iperf3-server.log 2>&1 &
        srv=$!
        rc=0
        guest_run "$log" "${cmd[@]}" || rc=$?
        kill "$srv" 2>/dev/null || true
        wait "$srv" 2>/dev/null || true
        tap_down
        # The receiver's summary line of each direction, in Mbit/s.
        guest_cmd_output "$log" | awk -v v="$v" -v i="$i" '
            $1 == "BENCH-DIR" { dir = $2 }
            / receiver$/ { for (k = 1; k < NF; k++) if ($(k + 1) == "Mbits/sec")
                printf "%s %d %s %.3f\n", v, i, dir, $k / 1000 }' | tee -a "$res"
        n=$(awk -v v="$v" -v i="$i" '$1 == v && $2 == i' "$res" | wc -l)
        if [[ $rc != 0 || $n != 2 ]]; then
            echo "bench: $v run $i: exit status $rc, $n of 2 iperf3 results; console:"
            sed 's/^/  | /' "$log" | tail -n 60
            fails=$((fails + 1))
        fi
    done
done

col() { # VMM DIR -> median Gbit/s
    # shellcheck disable=SC2046
    median $(awk -v v="$1" -v d="$2" '$1 == v && $3 == d { print $4 }' "$res")
}
echo
echo "==== network benchmark: iperf3 over tap, virtio-net PCI, no vhost, ${BENCH_SECONDS}s per" \
    "direction; medians over $BENCH_RUNS runs (test host, nested KVM)"
[[ -n ${QLITE_MISSING:-} ]] && echo "qlite: not available ($QLITE_MISSING)"
printf '%-22s %12s %12s %8s\n' direction qlite_Gbit/s QEMU_Gbit/s ratio
for d in tx rx; do
    label="guest->host"
    [[ $d == rx ]] && label="host->guest (-R)"
    q=$(col qlite $d); e=$(col qemu $d)
    printf '%-22s %12s %12s %8s\n' "$label" "$q" "$e" "$(ratio "$q" "$e")"
done
echo "ratio = qlite/QEMU (higher is better for qlite); - = not measured"
echo "reproduce: BENCH_RUNS=$BENCH_RUNS BENCH_SECONDS=$BENCH_SECONDS tests/bench/net.sh"
[[ $fails -eq 0 ]]
