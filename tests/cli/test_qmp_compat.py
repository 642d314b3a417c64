#!/usr/bin/env python3
"""QMP compatibility: a client qlite did not write (Python's json + socket)
drives a real `qlite run` on /dev/kvm. The guest is a synthetic bzImage whose
64-bit entry spins (jmp $), so this needs no Linux guest.

usage: test_qmp_compat.py QLITE_BINARY
"""
import json
import os
import socket
import subprocess
import sys
import time

from qlitetest import Checks, kvm_usable, spin_kernel, start_vm

check = Checks()


class Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(10)
        self.s.connect(path)
        self.buf = b""
        self.events = []
        self.dec = json.JSONDecoder()

    def _next(self):
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    obj, end = self.dec.raw_decode(text.decode())
                    self.buf = text[len(text.decode()[:end].encode()):]
                    return obj
                except json.JSONDecodeError:
                    pass
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("server closed the connection")
            self.buf += chunk

    def reply(self):
        """Next reply; events are collected on the side."""
        while True:
            m = self._next()
            if "event" in m:
                self.events.append(m)
                continue
            return m

    def raw(self, data):
        self.s.sendall(data if isinstance(data, bytes) else data.encode())
        return self.reply()

    def cmd(self, name, args=None, **kw):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        req.update(kw)
        return self.raw(json.dumps(req) + "\n")

    def wait_event(self, name, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            try:
                m = self._next()
            except socket.timeout:
                break
            if "event" in m:
                self.events.append(m)
        return None

    def close(self):
        self.s.close()


def main():
    qlite = os.path.abspath(sys.argv[1])
    if not kvm_usable():
        return 77
    tmp, kernel = spin_kernel()
    sock = os.path.join(tmp, "qmp.sock")
    vm = start_vm(qlite, kernel, sock, "-S", "--name", "compat", qmp_opts=",server=on,wait=off")
    try:
        run(qlite, vm, sock, kernel)
        inherited_fd(qlite, kernel, tmp)
    finally:
        if vm.poll() is None:
            vm.kill()
    return check.finish()


def run(qlite, vm, sock, kernel):
    a = Client(sock)
    g = a.reply()
    check("greeting has QMP version and capabilities",
          "QMP" in g and g["QMP"]["version"]["qemu"]["major"] >= 7
          and "capabilities" in g["QMP"], str(g))
    r = a.cmd("query-status")
    check("commands before qmp_capabilities are refused",
          r.get("error", {}).get("class") == "CommandNotFound", str(r))
    check("qmp_capabilities", a.cmd("qmp_capabilities") == {"return": {}})
    r = a.cmd("query-status", id="s1")
    check("-S: status prelaunch, not running, id echoed",
          r.get("return", {}).get("status") == "prelaunch"
          and r["return"]["running"] is False and r.get("id") == "s1", str(r))
    r = a.cmd("query-name")
    check("query-name", r.get("return") == {"name": "compat"}, str(r))

    r = a.cmd("query-cpus-fast")
    cpus = r.get("return", [])
    check("query-cpus-fast lists 2 vCPUs", len(cpus) == 2, str(r))
    for c in cpus:
        tid = c["thread-id"]
        try:
            comm = open(f"/proc/{vm.pid}/task/{tid}/comm").read().strip()
        except OSError:
            comm = "(no such thread)"
        check(f"cpu {c['cpu-index']}: thread {tid} is named vcpu{c['cpu-index']}",
              comm == f"vcpu{c['cpu-index']}", comm)

    # A second client at the same time sees the same events.
    b = Client(sock)
    b.reply()
    b.cmd("qmp_capabilities")
    check("cont", a.cmd("cont") == {"return": {}})
    check("RESUME event reaches client A", a.wait_event("RESUME") is not None)
    check("RESUME event reaches client B", b.wait_event("RESUME") is not None)
    r = b.cmd("query-status")
    check("status running after cont", r.get("return", {}).get("status") == "running", str(r))
    out = subprocess.run([qlite, "status", "--qmp", sock], capture_output=True, text=True)
    check("qlite status prints running", out.returncode == 0 and out.stdout.strip() == "running",
          out.stdout + out.stderr)
    out = subprocess.run([qlite, "pause", "--qmp", sock], capture_output=True, text=True)
    check("qlite pause", out.returncode == 0, out.stderr)
    e = a.wait_event("STOP")
    check("STOP event with a timestamp",
          e is not None and e["timestamp"]["seconds"] > 0 and "microseconds" in e["timestamp"])
    out = subprocess.run([qlite, "status", "--qmp", sock, "--json"], capture_output=True,
                         text=True)
    try:
        st = json.loads(out.stdout)["return"]
    except (ValueError, KeyError):
        st = {}
    check("qlite status --json: paused", st.get("status") == "paused" and not st.get("running"),
          out.stdout)

    # Hostile input: an error reply each time, and the connection carries on.
    bad = [
        ("malformed JSON", '{"execute": "query-status" ]]]\n', "GenericError"),
        ("non-object", "[1, 2]\n", "GenericError"),
        ("missing execute", '{"arguments": {}}\n', "GenericError"),
        ("unknown command", '{"execute": "frobnicate"}\n', "CommandNotFound"),
        ("unexpected argument", '{"execute": "stop", "arguments": {"now": true}}\n',
         "GenericError"),
        ("wrong argument type",
         '{"execute": "query-blockstats", "arguments": {"query-nodes": 1}}\n', "GenericError"),
        ("oversized message", '{"execute": "stop", "x": "' + "a" * (2 << 20) + '"}\n',
         "GenericError"),
    ]
    for name, data, cls in bad:
        r = a.raw(data)
        ok = r.get("error", {}).get("class") == cls and r["error"].get("desc")
        r2 = a.cmd("query-status")
        check(f"bad input ({name}): {cls}, connection still works",
              ok and "return" in r2, str(r)[:200])

    # A client that disconnects mid-message, and one that floods and leaves.
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(sock)
    c.sendall(b'{"execute": "qmp_capa')
    c.close()
    f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    f.connect(sock)
    f.settimeout(5)
    try:
        for _ in range(40):
            f.sendall(b"x" * 65536)
    except OSError:
        pass
    f.close()
    r = b.cmd("query-status")
    check("server survives a half message and a flood", "return" in r, str(r))

    # Reset keeps the run state; quit reports SHUTDOWN and exits 0.
    check("system_reset", a.cmd("system_reset") == {"return": {}})
    e = a.wait_event("RESET")
    check("RESET event (host request)", e is not None and e["data"]["guest"] is False, str(e))
    r = a.cmd("query-status")
    check("still paused after reset", r.get("return", {}).get("status") == "paused", str(r))
    r = a.cmd("query-cpus-fast")
    check("vCPU threads rebuilt by the reset", len(r.get("return", [])) == 2, str(r))

    dup = subprocess.run([qlite, "run", "--kernel", kernel, "--mem", "64M", "--qmp",
                          f"unix:{sock}"], capture_output=True, text=True, timeout=30)
    check("a second VM on the same socket path is refused",
          dup.returncode == 1 and "already exists" in dup.stderr, dup.stderr)

    out = subprocess.run([qlite, "qmp", "--qmp", sock, "query-blockstats",
                          '{"query-nodes": false}'], capture_output=True, text=True)
    check("qlite qmp CMD ARGS prints the reply",
          out.returncode == 0 and json.loads(out.stdout or "{}") == {"return": []}, out.stdout)
    out = subprocess.run([qlite, "qmp", "--qmp", sock, "query-status", "[1]"],
                         capture_output=True, text=True)
    check("qlite qmp with non-object arguments fails cleanly",
          out.returncode == 1 and "JSON object" in out.stderr, out.stderr)
    events = subprocess.Popen([qlite, "events", "--qmp", sock], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    check("quit", a.cmd("quit") == {"return": {}})
    e = a.wait_event("SHUTDOWN")
    check("SHUTDOWN event: host-qmp-quit",
          e is not None and e["data"] == {"guest": False, "reason": "host-qmp-quit"}, str(e))
    try:
        rc = vm.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = None
    check("qlite exits 0 after quit", rc == 0, f"rc={rc} stderr={vm.stderr.read()[:300]}")
    check("the socket file is removed", not os.path.exists(sock))
    try:
        ev_out, _ = events.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        events.kill()
        ev_out = ""
    check("qlite events printed SHUTDOWN and ended with the VM",
          events.returncode == 0 and '"event":"SHUTDOWN"' in ev_out, ev_out[:300])
    a.close()
    b.close()


def inherited_fd(qlite, kernel, tmp):
    """libvirt's way: a listening socket created by the manager, passed as fd."""
    path = os.path.join(tmp, "libvirt-style.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(1)
    fd = lsock.fileno()
    vm = subprocess.Popen([qlite, "run", "--kernel", kernel, "--mem", "64M", "-S",
                           "--qmp", f"fd:{fd}", "--console", "none"],
                          pass_fds=[fd], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lsock.close()
    try:
        c = Client(path)
        g = c.reply()
        check("fd:N: greeting on an inherited listening socket", "QMP" in g, str(g))
        c.cmd("qmp_capabilities")
        r = c.cmd("query-status")
        check("fd:N: query-status", r.get("return", {}).get("status") == "prelaunch", str(r))
        check("fd:N: quit", c.cmd("quit") == {"return": {}})
        check("fd:N: exit 0", vm.wait(timeout=20) == 0)
        c.close()
    finally:
        if vm.poll() is None:
            vm.kill()


if __name__ == "__main__":
    sys.exit(main())
