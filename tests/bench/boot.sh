#!/bin/bash
# Boot benchmark: qlite vs QEMU 7.2 microvm, same kernel, initramfs, cmdline,
# 256 MiB, 1 vCPU, alternating, in ONE test-host boot. Prints per-run and
# median boot-to-marker times, the qlite/QEMU ratio and each VMM's memory
# overhead after boot. Figures, not assertions: absolute times in the test
# host mean nothing, ratios from the same boot do.
#
# usage (dev machine): tests/bench/boot.sh
#   BENCH_RUNS=N (default 5) runs per VMM; BENCH_QEMU_MEMFD=0 drops the
#   memfd-backed QEMU variant.
set -euo pipefail

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    runs=${BENCH_RUNS:-5}
    # shellcheck disable=SC2086
    exec "$(dirname "$0")/../testhost/run.sh" --with-qemu --timeout $((300 + runs * 90)) \
        --env BENCH_RUNS="$runs" --env BENCH_QEMU_MEMFD="${BENCH_QEMU_MEMFD:-1}" \
        ${QLITE_TESTHOST_ARGS:-} "$0" "$@"
fi

runs=${BENCH_RUNS:-5}
mem=256
cpus=1
# The guest prints its uptime, then sleeps so memory is sampled at rest.
cmdline='console=ttyS0 quiet panic=-1 qlite.cmd="cat /proc/uptime; sleep 3"'
sample_after=1.5   # seconds after the marker

qlite_cmd=("$QLITE" run --kernel "$GUEST_KERNEL" --initrd "$GUEST_INITRD"
    --cmdline "$cmdline" --mem "${mem}M" --cpus "$cpus")
qemu_common=(-enable-kvm -cpu host -m "$mem" -smp "$cpus"
    -nodefaults -no-user-config -display none -serial stdio -no-reboot
    -kernel "$GUEST_KERNEL" -initrd "$GUEST_INITRD" -append "$cmdline")
# The timing reference: QEMU as users run it (anonymous guest RAM).
qemu_cmd=(qemu-system-x86_64 -M microvm "${qemu_common[@]}")
# The memory reference: guest RAM in a memfd like qlite's, so VmRSS - RssShmem
# compares like with like.
qemu_memfd_cmd=(qemu-system-x86_64 -M "microvm,memory-backend=ram"
    -object "memory-backend-memfd,id=ram,size=${mem}M" "${qemu_common[@]}")
vmms="qlite qemu"
[[ ${BENCH_QEMU_MEMFD:-1} == 1 ]] && vmms+=" qemu-memfd"

[[ -x $QLITE ]] || { echo "bench: no qlite binary at $QLITE"; exit 1; }
res=/tmp/bench.results
: >"$res"

