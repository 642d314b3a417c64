#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the fuzz-migrate seed corpus (docs/migration.md layout).

Each seed is a mode byte for fuzz_migrate.c (bit 0: it prepends a valid
HELLO and CONFIG) followed by migration messages. Run from the repository
root:
    tests/fuzz/gen_migrate_corpus.py
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "migrate")
CONFIG = b'{"mem-size": 16777216, "cpus": 1, "mem-backend": "anon"}'


def section(kind, instance, version, ident, payload):
    ident = ident.encode()
    body = struct.pack("<IIIH", kind, instance, version, len(ident)) + ident
    body += struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def stream(sections):
    out = b"QLITE-ST" + struct.pack("<II", 1, 0)
    for s in sections:
        out += section(*s)
    return out + section(0, len(sections), 0, "", b"")


def msg(kind, payload=b""):
    return struct.pack("<II", kind, len(payload)) + payload


def hello(vmin=1, vmax=1, pages=4096):
    return msg(1, b"QLITE-MG" + struct.pack("<IIQ", vmin, vmax, 0) + b"\x00" * 16 +
               struct.pack("<IIQ", 0, 4096, pages))


def rnd(n, pages):
    return msg(4, struct.pack("<IQ", n, pages))


def pages(first, count, fill=0x5a):
    return msg(5, struct.pack("<QI", first, count) + bytes([fill]) * (4096 * count))


def zero(first, count):
    return msg(6, struct.pack("<QQ", first, count))


STATE = msg(7, stream([(1, 0, 1, "vm", CONFIG), (3, 0, 1, "kvm", b"\x00" * 16),
                       (2, 0, 1, "cpu", b"\x01" * 32), (4, 0, 1, "serial", b"\x01\x00\x00\x00")]))

SEEDS = {
    "full.bin": (0, hello() + msg(3, stream([(1, 0, 1, "vm", CONFIG)])) + rnd(0, 2) +
                 pages(0, 2) + rnd(1, 1) + zero(1, 1) + STATE + msg(8, b"\x01\0\0\0") + msg(10)),
    "precopy.bin": (1, rnd(0, 3) + pages(10, 1) + zero(4000, 96) + rnd(1, 1) + pages(4095, 1)),
    "state.bin": (1, rnd(0, 0) + STATE + msg(8, b"\0\0\0\0") + msg(10)),
    "error.bin": (1, msg(12, struct.pack("<I", 125) + b"cancelled")),
}

os.makedirs(OUT, exist_ok=True)
for name, (mode, data) in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([mode]) + data)
