"""What CRIU 4.x checkpoints of today's processes hold, converted as the
kernel's core would show it: guard regions (glibc 2.42+), other CRIU 4.x
VMA status bits, zombies with CRIU 4.2's thread ids, files deleted while
mapped (ghost files), build-ids, and NT_FILE names.

Every expectation is read back with a real reader (gdb, readelf) or taken
from the images with pycriu directly, never from the package under test.
"""
import base64
import lzma
import os
import re
import shutil
import struct
import subprocess

import pytest
from pycriu import images as pimages

from .helpers import synth
from .helpers.tools import need, run_coredump
from .helpers.tools import convert, gdb_memory, loads
from .helpers import corefile
from .helpers.corefile import read_core

pytestmark = pytest.mark.slow

P = synth.PAGE
GUARD = 1 << 16


def load_img(path):
    with open(path, "rb") as f:
        return pimages.load(f)


def nt_file(core):
    """[(start, end, name)] of a core's NT_FILE (file offsets left out:
    gdb's gcore writes them in bytes with a page size of 1)."""
    count, triples, names = corefile.nt_file(read_core(core)[1])
    return [(s, e, n.decode()) for (s, e, _), n in
            zip(triples, names.split(b"\0")[:count])]


# -- guard regions ---------------------------------------------------------

