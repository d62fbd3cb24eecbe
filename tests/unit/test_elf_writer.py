"""The core's layout (elf.py) and its streaming (writer.py), read back with
the test suite's own struct reader (helpers.corefile), not elf.py."""
import ctypes
import os
from dataclasses import dataclass, field

import pytest

from criu_coredump import arch as arches
from criu_coredump import elf
from criu_coredump.errors import BadImage
from criu_coredump.imagedir import ImageFile
from criu_coredump.sources import Extent, Source
from criu_coredump.writer import CoreWriter

from ..helpers.corefile import PT_LOAD, PT_NOTE, read_core

P = 4096
X86 = arches.by_name("x86_64")


@dataclass
class Seg:
    vaddr: int
    memsz: int
    dump_size: int
    flags: int = elf.PF_R | elf.PF_W
    parts: list = field(default_factory=list)

    def extents(self):
        return iter(self.parts)


class FileSource(Source):
    def __init__(self, path, base=0, size=None):
        self.path, self.base, self.size, self.shorts = path, base, size, []

    def open(self):
        return ImageFile(os.open(self.path, os.O_RDONLY), self.base, self.size)

    def short(self, addr, missing):
        self.shorts.append((addr, missing))


def test_layout_of_an_elf64_core():
    segs = [Seg(0x1000, 3 * P, 2 * P), Seg(0x9000, P, 0), Seg(0xa000, P, P)]
    lay = elf.compute_layout(elf.ELF64, 1000, segs)
    # Ehdr 64 bytes, Phdr 56 bytes (the ELF64 ABI); PT_NOTE first
    assert lay.notes_offset == 64 + 4 * 56
    assert lay.data_offset == 4096                       # page aligned
    assert lay.seg_offsets == [4096, 4096 + 2 * P, 4096 + 2 * P]
    assert (lay.phnum, lay.file_size, lay.shoff) == (4, 4096 + 3 * P, 0)


def test_past_pn_xnum_the_count_is_in_a_section_header():
    segs = [Seg(i * P, P, 0) for i in range(elf.PN_XNUM)]
    lay = elf.compute_layout(elf.ELF64, 0, segs)
    assert lay.phnum == elf.PN_XNUM + 1
    assert lay.shoff == lay.file_size - ctypes.sizeof(elf.ELF64.Shdr)
    head, shdr = elf.headers(elf.ELF64, X86, lay, segs)
    eh = elf.ELF64.Ehdr.from_buffer_copy(head)
    sh = elf.ELF64.Shdr.from_buffer_copy(shdr)
    assert (eh.e_phnum, eh.e_shnum, eh.e_shoff) == (elf.PN_XNUM, 1, lay.shoff)
    assert (sh.sh_type, sh.sh_info) == (elf.SHT_NULL, elf.PN_XNUM + 1)


def test_note_records_are_padded_to_four():
    rec = elf.note_bytes("CORE", 1, b"abcde")
    assert rec[:12] == (5).to_bytes(4, "little") + (5).to_bytes(4, "little") + (1).to_bytes(4, "little")
    assert rec[12:20] == b"CORE\0\0\0\0" and rec[20:25] == b"abcde"
    assert len(rec) == 28
    big = elf.note_bytes("CORE", 1, b"", "big")
    assert big[:12] == (5).to_bytes(4, "big") + bytes(4) + (1).to_bytes(4, "big")


def test_the_writer_streams_extents_into_place(tmp_path):
    src_path = tmp_path / "pages.img"
    src_path.write_bytes(b"A" * P + b"B" * P + b"C" * P)
    src = FileSource(str(src_path))
    segs = [Seg(0x10000, 4 * P, 4 * P, parts=[Extent(0x10000 + P, 2 * P, src, P)]),
            Seg(0x20000, P, 0),
            Seg(0x30000, P, P, elf.PF_R | elf.PF_X, [Extent(0x30000, P, src, 0)])]
    core = str(tmp_path / "core.1")
    notes = [elf.note_bytes("CORE", 1, b"x" * 10), elf.note_bytes("CORE", 6, b"y" * 8)]
    with CoreWriter(core) as w:
        copied = w.write(elf.ELF64, X86, iter(notes), segs)
    assert copied == 3 * P
    phdrs, got_notes, data = read_core(core)
    assert [(n, t, d) for n, t, d in got_notes] == [(b"CORE", 1, b"x" * 10), (b"CORE", 6, b"y" * 8)]
    loads = [p for p in phdrs if p["type"] == PT_LOAD]
    assert phdrs[0]["type"] == PT_NOTE
    assert [(p["vaddr"], p["filesz"], p["memsz"]) for p in loads] == \
        [(0x10000, 4 * P, 4 * P), (0x20000, 0, P), (0x30000, P, P)]
    a = loads[0]["offset"]
    assert data[a:a + P] == bytes(P)                        # a hole
    assert data[a + P:a + 3 * P] == b"B" * P + b"C" * P
    assert data[a + 3 * P:a + 4 * P] == bytes(P)
    assert data[loads[2]["offset"]:][:P] == b"A" * P
    assert [f for f in os.listdir(str(tmp_path)) if f.endswith(".tmp")] == []


def test_a_source_that_ends_early_is_told_and_its_image_range_is_kept(tmp_path):
    (tmp_path / "blob").write_bytes(b"Z" * 100 + b"D" * P + b"E" * 50)
    src = FileSource(str(tmp_path / "blob"), base=100, size=P + 10)
    segs = [Seg(0x10000, 2 * P, 2 * P, parts=[Extent(0x10000, 2 * P, src, 0)])]
    with CoreWriter(str(tmp_path / "core.2")) as w:
        assert w.write(elf.ELF64, X86, b"", segs) == P + 10
    assert src.shorts == [(0x10000 + P + 10, P - 10)]
    phdrs, _, data = read_core(str(tmp_path / "core.2"))
    off = [p for p in phdrs if p["type"] == PT_LOAD][0]["offset"]
    assert data[off:off + P + 10] == b"D" * P + b"E" * 10  # not past the range
    assert data[off + P + 10:off + 2 * P] == bytes(P - 10)


def test_an_error_leaves_no_core_and_no_temporary(tmp_path):
    class Broken(FileSource):
        def short(self, addr, missing):
            raise BadImage(self.path, "ends early")
    (tmp_path / "s").write_bytes(b"x")
    segs = [Seg(0x10000, P, P, parts=[Extent(0x10000, P, Broken(str(tmp_path / "s")), 0)])]
    with pytest.raises(BadImage):
        with CoreWriter(str(tmp_path / "core.3")) as w:
            w.write(elf.ELF64, X86, b"", segs)
    assert sorted(os.listdir(str(tmp_path))) == ["s"]
