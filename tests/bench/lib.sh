# shellcheck shell=bash
# Helpers shared by the I/O benchmarks (blk.sh, net.sh). Sourced; the
# functions below run inside the KVM test host, except bench_reexec.
#
# Both benchmarks boot the bench guest (guest-images/build.sh --bench:
# the default initramfs plus fio and iperf3) with qlite and with QEMU 7.2,
# alternating, in ONE test-host boot, and print medians and qlite/QEMU ratios.
# qlite runs with the same options as a plain boot plus its device option
# (--disk / --net); QEMU uses the PCI transport too (virtio-*-pci on q35).

BENCH_RUNS=${BENCH_RUNS:-2}
BENCH_MEM=${BENCH_MEM:-512}
BENCH_CPUS=${BENCH_CPUS:-1}
# q35 (SeaBIOS) by default: QEMU's virtio-*-pci needs a PCI machine, and
# microvm,pcie=on has no legacy PCI config ports. Override to compare.
BENCH_QEMU_MACHINE=${BENCH_QEMU_MACHINE:-q35}
BENCH_VM_TIMEOUT=${BENCH_VM_TIMEOUT:-600}
BENCH_INITRD=/guest/initrd-bench.img
# shellcheck disable=SC2034 # used by the scripts that source this
BENCH_CMDLINE_BASE="console=ttyS0 quiet panic=-1"

# bench_reexec SCRIPT TIMEOUT RUNNER_ARGS... -- SCRIPT_ARGS...: on the dev
# machine, build the bench guest and re-run SCRIPT in the test host.
bench_reexec() {
    local script=$1 timeout_s=$2 root
    shift 2
    root=$(cd "$(dirname "$script")/../.." && pwd)
    local runner=()
    while [[ $# -gt 0 && $1 != -- ]]; do runner+=("$1"); shift; done
    [[ ${1:-} == -- ]] && shift
    "$root/guest-images/build.sh" --bench
    # shellcheck disable=SC2086
    exec "$root/tests/testhost/run.sh" --with-qemu --timeout "$timeout_s" \
        --smp "${BENCH_TESTHOST_SMP:-2}" --mem "${BENCH_TESTHOST_MEM:-3072}" \
        --guest-file initrd-bench.img "${runner[@]}" \
        --env BENCH_RUNS="$BENCH_RUNS" --env BENCH_MEM="$BENCH_MEM" \
        --env BENCH_CPUS="$BENCH_CPUS" --env BENCH_QEMU_MACHINE="$BENCH_QEMU_MACHINE" \
        ${QLITE_TESTHOST_ARGS:-} "$script" "$@"
}

# qlite_supports OPTION: does `qlite run` know OPTION (e.g. --disk)? Sets
# QLITE_MISSING to the reason when not.
qlite_supports() {
    QLITE_MISSING=
    if [[ ! -x ${QLITE:-} ]]; then
        QLITE_MISSING="no qlite binary in the test host"
    elif ! "$QLITE" run --help 2>&1 | grep -q -- "$1"; then
        QLITE_MISSING="qlite run has no $1 option yet"
    fi
    [[ -z $QLITE_MISSING ]]
}

# The base commands both VMMs boot the bench guest with; the caller adds
# its device options. $1: kernel command line.
# shellcheck disable=SC2034 # QLITE_CMD / QEMU_CMD are the results
qlite_base() {
    QLITE_CMD=("$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$BENCH_INITRD"
        --cmdline "$1" --mem "${BENCH_MEM}M" --cpus "$BENCH_CPUS" --no-reboot)
}
# shellcheck disable=SC2034
qemu_base() {
    QEMU_CMD=(qemu-system-x86_64 -M "$BENCH_QEMU_MACHINE" -enable-kvm -cpu host
        -m "$BENCH_MEM" -smp "$BENCH_CPUS" -nodefaults -no-user-config -display none
        -serial stdio -no-reboot -kernel "$GUEST_KERNEL" -initrd "$BENCH_INITRD"
        -append "$1")
}

# guest_run LOG CMD...: boot to power-off under a timeout, console (CRs
# stripped) to LOG; returns the VMM's exit status.
guest_run() {
    local log=$1 rc
    shift
    echo "bench: $(date +%T) $*" >&2
    set +e
    timeout -k 5 "$BENCH_VM_TIMEOUT" "$@" </dev/null 2>&1 | tr -d '\r' >"$log"
    rc=${PIPESTATUS[0]}
    set -e
    return "$rc"
}

# Output of the guest's qlite.cmd (between the init's markers).
guest_cmd_output() {
    awk '/^QLITE-CMD-END/ { on = 0 } on { print } /^QLITE-CMD-BEGIN$/ { on = 1 }' "$1"
}

# median VALUES...: prints the median, or - when there are none.
median() {
    printf '%s\n' "$@" | awk '/^[0-9.]+$/' | sort -g |
        awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A/B with 3 decimals, or - if either is missing.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.3f\n", a / b }'
}