def test_guard_regions_are_no_mappings(fixtures_dir, cores, tmp_path):
    """modern_threads (glibc 2.43): three guard entries appended to the
    VMAs; the checkpoint converts with exit 0 (`cores` checks it), one
    PT_LOAD per real VMA, NT_FILE as gdb 18's gcore has it, and the guard
    pages read as zeros."""
    fx = fixtures_dir("modern_threads")
    mm = load_img(os.path.join(fx, "images", "mm-7668.img"))["entries"][0]
    real = [v for v in mm["vmas"] if not v["status"] & GUARD]
    guards = [v for v in mm["vmas"] if v["status"] & GUARD]
    assert len(guards) == 3
    core = os.path.join(cores("modern_threads"), "core.7668")
    assert sorted(loads(core)) == sorted(v["start"] for v in real)
    ref = str(tmp_path / "ref.core")
    with lzma.open(os.path.join(fx, "ref.core.xz")) as src, open(ref, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert nt_file(core) == nt_file(ref)
    mem = gdb_memory(core, [(g["start"], P) for g in guards], tmp_path / "mem")
    assert mem == [bytes(P)] * 3


def _guarded_file_checkpoint(tmp_path, extra_status=0, guard=(1, 2)):
    """A shared file mapping of 4 pages of a file in the root, with a guard
    entry over pages [guard)."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    content = b"".join(bytes([0x41 + i]) * P for i in range(4))
    (root / "data" / "file").write_bytes(content)
    ck = synth.Checkpoint(tmp_path / "img")
    fid = ck.reg_file(7, "/data/file", size=len(content))
    base = 0x20000000
    p = ck.process(600)
    p.vma(base, base + 4 * P, prot=synth.RW, kind="file_shared", shmid=fid,
          status=extra_status)
    g0, g1 = guard
    p.vmas.append({"start": base + g0 * P, "end": base + g1 * P, "pgoff": 0,
                   "shmid": 0, "prot": 0, "flags": 0, "status": GUARD,
                   "fd": -1, "madv": 0})
    ck.write()
    return ck.dir, str(root), base, content


def test_guard_pages_inside_a_file_mapping_read_as_zeros(tmp_path):
    """get_dump_page() finds no page behind a guard marker: the kernel's
    core has zeros there, even where the file has data."""
    img, root, base, content = _guarded_file_checkpoint(tmp_path)
    p, cores = convert(img, tmp_path / "out", "--root", root, check=0)
    assert p.stderr == ""
    mem = gdb_memory(cores[600], [(base, 4 * P)], tmp_path / "mem")[0]
    assert mem == content[:P] + bytes(P) + content[2 * P:]


def test_guard_outside_every_vma_is_a_warning(tmp_path):
    img, root, base, content = _guarded_file_checkpoint(tmp_path, guard=(8, 9))
    p, cores = convert(img, tmp_path / "out", "--root", root, check=3)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert re.match(r"coredump: warning: .*mm-600\.img: guard region "
                    r"0x20008000-0x20009000 lies outside every VMA; ignored$",
                    lines[0]), p.stderr
    mem = gdb_memory(cores[600], [(base, 4 * P)], tmp_path / "mem")[0]
    assert mem == content


def test_unknown_vma_status_bit_is_a_warning_not_a_refusal(tmp_path):
    img, root, base, content = _guarded_file_checkpoint(tmp_path,
                                                        extra_status=1 << 24)
    p, cores = convert(img, tmp_path / "out", "--root", root, check=3)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert re.match(r"coredump: warning: .*mm-600\.img: VMA status bits "
                    r"0x1000000 are unknown", lines[0]), p.stderr
    assert "Traceback" not in p.stderr
    assert os.path.exists(cores[600])


def test_criu4_status_bits_are_read_as_the_kernel_dumps_them(tmp_path):
    """Shadow stack (1<<15) is anonymous memory, dumped; uprobes' XOL area
    (1<<17) and plugin device mappings (1<<27) are VM_IO/special, not
    dumped; none is a warning."""
    ck = synth.Checkpoint(tmp_path / "img")
    p = ck.process(601)
    shstk, uprobes, dev = 0x30000000, 0x30100000, 0x30200000
    p.vma(shstk, shstk + P, status=1 << 15)
    p.vma(uprobes, uprobes + P, prot=synth.RX, status=1 << 17)
    p.vma(dev, dev + P, status=1 << 27)
    data = bytes(range(256)) * 16
    p.pages(shstk, data)
    ck.write()
    r, cores = convert(ck.dir, tmp_path / "out", check=0)
    assert r.stderr == ""
    segs = loads(cores[601])
    assert segs[shstk][1] == P and segs[uprobes][1] == 0 and segs[dev][1] == 0
    assert gdb_memory(cores[601], [(shstk, P)], tmp_path / "mem") == [data]


# -- zombies ---------------------------------------------------------------

def test_zombies_of_criu_42_are_skipped_and_the_rest_converts(fixtures_dir,
                                                              tmp_path):
    """zombie00: pstree gives the zombies [0] and an uninitialised id as
    threads; the live process converts with exit 0, each zombie is a note."""
    fx = fixtures_dir("zdtm/zombie00")
    tree = load_img(os.path.join(fx, "images", "pstree.img"))["entries"]
    assert any(t > 1 << 31 for e in tree for t in e["threads"])
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", tmp_path,
                     "--root", os.path.join(fx, "root"), check=0)
    assert os.listdir(tmp_path) == ["core.1103"]
    for pid in (1104, 1105, 1106, 1107):
        assert re.search(r"^coredump: note: process %d \(\S+\) skipped: zombie"
                         % pid, p.stderr, re.M), p.stderr
    assert "error" not in p.stderr


# -- files deleted while mapped --------------------------------------------

def test_ghost_file_pages_come_from_the_ghost_image(fixtures_dir, tmp_path):
    """unlink_mmap00 maps a file, then unlinks it; CRIU keeps its contents
    in ghost-file-1.img.  With every mapping dumped (filter 0x7f), the
    core's bytes are the ghost's, with no warning and exit 0."""
    fx = fixtures_dir("zdtm/unlink_mmap00")
    imgs = os.path.join(fx, "images")
    ghost = load_img(os.path.join(imgs, "ghost-file-1.img"))["entries"][0]
    content = base64.b64decode(ghost["extra"])
    files = load_img(os.path.join(imgs, "files.img"))["entries"]
    remap = load_img(os.path.join(imgs, "remap-fpath.img"))["entries"][0]
    assert remap["remap_type"] == "GHOST"
    name = next(f["reg"]["name"] for f in files if f["id"] == remap["orig_id"])
    mm = load_img(os.path.join(imgs, "mm-31199.img"))["entries"][0]
    vma = next(v for v in mm["vmas"] if v["shmid"] == remap["orig_id"]
               and v["pgoff"] == 0 and not v["prot"] & 2)
    p, cores = convert(imgs, tmp_path / "out", "--root", os.path.join(fx, "root"),
                       "--filter", "0x7f", check=0)
    assert p.stderr == ""
    mem = gdb_memory(cores[31199], [(vma["start"], P)], tmp_path / "mem")[0]
    assert mem == content[:P] and mem[:1] == b"a"
    names = {n for _, _, n in nt_file(cores[31199])}
    assert name + " (deleted)" in names


def test_linked_remap_pages_come_from_criu_s_link(tmp_path):
    """A LINKED remap: CRIU hard-linked the deleted file to a name of its
    own (files.img entry remap_id); its pages are read from there, and
    NT_FILE names the mapping by its kernel name, 'PATH (deleted)'."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    content = bytes([0x5A]) * P + bytes([0x6B]) * P
    (root / "d" / "link_remap.3").write_bytes(content)
    ck = synth.Checkpoint(tmp_path / "img")
    orig = ck.reg_file(3, "/d/gone", size=len(content))
    link = ck.reg_file(4, "/d/link_remap.3", size=len(content))
    p = ck.process(602)
    base = 0x40000000
    p.vma(base, base + 2 * P, kind="file_shared", shmid=orig)
    ck.write()
    synth.write_image(os.path.join(ck.dir, "remap-fpath.img"), "REMAP_FPATH",
                      [{"orig_id": orig, "remap_id": link, "remap_type": "LINKED"}])
    r, cores = convert(ck.dir, tmp_path / "out", "--root", str(root), check=0)
    assert r.stderr == ""
    assert gdb_memory(cores[602], [(base, 2 * P)], tmp_path / "mem") == [content]
    assert nt_file(cores[602]) == [(base, base + 2 * P, "/d/gone (deleted)")]


# -- build-ids -------------------------------------------------------------

def _readelf_build_id(path):
    need("readelf")
    out = subprocess.run(["readelf", "-n", path], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return re.search(r"Build ID: ([0-9a-f]+)", out).group(1)


def test_a_library_of_another_build_is_not_used(fixtures_dir, tmp_path):
    """threads with sid's libc in place of the one the process mapped: a
    warning naming the file and both build-ids (as readelf reads them),
    its pages are holes, exit 3; the other files are used."""
    fx = fixtures_dir("threads")
    root = tmp_path / "root"
    shutil.copytree(os.path.join(fx, "root"), root, symlinks=True)
    libc = root / "usr/lib/x86_64-linux-gnu/libc.so.6"
    mapped = _readelf_build_id(str(libc))
    other = os.path.join(fixtures_dir("modern_threads"), "root",
                         "usr/lib/x86_64-linux-gnu/libc.so.6")
    os.unlink(libc)
    shutil.copy(other, libc)
    found = _readelf_build_id(str(libc))
    assert found != mapped
    p, cores = convert(os.path.join(fx, "images"), tmp_path / "out",
                       "--root", str(root), "--filter", "0x3f", check=3)
    lines = p.stderr.strip().splitlines()
    assert lines == ["coredump: warning: %s: is not the file the process mapped: "
                     "build-id %s, the checkpoint recorded %s; its pages are holes"
                     % (os.path.join(str(root), "usr/lib/x86_64-linux-gnu/libc.so.6"),
                        found, mapped)], p.stderr
    # libc's first mapping: its ELF header page is a hole, not sid's header
    libc_start = min(s for s, _, n in nt_file(cores[13466]) if n.endswith("libc.so.6"))
    mem = gdb_memory(cores[13466], [(libc_start, 64)], tmp_path / "mem")[0]
    assert mem == bytes(64)


def test_matching_build_ids_give_no_warning(fixtures_dir, tmp_path):
    """The fixtures' own files carry the build-ids CRIU recorded: they are
    used, without a warning, every mapping dumped."""
    for name in ("threads", "zdtm/aio00"):
        fx = fixtures_dir(name)
        out = tmp_path / name.replace("/", "-")
        p, _ = convert(os.path.join(fx, "images"), out, "--root",
                       os.path.join(fx, "root"), "--filter", "0x3f", check=0)
        assert p.stderr == "", p.stderr


# -- NT_FILE names ---------------------------------------------------------

CANT_OPEN = re.compile(r"^warning: Can't open file (.*?)(?: which was expanded to .*)? "
                       r"during file-backed mapping note processing$", re.M)


def test_nt_file_names_the_special_mappings_as_the_gcore(fixtures_dir, cores):
    """gdb 13, on the gcores, named every NT_FILE entry it could not open
    (expected.txt): the aio ring, shared anonymous memory, memfds, deleted
    files, packet-socket rings.  Our cores' NT_FILE (read with the test's
    own reader) names each of them so, the socket's inode aside: CRIU's
    images do not keep it."""
    def norm(n):
        return re.sub(r"socket:\[\d+\]", "socket:[N]", n)
    for name in ("zdtm/aio00", "zdtm/packet_sock_mmap", "zdtm/memfd00",
                 "zdtm/unlink_mmap00", "shmem"):
        fx = fixtures_dir(name)
        with open(os.path.join(fx, "expected.txt")) as f:
            want = {norm(n) for n in CANT_OPEN.findall(f.read())}
        assert want, name
        out_dir = cores(name)
        core = os.path.join(out_dir, sorted(os.listdir(out_dir))[0])
        ours = {norm(n) for _, _, n in nt_file(core)}
        assert want <= ours, (name, sorted(want - ours))


def test_build_id_outside_every_pt_note_is_found(fixtures_dir, tmp_path):
    """Go's linker puts .note.gnu.build-id in the text segment, covered by
    no PT_NOTE: the build-id is then read from the section headers, and is
    what readelf reads there."""
    from criu_coredump.buildid import read_build_id
    src = os.path.join(fixtures_dir("threads"), "root", "opt/ccd/threads/prog")
    data = bytearray(open(src, "rb").read())
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        at = phoff + i * phentsize
        if struct.unpack_from("<I", data, at)[0] == 4:      # PT_NOTE
            struct.pack_into("<I", data, at, 0)             # PT_NULL
    prog = tmp_path / "prog"
    prog.write_bytes(bytes(data))
    out = subprocess.run(["readelf", "-lW", str(prog)], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    assert " NOTE " not in out
    fd = os.open(prog, os.O_RDONLY)
    try:
        assert read_build_id(fd).hex() == _readelf_build_id(str(prog))
    finally:
        os.close(fd)
