#!/bin/bash
# Exit-path benchmark (figures, never assertions), on /dev/kvm directly:
# what a VM exit handled in qlite costs
#   base        the tree before the profiler's hook in the vCPU loop
#   off         this tree, profiling off (the hook: one branch on a pointer)
#   on-1k       this tree, profiling on: timer method at 1 kHz (exit
#               accounting on every exit, and the samples)
# The probe (tests/kvm/bench_exits.c: a guest making N back-to-back PIO
# exits) is compiled the same way against each tree's libqlite; runs
# alternate; medians of the guest's TSC cycles per exit are compared.
#
# usage: tests/bench/exit-path.sh
#   BENCH_RUNS=N (default 9) runs per variant, BENCH_EXITS=N (default
#   200000) exits per run, BENCH_BASE=REV (default: the parent of the
#   commit that added the hook).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
runs=${BENCH_RUNS:-9}
exits=${BENCH_EXITS:-200000}
base_rev=${BENCH_BASE:-$(git -C "$root" log --format=%H -S profile_vcpu_run -- src/vcpu/vcpu.c | tail -n 1)^}
build=${QLITE_BUILD:-$root/build}
work=$(mktemp -d /tmp/qlite-exit-path.XXXXXX)
trap 'rm -rf "$work"' EXIT

[[ -w /dev/kvm ]] || { echo "bench: /dev/kvm is not usable"; exit 1; }
echo "bench: base $(git -C "$root" rev-parse --short "$base_rev") vs this tree ($(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo '+dirty')); $runs runs x $exits exits"
mkdir -p "$work/base"
git -C "$root" archive "$base_rev" | tar -x -C "$work/base"
meson setup "$work/base/build" "$work/base" >/dev/null
ninja -C "$work/base/build" src/libqlite.a >/dev/null
ninja -C "$build" src/libqlite.a tests/kvm/guest.elf >/dev/null

# probe TREE BUILD OUT: the same source and flags against either tree.
probe() {
    gcc -O2 -g -D_GNU_SOURCE -I"$1/include" -I"$2" -I"$root/tests/kvm" \
        "$root/tests/kvm/bench_exits.c" "$root/tests/kvm/harness.c" "$2/src/libqlite.a" \
        -lelf -ljson-c -lz -lpthread -o "$3"
}
probe "$work/base" "$work/base/build" "$work/probe-base"
probe "$root" "$build" "$work/probe-new"
export QLITE_TEST_GUEST=$build/tests/kvm/guest.elf

res=$work/results
for i in $(seq 1 "$runs"); do
    for v in base off on-1k; do
        case $v in
        base) out=$("$work/probe-base" "$exits") ;;
        off) out=$("$work/probe-new" "$exits") ;;
        on-1k) out=$("$work/probe-new" "$exits" --profile 1000) ;;
        esac
        echo "$v run=$i $out" | tee -a "$res"
    done
done

med() {
    awk -v v="$1" -v k="$2" '$1 == v { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' "$res" |
        sort -n | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); else print 0 }'
}
echo
echo "==== cost of one PIO exit handled in qlite (medians of $runs runs; guest TSC cycles and wall ns)"
b=$(med base cycles_per_exit)
for v in base off on-1k; do
    c=$(med "$v" cycles_per_exit)
    awk -v v="$v" -v c="$c" -v n="$(med "$v" ns_per_exit)" -v b="$b" 'BEGIN {
        printf "  %-6s %9.1f cycles %9.1f ns", v, c, n
        if (v != "base") printf "   %+6.2f%% vs base", 100 * (c / b - 1)
        printf "\n" }'
done
awk -v o="$(med off cycles_per_exit)" -v p="$(med on-1k cycles_per_exit)" 'BEGIN {
    printf "  profiling on (1 kHz) vs off: %+.2f%% per exit\n", 100 * (p / o - 1) }'
echo "reproduce: BENCH_RUNS=$runs BENCH_EXITS=$exits tests/bench/exit-path.sh"
