"""Read a core file with struct, independently of the package's elf.py.

Why this exists: tests must judge our cores with a reader that is not the
code under test; this one takes program headers and notes straight from the
bytes (64-bit little-endian cores, which is what x86_64 and aarch64 give).
"""
import struct

PT_LOAD, PT_NOTE = 1, 4
NT_PRSTATUS = 1


def read_core(path):
    """(program headers, notes, bytes) of a 64-bit LE core: phdrs as dicts,
    notes as (name, type, desc); asserts the structure holds together."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not ELF64 LE"
    e_type, = struct.unpack_from("<H", data, 16)
    assert e_type == 4, "not ET_CORE"
    e_phoff, = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    phdrs = []
    for i in range(e_phnum):
        t, fl, off, va, pa, fsz, msz, al = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        assert off + fsz <= len(data), "segment %d beyond the file" % i
        phdrs.append(dict(type=t, flags=fl, offset=off, vaddr=va, filesz=fsz,
                          memsz=msz))
    notes = []
    for ph in phdrs:
        if ph["type"] != PT_NOTE:
            continue
        pos, end = ph["offset"], ph["offset"] + ph["filesz"]
        while pos < end:
            nsz, dsz, nt = struct.unpack_from("<III", data, pos)
            pos += 12
            name = data[pos:pos + nsz].rstrip(b"\0")
            pos += (nsz + 3) & ~3
            notes.append((name, nt, data[pos:pos + dsz]))
            pos += (dsz + 3) & ~3
        assert pos == end, "notes overrun their segment"
    return phdrs, notes, data



NT_FILE = 0x46494C45


def nt_file(notes):
    """(count, [(start, end, page offset)], names) of a 64-bit LE core's
    NT_FILE note, the names left as the raw NUL-separated bytes."""
    desc = next((d for _, t, d in notes if t == NT_FILE), None)
    assert desc is not None, "no NT_FILE"
    count, _ = struct.unpack_from("<QQ", desc)
    triples = [struct.unpack_from("<QQQ", desc, 16 + 24 * i) for i in range(count)]
    return count, triples, desc[16 + 24 * count:]
