#!/bin/bash
# Profiler benchmark: figures, never assertions, in ONE KVM test-host boot.
#
#  1. Overhead: a Linux guest under qlite copies /dev/zero to /dev/null in
#     64 MiB chunks (a CPU-bound kernel workload) and prints dd's last line
#     per chunk; windows alternate between no profiling and `qlite profile`:
#     timer and kick methods at 1 kHz without live refresh (the sampling
#     alone), the timer at 1 kHz with the live table (1 s refresh, what an
#     interactive user runs) and the timer at 100 Hz. Throughput per window
#     is chunks / time between the first and last chunk line inside it
#     (lines stamped on arrival); per mode the median over windows; the
#     slowdown is against "off".
#  2. Accuracy: the kvm tests' known-split guest (70/30 between two
#     functions, ~40 % halted) profiled in the test host's nested KVM with
#     each method: the share of non-idle samples in the right function.
#
# usage (dev machine): tests/bench/profile.sh
#   BENCH_ROUNDS=N (default 6) rounds of the five windows,
#   BENCH_WINDOW=S (default 5) seconds per window,
#   BENCH_ACC_WINDOWS=N (default 4) accuracy windows per method.
#   QLITE_BUILD (default build/) is the build tree to take binaries from.
set -euo pipefail

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    root=$(cd "$(dirname "$0")/../.." && pwd)
    build=${QLITE_BUILD:-$root/build}
    ninja -C "$build" src/qlite tests/kvm/kvm-profile tests/kvm/guest.elf >/dev/null
    rounds=${BENCH_ROUNDS:-6} window=${BENCH_WINDOW:-5} acc=${BENCH_ACC_WINDOWS:-4}
    kvm_profile=$(realpath "$build/tests/kvm/kvm-profile")
    guest_elf=$(realpath "$build/tests/kvm/guest.elf")
    # shellcheck disable=SC2086
    exec "$root/tests/testhost/run.sh" --qlite "$build/src/qlite" \
        --timeout $((240 + rounds * 5 * (window + 4) + acc * 2 * 8)) \
        --bin "$kvm_profile" --bin "$guest_elf" \
        --env BENCH_KVM_PROFILE="$kvm_profile" --env BENCH_GUEST_ELF="$guest_elf" \
        --env BENCH_ROUNDS="$rounds" --env BENCH_WINDOW="$window" --env BENCH_ACC_WINDOWS="$acc" \
        ${QLITE_TESTHOST_ARGS:-} "$0" "$@"
fi

rounds=${BENCH_ROUNDS:-6}
window=${BENCH_WINDOW:-5}
acc_windows=${BENCH_ACC_WINDOWS:-4}
margin=0.3 # seconds dropped at each window edge
modes="off timer-1k kick-1k timer-1k-live timer-100"
# mode -> qlite profile arguments
mode_args() {
    case $1 in
    timer-1k) echo "--method timer --freq 1000 --refresh 0" ;;
    kick-1k) echo "--method kick --freq 1000 --refresh 0" ;;
    timer-1k-live) echo "--method timer --freq 1000 --refresh 1s" ;;
    timer-100) echo "--method timer --freq 100 --refresh 0" ;;
    esac
}
sock=/tmp/bench-profile.sock
fifo=/tmp/bench-profile.fifo
log=/tmp/bench-profile-console.log
wins=/tmp/bench-profile-windows
[[ -x $QLITE ]] || { echo "bench: no qlite binary at $QLITE"; exit 1; }

echo "bench: kernel $(cat /guest/VERSION); test host $(nproc) CPU(s); $rounds rounds of ($modes) x ${window}s"
rm -f "$sock" "$fifo" "$wins"
mkfifo "$fifo"
# Console lines stamped with the host time as they arrive.
while IFS= read -r line; do
    echo "$EPOCHREALTIME ${line%$'\r'}"
done <"$fifo" >"$log" &
reader=$!
workload='while :; do dd if=/dev/zero of=/dev/null bs=1M count=64 2>&1 | tail -n 1; done'
"$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD" --mem 256M --cpus 1 \
    --qmp "unix:$sock" --cmdline "console=ttyS0 quiet panic=-1 qlite.cmd=\"$workload\"" \
    </dev/null >"$fifo" 2>&1 &
