"""Shared by the Python tests here: PASS/FAIL counting, the synthetic spin
kernel (a bzImage whose 64-bit entry is `jmp $`, so no Linux guest is
needed), and starting `qlite run` on a QMP socket."""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SPIN_RIP = 0x100200  # the 64-bit entry of the synthetic bzImage


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, what, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS: {what}")
        else:
            self.failed += 1
            print(f"FAIL: {what} {detail}")

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


def kvm_usable():
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        return True
    print("SKIP: no usable /dev/kvm")
    return False


def spin_kernel():
    """A temp dir holding spin.bz; returns (dir, kernel path)."""
    tmp = tempfile.mkdtemp()
    kernel = os.path.join(tmp, "spin.bz")
    subprocess.run([sys.executable, os.path.join(HERE, "mkbzimage.py"), kernel,
                    "--code", "ebfe"], check=True)
    return tmp, kernel


def start_vm(qlite, kernel, sock, *extra, qmp_opts=""):
    """`qlite run` of @kernel (2 vCPUs, 64M, no console) serving QMP at @sock."""
    vm = subprocess.Popen([qlite, "run", "--kernel", kernel, "--mem", "64M", "--cpus", "2",
                           "--qmp", f"unix:{sock}{qmp_opts}", "--console", "none", *extra],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    for _ in range(200):
        if os.path.exists(sock):
            break
        time.sleep(0.05)
    return vm
