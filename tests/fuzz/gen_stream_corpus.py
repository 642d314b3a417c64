#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the fuzz-stream seed corpus (docs/state-stream.md layout).

Each seed is a mode byte for fuzz_stream.c (bit 0: rewrite CRCs) followed by
a valid state stream. Run from the repository root:
    tests/fuzz/gen_stream_corpus.py
"""
import os
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "stream")


def header(version=1, flags=0):
    return b"QLITE-ST" + struct.pack("<II", version, flags)


def section(kind, instance, version, ident, payload):
    ident = ident.encode()
    body = struct.pack("<IIIH", kind, instance, version, len(ident)) + ident
    body += struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def stream(sections):
    out = header()
    for s in sections:
        out += section(*s)
    return out + section(0, len(sections), 0, "", b"")


SEEDS = {
    "empty.bin": (0, stream([])),
    "small.bin": (0, stream([
        (1, 0, 1, "", b'{"mem":"64M","cpus":2}'),
        (2, 0, 1, "", bytes(range(48))),
        (2, 1, 1, "", bytes(range(48, 0, -1))),
        (3, 0, 1, "", b"\x00" * 16),
        (4, 0, 1, "serial", b"\x01\x00\x00\x00"),
        (4, 1, 1, "serial", b""),
        (5, 0, 1, "", struct.pack("<QQ", 0, 0x4000000)),
        (6, 0, 1, "disk0", b"/var/lib/qlite/disk0.img"),
    ])),
    "fixcrc.bin": (1, stream([
        (4, 0, 2, "virtio-blk", b"\xff" * 32),
        (2, 3, 1, "", b"cpu"),
    ])),
}

os.makedirs(OUT, exist_ok=True)
for name, (mode, data) in SEEDS.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([mode]) + data)
