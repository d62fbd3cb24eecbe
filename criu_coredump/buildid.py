"""The GNU build-id of an ELF file, to tell whether a file found at a
mapped file's path is the file the process had mapped.

CRIU (3.16+) records each mapped ELF file's NT_GNU_BUILD_ID note in
files.img.  A library read from --root (or from its own path on another
machine) whose build-id differs is another build: its pages would show the
debugger code and data the process never had.  Only the program headers'
PT_NOTE segments are read (where most linkers put .note.gnu.build-id), a
few KiB at most, through the descriptor that the pages are copied from,
then the SHT_NOTE sections for a file whose build-id note no PT_NOTE covers.
"""
import os
import struct

PT_NOTE = 4
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3
_MAX_NOTES = 1 << 16   # bytes of PT_NOTE read at most
_MAX_PHNUM = 4096


def read_build_id(fd):
    """The build-id bytes of the ELF file open on `fd`, or None when it is
    not an ELF file or has no build-id note."""
    head = os.pread(fd, 64, 0)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) \
            or head[5] not in (1, 2):
        return None
    is64 = head[4] == 2
    e = "<" if head[5] == 1 else ">"
    if is64:
        phoff, = struct.unpack_from(e + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", head, 54)
        ph_fmt, ph_min = e + "IIQQQQQQ", 56
    else:
        phoff, = struct.unpack_from(e + "I", head, 28)
        phentsize, phnum = struct.unpack_from(e + "HH", head, 42)
        ph_fmt, ph_min = e + "IIIIIIII", 32
    if phentsize >= ph_min and 0 < phnum <= _MAX_PHNUM:
        table = os.pread(fd, phentsize * phnum, phoff)
        for i in range(len(table) // phentsize):
            ph = struct.unpack_from(ph_fmt, table, i * phentsize)
            if ph[0] == PT_NOTE:
                offset, size = (ph[2], ph[5]) if is64 else (ph[1], ph[4])
                found = _in_notes(os.pread(fd, min(size, _MAX_NOTES), offset), e)
                if found is not None:
                    return found
    # Go's linker puts .note.gnu.build-id in the text segment, covered by no
    # PT_NOTE: look through the SHT_NOTE sections too
    if is64:
        shoff, = struct.unpack_from(e + "Q", head, 40)
        shentsize, shnum = struct.unpack_from(e + "HH", head, 58)
        sh_fmt, sh_min = e + "IIQQQQIIQQ", 64
    else:
        shoff, = struct.unpack_from(e + "I", head, 32)
        shentsize, shnum = struct.unpack_from(e + "HH", head, 46)
        sh_fmt, sh_min = e + "IIIIIIIIII", 40
    if shentsize < sh_min or not 0 < shnum <= _MAX_PHNUM:
        return None
    table = os.pread(fd, shentsize * shnum, shoff)
    for i in range(len(table) // shentsize):
        sh = struct.unpack_from(sh_fmt, table, i * shentsize)
        if sh[1] == SHT_NOTE:
            found = _in_notes(os.pread(fd, min(sh[5], _MAX_NOTES), sh[4]), e)
            if found is not None:
                return found
    return None


def _in_notes(data, e):
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if end > len(data) + 3:
            return None
        if ntype == NT_GNU_BUILD_ID and data[name_at:name_at + namesz] == b"GNU\0":
            return bytes(data[desc_at:desc_at + descsz])
        pos = end
    return None


def same_build(recorded, found):
    """Whether the build-id CRIU recorded (whole 32-bit words, so padded
    with zeros to a multiple of 4) is `found`."""
    if found is None:
        return False
    return recorded == found + bytes(-len(found) % 4)


def shown(build_id):
    """A build-id as readelf and gdb print it (hex), or 'none'."""
    return build_id.hex() if build_id else "none"