vm=$!
for _ in $(seq 1 240); do grep -q 'records out' "$log" 2>/dev/null && break; sleep 0.5; done
if ! grep -q 'records out' "$log"; then
    echo "bench: the guest's workload did not start; console:"; sed 's/^/  | /' "$log"; exit 1
fi
sleep 2 # let it settle
for _ in $(seq 1 "$rounds"); do
    for m in $modes; do
        if [[ $m == off ]]; then
            t0=$EPOCHREALTIME
            sleep "$window"
        else
            # The window is the sampling itself: from the client's "sampling
            # for" line (after profile-start) for the duration; starting the
            # client and writing the outputs stay outside it.
            t0=
            # shellcheck disable=SC2046
            while IFS= read -r line; do
                [[ -z $t0 && $line == "profile: sampling for"* ]] && t0=$EPOCHREALTIME
                echo "$line"
            done < <("$QLITE" profile --qmp "$sock" --duration "${window}s" $(mode_args "$m") \
                --out "/tmp/bench-profile-$m" 2>&1) >"/tmp/bench-profile-$m.log"
            [[ -n $t0 ]] || { echo "bench: qlite profile ($m) failed:"; cat "/tmp/bench-profile-$m.log"; continue; }
        fi
        awk -v t="$t0" -v w="$window" -v m="$m" 'BEGIN { printf "%s %.6f %.6f\n", m, t, t + w }' >>"$wins"
    done
done
"$QLITE" quit --qmp "$sock" >/dev/null 2>&1 || true
wait "$vm" || true
wait "$reader" || true

# Per window: 64 MiB chunks completed between the first and the last chunk
# line inside [t0 + margin, t1 - margin].
awk -v margin="$margin" '
    FNR == NR { n++; mode[n] = $1; t0[n] = $2 + margin; t1[n] = $3 - margin; next }
    / records out$/ {
        for (w = 1; w <= n; w++)
            if ($1 >= t0[w] && $1 <= t1[w]) {
                if (!c[w]) first[w] = $1
                last[w] = $1; c[w]++
            }
    }
    END {
        for (w = 1; w <= n; w++)
            if (c[w] > 1) printf "%s %d %.2f %d\n", mode[w], w, (c[w] - 1) * 64 / (last[w] - first[w]), c[w] - 1
    }' "$wins" "$log" >/tmp/bench-profile.rates
echo
echo "==== throughput per window (MiB/s of dd in the guest)"
awk '{ printf "  window %2d %-5s %8.1f MiB/s (%d chunks)\n", $2, $1, $3, $4 }' /tmp/bench-profile.rates
med() { awk -v m="$1" '$1 == m { print $3 }' /tmp/bench-profile.rates | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print 0 }'; }
off=$(med off)
echo
echo "==== sampling overhead: dd throughput, medians over $rounds windows each (same run)"
for m in $modes; do
    v=$(med "$m")
    awk -v m="$m" -v v="$v" -v off="$off" -v a="$(mode_args "$m")" 'BEGIN {
        if (m == "off") printf "  %-14s %8.1f MiB/s\n", "off", v
        else printf "  %-14s %8.1f MiB/s  slowdown %6.2f%%   (%s)\n", m, v, (off > 0 ? 100 * (1 - v / off) : 0), a }'
done
for m in timer-1k kick-1k; do
    if [[ -s /tmp/bench-profile-$m/report.txt ]]; then
        echo "  last $m profile: $(grep -m1 'samples:' "/tmp/bench-profile-$m/report.txt")"
        grep -m1 'sampling:' "/tmp/bench-profile-$m/report.txt" | sed 's/^ */    /'
    fi
done

echo
echo "==== attribution accuracy: the known-split guest in nested KVM"
QLITE_TEST_GUEST=$BENCH_GUEST_ELF "$BENCH_KVM_PROFILE" --bench "$acc_windows" |
    sed -n '/^==== attribution/,$p'
echo
echo "reproduce: BENCH_ROUNDS=$rounds BENCH_WINDOW=$window BENCH_ACC_WINDOWS=$acc_windows tests/bench/profile.sh"
