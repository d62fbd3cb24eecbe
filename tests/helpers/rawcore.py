"""Writing a core-<tid>.img whose machine type or thread_info field the
installed pycriu does not know (pycriu 3.17 stops at MIPS: no LOONGARCH64 7,
RISCV64 8, no ti_loongarch64 12, ti_riscv64 13).

The entry is encoded by pycriu without those fields, then the missing ones
are appended as protobuf wire bytes by the small encoder below, from the
field numbers of CRIU's images/core.proto, core-riscv64.proto and
core-loongarch64.proto (copied here, not taken from criu_coredump: the
images a test feeds the tool must not share its declarations).  proto2
repeated scalars are not packed, as protobuf-c writes them.
"""
import struct

import pycriu
from pycriu.images import pb, pb2dict

U64, U32 = "uint64", "uint32"
RISCV64_REGS = ("pc ra sp gp tp t0 t1 t2 s0 s1 a0 a1 a2 a3 a4 a5 a6 a7 "
                "s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 t3 t4 t5 t6").split()

# core_entry field number and thread_info message, by CRIU's names
THREAD_INFO = {
    "ti_loongarch64": (12, [
        ("clear_tid_addr", 1, U64), ("tls", 2, U64),
        ("gpregs", 3, [("regs", 1, "repeated"), ("pc", 2, U64)]),
        ("fpregs", 4, [("regs", 1, "repeated"), ("fcc", 2, U64), ("fcsr", 3, U32)])]),
    "ti_riscv64": (13, [
        ("clear_tid_addr", 1, U64), ("tls", 2, U64),
        ("gpregs", 3, [(n, i, U64) for i, n in enumerate(RISCV64_REGS, 1)]),
        ("fpsimd", 4, [("f", 1, "repeated"), ("fcsr", 2, U32)])]),
}


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode(fields, value):
    """Wire bytes of a message `value` (dict) declared by `fields`."""
    out = b""
    for name, number, kind in fields:
        if name not in value:
            continue
        v = value[name]
        if isinstance(kind, list):
            body = encode(kind, v)
            out += varint(number << 3 | 2) + varint(len(body)) + body
        elif kind == "repeated":
            out += b"".join(varint(number << 3) + varint(x) for x in v)
        else:
            out += varint(number << 3) + varint(v)
    return out


def entry_bytes(entry, mtype, ti_field, ti):
    """The wire bytes of a core_entry: `entry` (a pycriu dict without mtype
    and thread_info), machine type `mtype` (a number), the thread_info `ti`
    (a dict in CRIU's field names) in core_entry's `ti_field`."""
    msg = pb.core_entry()
    pb2dict.dict2pb(dict(entry, mtype="UNKNOWN"), msg)
    raw = msg.SerializePartialToString()
    # protobuf writes field 1 first (0x08, one byte for 0): ours replaces it
    assert raw[:2] == b"\x08\x00", raw[:2]
    number, fields = THREAD_INFO[ti_field]
    body = encode(fields, ti)
    return (varint(1 << 3) + varint(mtype) + raw[2:]
            + varint(number << 3 | 2) + varint(len(body)) + body)


def write_core_image(path, entry, mtype, ti_field, ti):
    """core-<tid>.img holding one entry (entry_bytes)."""
    raw = entry_bytes(entry, mtype, ti_field, ti)
    with open(path, "wb") as f:
        pycriu.images.dump({"magic": "CORE", "entries": []}, f)
        f.write(struct.pack("<I", len(raw)) + raw)
