# shellcheck shell=bash
# Helpers for migration tests and the migration benchmark (sourced; inside the
# KVM test host). Two "hosts": network namespaces mig-src (10.77.0.1) and
# mig-dst (10.77.0.2) joined by a veth pair, each VMM started in its own.
# iproute2's ip is needed for namespaces (busybox's has none): run-all.sh and
# tests/bench/migrate.sh pass it with `--bin /bin/ip`.
#
# The workload is qlite-memwriter (tests/guest/memwriter.c) in the guest image
# /guest/initrd-mw.img, and the same binary as /guest/qlite-memwriter for the
# host side (--guest-file initrd-mw.img --guest-file qlite-memwriter).

MIG_IP=${MIG_IP:-/bin/ip}
MIG_SRC_ADDR=10.77.0.1
MIG_DST_ADDR=10.77.0.2
MIG_INITRD=${MIG_INITRD:-/guest/initrd-mw.img}

# mig_netns_setup: create both namespaces and the link (idempotent).
mig_netns_setup() {
    [[ -x $MIG_IP ]] || { echo "mig: no iproute2 ip at $MIG_IP" >&2; return 1; }
    if "$MIG_IP" netns list 2>/dev/null | grep -q '^mig-dst'; then
        return 0
    fi
    mkdir -p /run/netns
    "$MIG_IP" netns add mig-src &&
        "$MIG_IP" netns add mig-dst &&
        "$MIG_IP" link add mig-s type veth peer name mig-d &&
        "$MIG_IP" link set mig-s netns mig-src &&
        "$MIG_IP" link set mig-d netns mig-dst &&
        "$MIG_IP" -n mig-src addr add "$MIG_SRC_ADDR/24" dev mig-s &&
        "$MIG_IP" -n mig-dst addr add "$MIG_DST_ADDR/24" dev mig-d &&
        "$MIG_IP" -n mig-src link set lo up &&
        "$MIG_IP" -n mig-dst link set lo up &&
        "$MIG_IP" -n mig-src link set mig-s up &&
        "$MIG_IP" -n mig-dst link set mig-d up &&
        "$MIG_IP" netns exec mig-src ping -c 1 -W 5 "$MIG_DST_ADDR" >/dev/null
}

# in_src CMD... / in_dst CMD...: run CMD in that namespace.
in_src() { "$MIG_IP" netns exec mig-src "$@"; }
in_dst() { "$MIG_IP" netns exec mig-dst "$@"; }

# mw_expect MIB PASSES: the "MW pass P sum S" lines of a correct run.
mw_expect() {
    /guest/qlite-memwriter -e -m "$1" -p "$2" | grep '^MW pass '
}

# mw_passes LOG...: the consoles joined (a line the migration cut in two
# joins up again), their "MW pass P sum S" lines without the uptime.
mw_passes() {
    cat "$@" | tr -d '\r' | grep -a '^MW pass [0-9]* sum [0-9a-f]* up ' |
        sed 's/ up .*$//'
}

# mw_uptimes_rise LOG...: the uptimes of the MW lines rise throughout.
mw_uptimes_rise() {
    cat "$@" | tr -d '\r' | awk '/^MW pass [0-9]+ sum [0-9a-f]+ up [0-9.]+$/ {
            if (n++ && $7 + 0 <= up) bad = 1
            up = $7 + 0
        }
        END { exit bad || !n }'
}