# vmm_pid PID: the VMM process. busybox timeout execs the program in the
# parent (PID itself); other timeouts fork it as a child.
vmm_pid() {
    local c
    if [[ $(cat /proc/"$1"/comm 2>/dev/null) == timeout ]]; then
        c=$(cat /proc/"$1"/task/*/children 2>/dev/null | awk '{ print $1; exit }')
        if [[ -n $c ]]; then echo "$c"; return; fi
    fi
    echo "$1"
}

# mem_sample PID OUT: /proc status + smaps of the VMM. In the test host the
# binaries live in the initramfs (shmem), so their text counts as RssShmem;
# smaps lets us also subtract exactly the guest-RAM mapping instead.
mem_sample() {
    local p
    p=$(vmm_pid "$1")
    { cat /proc/"$p"/status; echo SMAPS; cat /proc/"$p"/smaps; } >"$2" 2>/dev/null || true
}

# one_run NAME I CMD...: bash's $EPOCHREALTIME (µs) stamps each console line
# as it is read from a FIFO (busybox ts buffers); t0 is taken just before the
# fork. Memory is sampled $sample_after s after the marker, guest asleep.
one_run() {
    local name=$1 i=$2; shift 2
    local log=/tmp/bench-$name-$i.log st=/tmp/bench-$name-$i.mem fifo=/tmp/bench.fifo
    local t0 t_m='' t_e up='' line now pid rc sampler=''
    rm -f "$fifo" "$st"; mkfifo "$fifo"
    t0=$EPOCHREALTIME
    timeout -k 5 120 "$@" </dev/null >"$fifo" 2>&1 &
    pid=$!
    : >"$log"
    while IFS= read -r line; do
        now=$EPOCHREALTIME
        line=${line%$'\r'}
        echo "$now $line" >>"$log"
        case $line in
        *QLITE-GUEST-READY*)
            if [[ -z $t_m ]]; then
                t_m=$now
                ( sleep "$sample_after"; mem_sample "$pid" "$st" ) &
                sampler=$!
            fi ;;
        QLITE-CMD-BEGIN) IFS=' ' read -r up _ || true; up=${up%$'\r'}
            echo "$EPOCHREALTIME $up" >>"$log" ;;
        esac
    done <"$fifo"
    set +e; wait "$pid"; rc=$?; set -e
    t_e=$EPOCHREALTIME
    if [[ -n $sampler ]]; then wait "$sampler" || true; fi
    rm -f "$fifo"
    if [[ -z $t_m ]]; then
        echo "bench: $name run $i: NO MARKER (exit status $rc); console:"; sed 's/^/  | /' "$log"
        return 1
    fi
    [[ -s $st ]] || { echo "bench: $name run $i: no memory sample (VMM gone early?)"; : >"$st"; }
    awk -v name="$name" -v i="$i" -v t0="$t0" -v tm="$t_m" -v te="$t_e" -v up="${up:-0}" \
        -v rc="$rc" -v ramkb=$((mem * 1024)) '
        $1 == "SMAPS" { sm = 1; next }
        !sm { if ($1 ~ /^(VmRSS|RssAnon|RssFile|RssShmem):$/) kb[$1] = $2; next }
        $1 ~ /^[0-9a-f]+-[0-9a-f]+$/ { big = 0; next }
        $1 == "Size:" { big = ($2 >= ramkb) }      # the guest RAM mapping
        $1 == "Rss:" && big { ram += $2 }
        END {
            printf "%s run=%d marker=%.3f exit=%.3f guest_uptime=%s rc=%s VmRSS=%d RssAnon=%d RssFile=%d RssShmem=%d guest_ram_rss=%d\n",
                name, i, tm - t0, te - t0, up, rc, kb["VmRSS:"], kb["RssAnon:"], kb["RssFile:"],
                kb["RssShmem:"], ram
        }' "$st" | tee -a "$res"
    [[ $rc == 0 ]]
}

echo "bench: $runs runs each, alternating; ${mem}M, $cpus vCPU; kernel $(cat /guest/VERSION)"
echo "bench: THP enabled: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null), shmem: $(cat /sys/kernel/mm/transparent_hugepage/shmem_enabled 2>/dev/null)"
echo "bench: qlite:      ${qlite_cmd[*]}"
echo "bench: qemu:       $(qemu-system-x86_64 --version | head -n1): ${qemu_cmd[*]}"
[[ $vmms == *qemu-memfd* ]] && echo "bench: qemu-memfd: ${qemu_memfd_cmd[*]}"
fails=0
for i in $(seq 1 "$runs"); do
    for v in $vmms; do
        case $v in
        qlite) one_run qlite "$i" "${qlite_cmd[@]}" || fails=$((fails + 1)) ;;
        qemu) one_run qemu "$i" "${qemu_cmd[@]}" || fails=$((fails + 1)) ;;
        qemu-memfd) one_run qemu-memfd "$i" "${qemu_memfd_cmd[@]}" || fails=$((fails + 1)) ;;
        esac
    done
done

# med VMM FIELD: median of FIELD=value over VMM's runs.
med() {
    awk -v n="$1" -v k="$2" '$1 == n { for (i = 2; i <= NF; i++) if (index($i, k "=") == 1) print substr($i, length(k) + 2) }' "$res" |
        sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print "-" }'
}
awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
       print $1, f["run"], f["VmRSS"] - f["RssShmem"], f["VmRSS"] - f["guest_ram_rss"] }' "$res" >"$res.ov"
medov() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$res.ov" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2); else print "-" }'; }

echo
echo "==== boot benchmark: medians over $runs runs (in the test host, nested KVM; seconds, kB)"
echo "marker = process start -> QLITE-GUEST-READY; exit = process start -> exit (incl. 3 s guest sleep)"
echo "overhead A = VmRSS - RssShmem; overhead B = VmRSS - Rss(guest RAM mapping); sampled ${sample_after}s after marker"
printf '%-11s %8s %8s %8s %9s %9s %9s %9s %9s %11s %11s\n' vmm marker exit g_uptime VmRSS RssAnon RssFile RssShmem guestRAM overheadA overheadB
for v in $vmms; do
    printf '%-11s %8s %8s %8s %9s %9s %9s %9s %9s %11s %11s\n' "$v" "$(med "$v" marker)" "$(med "$v" exit)" \
        "$(med "$v" guest_uptime)" "$(med "$v" VmRSS)" "$(med "$v" RssAnon)" "$(med "$v" RssFile)" \
        "$(med "$v" RssShmem)" "$(med "$v" guest_ram_rss)" "$(medov "$v" 3)" "$(medov "$v" 4)"
done
awk -v a="$(med qlite marker)" -v b="$(med qemu marker)" -v c="$(med qemu-memfd marker)" 'BEGIN {
    if (b > 0) printf "ratio qlite/qemu boot-to-marker (median): %.3f\n", a / b
    if (c > 0) printf "ratio qlite/qemu-memfd boot-to-marker (median): %.3f\n", a / c }'
echo "reproduce: BENCH_RUNS=$runs tests/bench/boot.sh"
[[ $fails -eq 0 ]]
