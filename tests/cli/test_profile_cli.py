#!/usr/bin/env python3
"""`qlite profile` end to end on /dev/kvm, against a running `qlite run`
whose synthetic kernel spins (jmp $) on vCPU 0 while vCPU 1 waits for its
SIPI: the outputs are written and well-formed, vCPU 1 is all idle, symbols
resolve, bad input gets exit 1 and one clear message while the VM keeps
running, and a VM that stops mid-profile still gets its profile written.

usage: test_profile_cli.py QLITE_BINARY
"""
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from qlitetest import SPIN_RIP, Checks, kvm_usable, spin_kernel, start_vm

check = Checks()


def profile(qlite, *args, timeout=60):
    return subprocess.run([qlite, "profile", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def status(qlite, sock):
    r = subprocess.run([qlite, "status", "--qmp", sock], capture_output=True, text=True,
                       timeout=30)
    return r.stdout.strip()


def load_summary(out):
    try:
        with open(os.path.join(out, "summary.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    qlite = os.path.abspath(sys.argv[1])
    if not kvm_usable():
        return 77
    tmp, kernel = spin_kernel()
    sock = os.path.join(tmp, "qmp.sock")
    vm = start_vm(qlite, kernel, sock)
    try:
        run(qlite, sock, tmp)
        vm_stops_midway(qlite, kernel, tmp)
    finally:
        if vm.poll() is None:
            vm.kill()
    return check.finish()


def run(qlite, sock, tmp):
    out = os.path.join(tmp, "out1")
    r = profile(qlite, "--qmp", sock, "--duration", "1s", "--freq", "500", "--out", out)
    check("profile: exit status 0", r.returncode == 0, r.stderr)
    check("profile: plain progress lines when not a terminal",
          "profile: " in r.stdout and "\033[" not in r.stdout, r.stdout[:300])
    check("profile: final table and file list printed",
          "%busy" in r.stdout and "wrote " in r.stdout, r.stdout[-500:])
    for name in ("profile.folded", "flamegraph.svg", "summary.json", "report.txt"):
        check(f"profile: {name} written", os.path.getsize(os.path.join(out, name)) > 0)
    with open(os.path.join(out, "profile.folded")) as f:
        lines = f.read().splitlines()
    check("folded: one stack, the spin loop's address",
          len(lines) == 1 and lines[0].startswith(f"[kernel];{SPIN_RIP:#x} "), str(lines))
    try:
        root = ET.parse(os.path.join(out, "flamegraph.svg")).getroot()
        ok = root.tag.endswith("svg") and len(root.findall(".//{*}rect")) >= 3
    except ET.ParseError as e:
        ok, root = False, e
    check("flamegraph.svg is well-formed SVG with frames", ok, str(root))
    s = load_summary(out)
    v = s.get("per_vcpu", [])
    check("summary: samples counted, two vCPUs",
          s.get("samples", 0) > 100 and len(v) == 2, str(s)[:300])
    # vCPU 1 never got INIT/SIPI: all of its time is idle, none attributed.
    check("summary: vCPU 1 (waiting for SIPI) is all idle",
          len(v) == 2 and v[1]["samples"] > 0 and v[1]["idle"] == v[1]["samples"], str(v)[:300])
    check("summary: vCPU 0 (spinning) never idle",
          len(v) == 2 and v[0]["samples"] > 0 and v[0]["idle"] == 0, str(v)[:300])
    check("summary: sampling kicks counted as INTR exits",
          len(v) == 2 and v[0]["exits"].get("INTR", {}).get("count", 0) > 0, str(v)[:300])
    check("summary: KVM binary stats per vCPU",
          len(v) == 2 and v[0]["kvm_stats"].get("exits", 0) > 0, str(v)[:300])

    # Symbols: a System.map naming the loop; no LSTAR here, so no KASLR offset.
    smap = os.path.join(tmp, "spin.map")
    with open(smap, "w") as f:
        f.write(f"{SPIN_RIP:016x} T spin_forever\n{SPIN_RIP + 16:016x} T after_spin\n")
    out2 = os.path.join(tmp, "out2")
    r = profile(qlite, "--qmp", sock, "--duration", "300ms", "--symbols", smap,
                "--method", "kick", "--out", out2, "--top", "3", "--refresh", "0")
    s = load_summary(out2)
    check("--refresh 0: no live lines, only the start line and the result",
          r.returncode == 0 and
          sum(1 for x in r.stdout.splitlines() if x.startswith("profile: ")) == 1 and
          "profile: sampling for 0.3 s at 999 Hz (method kick)" in r.stdout and
          "wrote " in r.stdout, r.stdout[:300])
    check("symbols: the loop resolves to spin_forever",
          r.returncode == 0 and s.get("top", [{}])[0].get("function") == "spin_forever",
          r.stderr + str(s.get("top"))[:200])
    check("symbols: no MSR_LSTAR, no KASLR offset", s.get("kaslr_offset") is None and
          "none" in s.get("kaslr_source", ""), str(s.get("kaslr_source")))
    check("method kick recorded", s.get("method") == "kick", str(s.get("method")))
    out3 = os.path.join(tmp, "out3")
    r = profile(qlite, "--qmp", sock, "--duration", "200ms", "--symbols", smap,
                "--kaslr-offset", "0x1000", "--out", out3)
    s = load_summary(out3)
    check("--kaslr-offset given: applied (the loop no longer resolves)",
          r.returncode == 0 and s.get("kaslr_offset") == "0x1000" and
          s.get("unresolved_kernel_samples", 0) > 0, str(s)[:300])

    # Bad input: exit status 1, one clear message, the VM keeps running.
    junk = os.path.join(tmp, "junk.map")
    with open(junk, "w") as f:
        f.write("this is not\na symbol map\n")
    bad = [
        ("--freq 0", ["--freq", "0"], "at least 1"),
        ("--freq 20000", ["--freq", "20000"], "above the limit"),
        ("unreadable symbol file", ["--symbols", os.path.join(tmp, "nope.map")],
         "cannot open symbol file"),
        ("not a symbol file", ["--symbols", junk], "not a System.map"),
        ("output is a file", ["--out", "/proc/version"], "not a directory"),
        ("output not creatable", ["--out", "/proc/qlite-profile-out"],
         "cannot create output directory"),
        ("no such socket", ["--qmp", os.path.join(tmp, "nobody.sock")], "cannot connect"),
    ]
    for name, args, needle in bad:
        a = ["--qmp", sock, "--duration", "1s", "--out", os.path.join(tmp, "bad")] + args
        r = profile(qlite, *a)
        msg = r.stderr.strip().splitlines()
        check(f"bad input ({name}): exit 1, clear message, VM still running",
              r.returncode == 1 and msg and needle in msg[0] and status(qlite, sock) == "running",
              f"rc {r.returncode}: {r.stderr[:300]}")
    # perf needs a host PMU: a clear refusal here (or a profile where there is one).
    r = profile(qlite, "--qmp", sock, "--duration", "200ms", "--method", "perf", "--out",
                os.path.join(tmp, "perf"))
    check("method perf: works, or says it needs a host PMU / permission",
          r.returncode == 0 or (r.returncode == 1 and ("host PMU" in r.stderr or
                                                        "not permitted" in r.stderr)),
          r.stderr[:300])
    check("VM still running after perf attempt", status(qlite, sock) == "running")
    # One profile at a time.
    first = subprocess.Popen([qlite, "profile", "--qmp", sock, "--duration", "3s", "--out",
                              os.path.join(tmp, "first")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    r = profile(qlite, "--qmp", sock, "--duration", "1s", "--out", os.path.join(tmp, "second"))
    check("a second profile while one runs: refused",
          r.returncode == 1 and "already running" in r.stderr, r.stderr[:300])
    check("the first profile completes", first.wait(60) == 0, first.stderr.read()[:300])
    check("VM still running at the end", status(qlite, sock) == "running")
    r = profile(qlite, "--help")
    check("profile --help", r.returncode == 0 and "Usage: qlite profile" in r.stdout)


def vm_stops_midway(qlite, kernel, tmp):
    sock = os.path.join(tmp, "qmp2.sock")
    vm = start_vm(qlite, kernel, sock)
    out = os.path.join(tmp, "midway")
    p = subprocess.Popen([qlite, "profile", "--qmp", sock, "--duration", "60s", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    subprocess.run([qlite, "quit", "--qmp", sock], capture_output=True, timeout=30)
    try:
        stdout, stderr = p.communicate(timeout=30)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, stderr, rc = "", "timeout", -1
    vm.wait(30)
    s = load_summary(out)
    check("VM quits mid-profile: profile exits 0 and says so",
          rc == 0 and "writing what was collected" in stderr, f"rc {rc}: {stderr[:300]}")
    check("VM quits mid-profile: what was collected is written",
          s.get("samples", 0) > 0 and s.get("stop_reason") == "vm-stopped"
          and s.get("duration_s", 99) < 30, str(s)[:300])


if __name__ == "__main__":
    sys.exit(main())
