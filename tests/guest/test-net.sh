#!/bin/bash
# virtio-net on a tap: the guest pings the test host over a tap the host
# side created (persistent, with an address), then the host pings the guest.
set -euo pipefail
# shellcheck source=tests/guest/lib/vm.sh
. "$(dirname "$0")/lib/vm.sh"


tap=qltap0
host_ip=10.0.3.1
guest_ip=10.0.3.2
mac=52:54:00:00:03:02
QLITE_ARGS=(--net "tap=$tap,mac=$mac")
QEMU_ARGS=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off"
    -device "virtio-net-device,netdev=n0,mac=$mac")

f0=$n_fail
tunctl -t "$tap" >/dev/null
ip addr add "$host_ip/24" dev "$tap"
ip link set "$tap" up
# Then the guest stays up until it has answered 3 echo requests from the
# host (Icmp InEchos in /proc/net/snmp), at most ~30 s.
echos="awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) if (\$i ~ /^InEchos$/) c = i; h = 1 }"
echos+=" else { print \$c; exit } }' /proc/net/snmp"
gcmd="ip addr add $guest_ip/24 dev eth0 && ip link set eth0 up && cat /sys/class/net/eth0/address"
gcmd+=" && ping -c 3 -W 5 $host_ip && echo NET-PING-OK"
gcmd+="; i=0; while [ \$i -lt 60 ] && [ \$($echos) -lt 3 ]; do sleep 0.5; i=\$((i + 1)); done"
(
    # Host -> guest, while the guest is up.
    for _ in $(seq 1 60); do
        if ping -c 1 -W 1 "$guest_ip" >/dev/null 2>&1; then
            ping -c 3 -W 2 "$guest_ip" >/tmp/host-ping.log 2>&1 && echo ok >/tmp/host-ping.ok
            break
        fi
        sleep 1
    done
) &
pinger=$!
rm -f /tmp/host-ping.ok
vm_run ping 1 256 "qlite.cmd=\"$gcmd\""
wait "$pinger" || true
check "guest MAC is $mac" grep -qx "$mac" "$VM_LOG"
check "guest pings the host over the tap" vm_saw NET-PING-OK
check "host pings the guest over the tap" test -e /tmp/host-ping.ok
check "VMM exit status 0 (got $VM_RC)" test "$VM_RC" = 0
tunctl -d "$tap" >/dev/null 2>&1 || true
vm_dump_on_failure "$f0"

finish
