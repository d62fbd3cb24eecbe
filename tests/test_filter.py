"""--filter MASK: the kernel's coredump_filter bits decide how much of each
mapping is dumped (vma_dump_size()), checked bit by bit with readelf's
FileSiz of each mapping's PT_LOAD, and the bytes with gdb."""
import os

import pytest

from .helpers import synth
from .helpers.tools import convert, gdb_memory, loads

pytestmark = pytest.mark.slow

P = synth.PAGE
PID = 500
ELF_HEAD = b"\x7fELF\x02\x01\x01" + bytes(9)

# name -> (start address, pages)
V = {
    "anon": (0x10000000, 2),        # private anonymous, one page written
    "anon_untouched": (0x10100000, 2),  # private anonymous, never written
    "anon_shared": (0x10200000, 2),  # MAP_SHARED|MAP_ANONYMOUS
    "exec_pg0": (0x10300000, 2),    # private map of an executable, offset 0
    "elf_pg0": (0x10400000, 2),     # private map of a non-executable ELF file
    "data_pg0": (0x10500000, 2),    # private map of a plain file
    "exec_pg1": (0x10600000, 2),    # the executable again, from page 1
    "file_shared": (0x10700000, 2),  # MAP_SHARED of a plain file
    "huge_private": (0x10800000, 2),  # MAP_HUGETLB private, written
    "huge_shared": (0x10900000, 2),  # MAP_HUGETLB shared
    "dontdump": (0x10a00000, 2),    # written, but MADV_DONTDUMP
    "jit": (0x10b00000, 8),         # anonymous rwx (JIT code), pages 0 and 5
    "data_written": (0x10c00000, 2),  # private file map, page 1 written
}


def expected(mask):
    """FileSiz of each mapping under `mask`, by the kernel's rules."""
    def bit(n):
        return mask & (1 << n)

    def whole(name):
        return V[name][1] * P

    def pick(name, cond):
        return whole(name) if cond else 0

    elf_header = P if bit(4) else 0
    return {
        "anon": pick("anon", bit(0)),
        "anon_untouched": 0,
        "anon_shared": pick("anon_shared", bit(1)),
        "exec_pg0": whole("exec_pg0") if bit(2) else elf_header,
        "elf_pg0": whole("elf_pg0") if bit(2) else elf_header,
        "data_pg0": pick("data_pg0", bit(2)),
        "exec_pg1": pick("exec_pg1", bit(2)),
        "file_shared": pick("file_shared", bit(3)),
        "huge_private": pick("huge_private", bit(5)),
        "huge_shared": pick("huge_shared", bit(6)),
        "dontdump": 0,
        "jit": pick("jit", bit(0)),
        "data_written": pick("data_written", bit(0) or bit(2)),
    }


def page(text):
    return text.encode().ljust(P, b"~")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    base = tmp_path_factory.mktemp("filter")
    root = base / "root"
    files = {  # path -> (mode, contents)
        "/bin/prog": (0o100755, ELF_HEAD + page("exec page 0")[16:]
                      + page("exec page 1") + page("exec page 2")),
        "/lib/libx.so": (0o100644, ELF_HEAD + page("lib page 0")[16:]
                         + page("lib page 1")),
        "/data/plain": (0o100644, page("plain page 0") + page("plain page 1")),
        "/data/shared": (0o100644, page("shared page 0") + page("shared page 1")),
    }
    ck = synth.Checkpoint(base / "img")
    ids = {}
    for i, (path, (mode, data)) in enumerate(sorted(files.items())):
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data)
        ids[path] = ck.reg_file(10 + i, path, size=len(data), mode=mode)
    p = ck.process(PID)

    def vma(name, **kw):
        start, n = V[name]
        p.vma(start, start + n * P, **kw)
        return start

    p.pages(vma("anon"), page("anon 0"))
    vma("anon_untouched")
    ck.shmem_pages(77, 0, page("shm 0") + page("shm 1"))
    vma("anon_shared", kind="anon_shared", shmid=77)
    vma("exec_pg0", prot=synth.RX, kind="file", shmid=ids["/bin/prog"])
    vma("elf_pg0", prot=synth.PROT_READ, kind="file", shmid=ids["/lib/libx.so"])
    vma("data_pg0", prot=synth.PROT_READ, kind="file", shmid=ids["/data/plain"])
    vma("exec_pg1", prot=synth.RX, kind="file", shmid=ids["/bin/prog"], pgoff=P)
    vma("file_shared", kind="file_shared", shmid=ids["/data/shared"])
    p.pages(vma("huge_private", flags=synth.MAP_HUGETLB), page("huge 0") + page("huge 1"))
    ck.shmem_pages(78, 0, page("hugeshm 0") + page("hugeshm 1"))
    vma("huge_shared", kind="anon_shared", shmid=78, flags=synth.MAP_HUGETLB)
    p.pages(vma("dontdump", madv=1 << synth.MADV_DONTDUMP), page("secret"))
    jit = vma("jit", prot=synth.RWX)
    p.pages(jit, page("jit 0")).pages(jit + 5 * P, page("jit 5"))
    start = vma("data_written", prot=synth.RW, kind="file", shmid=ids["/data/plain"])
    p.pages(start + P, page("written 1"))
    return ck.write(), str(root)


