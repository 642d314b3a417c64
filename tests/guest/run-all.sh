#!/bin/bash
# Run every tests/guest/test-*.sh in ONE test-host boot (boots are slow) and
# summarise as "N passed, N failed" (counting checks).
#
# On the dev machine:  tests/guest/run-all.sh [--qemu] [TEST...]
#   re-runs itself through tests/testhost/run.sh; --qemu uses QEMU microvm as
#   the VMM instead of qlite (validates image and tests without qlite).
#   Extra runner options can go in QLITE_TESTHOST_ARGS (e.g. "--smp 2").
# Inside the test host: runs the tests (QLITE_GUEST_VMM picks the VMM).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [[ ${QLITE_TESTHOST:-0} != 1 ]]; then
    # The data disk for test-disk.sh (64 MiB, copied into the test host).
    # Migration (test-migrate.sh): the memwriter guest and iproute2's ip for
    # network namespaces.
    runner=(--timeout 900 --guest-file data.img --guest-file data.sha256
        --guest-file initrd-mw.img --guest-file qlite-memwriter --bin /bin/ip)
    if [[ ${1:-} == --qemu ]]; then
        shift
        runner+=(--with-qemu --env QLITE_GUEST_VMM=qemu)
    fi
    # shellcheck disable=SC2086
    exec "$here/../testhost/run.sh" "${runner[@]}" ${QLITE_TESTHOST_ARGS:-} "$0" "$@"
fi

if [[ $# -gt 0 ]]; then tests=("$@"); else tests=("$here"/test-*.sh); fi
passed=0
failed=0
for t in "${tests[@]}"; do
    [[ $t == */* ]] || t=$here/$t
    echo "==== ${t##*/}"
    log=/tmp/run-all-${t##*/}.log
    set +e
    bash "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    p=$(grep -c '^PASS: ' "$log" || true)
    f=$(grep -c '^FAIL: ' "$log" || true)
    # A script that dies without reporting a failure still counts as one.
    if [[ $rc != 0 && $f == 0 ]]; then
        echo "FAIL: ${t##*/} exited with status $rc"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
