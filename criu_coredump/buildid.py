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
import ctypes
import os

from . import elf

PT_NOTE = 4
SHT_NOTE = 7
NT_GNU_BUILD_ID = 3
_MAX_NOTES = 1 << 16   # bytes of notes read at most from one segment/section
_MAX_ENTRIES = 4096    # program or section headers read at most

# EI_CLASS and EI_DATA: the structures' place in elf.structures(), their order
_CLASSES = {2: 0, 1: 3}
_ORDERS = {1: "little", 2: "big"}
_LAYOUTS = {}  # (EI_CLASS, EI_DATA) -> (Ehdr, Phdr, Shdr, Nhdr), as met


def _layout(elfclass, data):
    """(Ehdr, Phdr, Shdr, Nhdr) of an ELF class and byte order, or None
    for values that name neither."""
    key = (elfclass, data)
    if key not in _LAYOUTS:
        if elfclass not in _CLASSES or data not in _ORDERS:
            return None
        s, i = elf.structures(_ORDERS[data]), _CLASSES[elfclass]
        _LAYOUTS[key] = (s[i], s[i + 1], s[i + 2], s[6])
    return _LAYOUTS[key]


def read_build_id(fd):
    """The build-id bytes of the ELF file open on `fd`, or None when it is
    not an ELF file or has no build-id note."""
    head = os.pread(fd, 64, 0)
    if len(head) < 52 or head[:4] != b"\x7fELF":
        return None
    layout = _layout(head[4], head[5])
    if layout is None:
        return None
    Ehdr, Phdr, Shdr, Nhdr = layout
    eh = Ehdr.from_buffer_copy(head.ljust(64, b"\0")[:ctypes.sizeof(Ehdr)])
    # PT_NOTE segments first; then the SHT_NOTE sections, for Go's linker,
    # which puts .note.gnu.build-id in the text segment, in no PT_NOTE
    places = [(p.p_offset, p.p_filesz) for p in _table(
        fd, Phdr, eh.e_phoff, eh.e_phentsize, eh.e_phnum) if p.p_type == PT_NOTE]
    places += [(sh.sh_offset, sh.sh_size) for sh in _table(
        fd, Shdr, eh.e_shoff, eh.e_shentsize, eh.e_shnum) if sh.sh_type == SHT_NOTE]
    for offset, size in places:
        found = _in_notes(os.pread(fd, min(size, _MAX_NOTES), offset), Nhdr)
        if found is not None:
            return found
    return None


def _table(fd, cls, offset, entsize, count):
    """The entries of a header table, or none when it is implausible."""
    if entsize < ctypes.sizeof(cls) or not 0 < count <= _MAX_ENTRIES:
        return []
    raw = os.pread(fd, entsize * count, offset)
    return [cls.from_buffer_copy(raw, i * entsize)
            for i in range(len(raw) // entsize)]


def _in_notes(data, Nhdr):
    hsize = ctypes.sizeof(Nhdr)
    pos = 0
    while pos + hsize <= len(data):
        n = Nhdr.from_buffer_copy(data, pos)
        name_at = pos + hsize
        desc_at = name_at + elf.align4(n.n_namesz)
        end = desc_at + elf.align4(n.n_descsz)
        if desc_at + n.n_descsz > len(data):
            return None
        if n.n_type == NT_GNU_BUILD_ID and data[name_at:name_at + n.n_namesz] == b"GNU\0":
            return bytes(data[desc_at:desc_at + n.n_descsz])
        pos = end
    return None


def same_build(recorded, found):
    """Whether the build-id CRIU recorded is `found`.  CRIU copies the note's
    bytes into 32-bit words of the machine that dumped (so padded with
    zeros to a multiple of 4); the words are read back here little-endian,
    so on a big-endian machine's images (s390x) each word is reversed."""
    if found is None:
        return False
    padded = found + bytes(-len(found) % 4)
    swapped = b"".join(padded[i:i + 4][::-1] for i in range(0, len(padded), 4))
    return recorded in (padded, swapped)


def shown(build_id):
    """A build-id as readelf and gdb print it (hex), or 'none'."""
    return build_id.hex() if build_id else "none"