MASKS = [1 << b for b in range(9)] + [0, 0x1ff, None]


@pytest.mark.parametrize("mask", MASKS, ids=lambda m: "default" if m is None
                         else "0x%x" % m)
def test_each_filter_bit(checkpoint, tmp_path, mask):
    images, root = checkpoint
    args = ["--root", root] + ([] if mask is None else ["--filter", hex(mask)])
    _, cores = convert(images, tmp_path, *args)
    segs = loads(cores[PID])
    got = {name: segs[start][1] for name, (start, _) in V.items()}
    assert got == expected(0x3b if mask is None else mask)
    for name, (start, n) in V.items():
        assert segs[start][2] == n * P  # p_memsz is always the whole mapping


def test_default_filter_contents(checkpoint, tmp_path):
    """Under the default 0x3b, what gdb reads in each dumped mapping."""
    images, root = checkpoint
    _, cores = convert(images, tmp_path / "out", "--root", root)
    jit, _ = V["jit"]
    want = [
        (V["anon"][0], page("anon 0")),
        (V["anon"][0] + P, bytes(P)),
        (V["anon_shared"][0] + P, page("shm 1")),
        (V["exec_pg0"][0], ELF_HEAD + page("exec page 0")[16:]),
        (V["elf_pg0"][0], ELF_HEAD + page("lib page 0")[16:]),
        (V["file_shared"][0] + P, page("shared page 1")),
        (V["huge_private"][0] + P, page("huge 1")),
        (V["data_written"][0], page("plain page 0")),
        (V["data_written"][0] + P, page("written 1")),
    ] + [(jit + i * P, page("jit %d" % i) if i in (0, 5) else bytes(P))
         for i in range(8)]
    got = gdb_memory(cores[PID], [(a, P) for a, _ in want], tmp_path / "gdb")
    for (addr, data), mem in zip(want, got):
        assert mem == data, hex(addr)


def test_jit_code_is_dumped_whole(checkpoint, tmp_path):
    """Anonymous executable memory with written pages is one whole segment
    (the tool CRIU ships cuts it to its first page)."""
    images, root = checkpoint
    _, cores = convert(images, tmp_path, "--root", root)
    start, n = V["jit"]
    off, filesz, memsz, flags = loads(cores[PID])[start]
    assert (filesz, memsz, flags) == (n * P, n * P, "RWE")


@pytest.mark.parametrize("value", ["0x400", "-1", "lots"])
def test_bad_filter_is_a_usage_error(checkpoint, tmp_path, value):
    images, _ = checkpoint
    r, cores = convert(images, tmp_path, "--filter", value, check=1)
    assert "coredump: error: argument --filter" in r.stderr
    assert cores == {}
    assert os.listdir(str(tmp_path)) == []
