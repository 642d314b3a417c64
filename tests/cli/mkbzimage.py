#!/usr/bin/env python3
"""Write a synthetic bzImage: a valid boot-protocol header and a payload.

usage: mkbzimage.py OUT [--payload N] [--syssize-extra N] [--init-size N]
                        [--version 0xVVVV] [--no-64bit] [--magic XXXX]
"""
import argparse
import struct

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--payload", type=int, default=64 * 1024)
p.add_argument("--syssize-extra", type=int, default=0)
p.add_argument("--init-size", type=int, default=8 << 20)
p.add_argument("--version", type=lambda s: int(s, 0), default=0x20F)
p.add_argument("--no-64bit", action="store_true")
p.add_argument("--magic", default="HdrS")
p.add_argument("--code", default="", help="hex bytes at the 64-bit entry (payload + 0x200)")
a = p.parse_args()

setup_sects = 4
setup = bytearray((setup_sects + 1) * 512)
payload = bytearray(a.payload)
code = bytes.fromhex(a.code)
payload[0x200:0x200 + len(code)] = code
syssize = (len(payload) + 15) // 16 + a.syssize_extra
struct.pack_into("<B", setup, 0x1F1, setup_sects)
struct.pack_into("<I", setup, 0x1F4, syssize)
struct.pack_into("<H", setup, 0x1FE, 0xAA55)
setup[0x200] = 0xEB  # jump
setup[0x201] = 0x6A  # header ends at 0x202 + 0x6a
setup[0x202:0x206] = a.magic.encode()[:4].ljust(4, b"\0")
struct.pack_into("<H", setup, 0x206, a.version)
struct.pack_into("<B", setup, 0x211, 0x01)  # LOADED_HIGH
struct.pack_into("<I", setup, 0x214, 0x100000)  # code32_start
struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
struct.pack_into("<I", setup, 0x230, 0x200000)  # kernel_alignment
struct.pack_into("<B", setup, 0x234, 1)  # relocatable
struct.pack_into("<H", setup, 0x236, 0 if a.no_64bit else 0x1)  # XLF_KERNEL_64
struct.pack_into("<I", setup, 0x238, 2047)  # cmdline_size
struct.pack_into("<Q", setup, 0x258, 0x1000000)  # pref_address
struct.pack_into("<I", setup, 0x260, a.init_size)
with open(a.out, "wb") as f:
    f.write(setup + bytes(payload))
