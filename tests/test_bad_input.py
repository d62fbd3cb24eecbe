"""Malformed checkpoints: one line `coredump: error: <file>: <what>`, exit 2,
no traceback, no core left behind.

Every case is a real file: a corrupted copy of a fixture's image, or an
image decoded and re-encoded with pycriu's message classes with one field
changed (tests/helpers/imgedit.py).  Absurd sizes run under an address-space
limit, so an attempt to allocate what the images claim fails the test.
"""
import os
import re
import resource
import shutil
import struct
import subprocess

import pytest

from .helpers.tools import run_coredump
from .helpers.corefile import PT_LOAD, read_core
from .helpers.imgedit import edit_image, read_messages

pytestmark = pytest.mark.slow

PID = 13508  # stopped_static: one process, one thread, a static binary
PAGE = 4096
PE_LAZY, PE_PRESENT = 2, 4


@pytest.fixture
def imgs(fixtures_dir, tmp_path):
    """A writable copy of a fixture's image directory."""
    def copy(name="stopped_static"):
        dst = tmp_path / ("images-" + name)
        shutil.copytree(os.path.join(fixtures_dir(name), "images"), dst)
        return str(dst)
    return copy


def _limit_memory():
    # 1 GiB of address space: far more than a conversion of the fixtures
    # needs, far less than what the absurd images claim.
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def convert(images_dir, tmp_path, *extra, **kw):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = run_coredump("-i", images_dir, "-o", out, *extra,
                     preexec_fn=_limit_memory, **kw)
    return p, str(out)


def assert_error(p, out, path, what, code=2):
    """Exactly one error line naming `path`; `what` is a regex."""
    assert "Traceback" not in p.stderr, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("coredump: error")]
    assert len(errors) == 1, p.stderr
    assert re.fullmatch(re.escape("coredump: error: %s: " % path) + what, errors[0]), \
        errors[0]
    assert p.returncode == code, (p.returncode, p.stderr)
    if code == 2:
        assert os.listdir(out) == []
    for ln in p.stderr.splitlines():
        assert ln.startswith("coredump: "), "stray output: %r" % ln


def img(d, name):
    return os.path.join(d, name)


# -- the image directory --------------------------------------------------------

def test_missing_image_directory(tmp_path):
    p, out = convert(str(tmp_path / "nope"), tmp_path)
    assert_error(p, out, tmp_path / "nope", "no such image directory")


def test_empty_image_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    p, out = convert(str(tmp_path / "empty"), tmp_path)
    assert_error(p, out, tmp_path / "empty", "empty image directory")


def test_image_directory_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    p, out = convert(str(tmp_path / "f"), tmp_path)
    assert_error(p, out, tmp_path / "f", "not a directory")


def test_directory_without_pstree(imgs, tmp_path):
    d = imgs()
    os.unlink(img(d, "pstree.img"))
    p, out = convert(d, tmp_path)
    assert_error(p, out, d, r"no pstree\.img: not a CRIU image directory")


# -- magic, truncation, protobuf --------------------------------------------------

def test_unknown_magic(imgs, tmp_path):
    d = imgs()
    with open(img(d, "mm-%d.img" % PID), "r+b") as f:
        f.seek(4)  # the second magic, after IMG_COMMON
        f.write(struct.pack("<I", 0xDEADBEEF))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "mm-%d.img" % PID),
                 r"wrong magic 0xdeadbeef \(unknown\), expected a MM image")


def test_wrong_magic(imgs, tmp_path):
    d = imgs()
    shutil.copy(img(d, "core-%d.img" % PID), img(d, "mm-%d.img" % PID))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "mm-%d.img" % PID),
                 r"wrong magic 0x[0-9a-f]{8} \(CORE\), expected a MM image")


@pytest.mark.parametrize("keep,what", [
    (0, r"empty image"),
    (2, r"truncated image \(no magic\)"),
    (6, r"truncated image \(no second magic\)"),
    (10, r"truncated entry header"),
    (100, r"truncated entry \(88 of \d+ bytes\)"),
])
def test_truncated_image(imgs, tmp_path, keep, what):
    d = imgs()
    os.truncate(img(d, "mm-%d.img" % PID), keep)
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "mm-%d.img" % PID), what)


@pytest.mark.parametrize("payload", [
    b"\xff" * 40,               # invalid wire types
    b"\x0c",                    # an end-group tag: protobuf only warns
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far beyond the entry
], ids=["garbage", "end-group", "overlong-length"])
def test_garbage_protobuf(imgs, tmp_path, payload):
    d = imgs()
    with open(img(d, "core-%d.img" % PID), "rb") as f:
        head = f.read(8)
    with open(img(d, "core-%d.img" % PID), "wb") as f:
        f.write(head + struct.pack("<I", len(payload)) + payload)
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-%d.img" % PID), r"cannot decode core_entry.*")
    assert "Warning" not in p.stderr and "libprotobuf" not in p.stderr


def test_absurd_entry_size(imgs, tmp_path):
    d = imgs()
    with open(img(d, "pstree.img"), "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", 0xFFFFFFF0))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "pstree.img"), r"entry of 4294967280 bytes is absurd")


def test_image_that_is_a_fifo_does_not_hang(imgs, tmp_path):
    d = imgs()
    os.unlink(img(d, "pstree.img"))
    os.mkfifo(img(d, "pstree.img"))
    p, out = convert(d, tmp_path, timeout=60)
    assert_error(p, out, img(d, "pstree.img"), "not a regular file")


# -- images missing for a pid named in pstree ---------------------------------------

@pytest.mark.parametrize("name", ["core-%d.img", "mm-%d.img", "pagemap-%d.img"])
def test_missing_image_of_a_process(imgs, tmp_path, name):
    d = imgs()
    os.unlink(img(d, name % PID))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, name % PID), "missing")


def test_missing_image_of_a_thread(imgs, tmp_path):
    d = imgs("threads")
    os.unlink(img(d, "core-13468.img"))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-13468.img"), "missing")


def test_thread_without_registers(imgs, tmp_path):
    d = imgs("threads")
    edit_image(img(d, "core-13468.img"), lambda m: m[0].ClearField("thread_info"))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-13468.img"),
                 r"no x86_64 thread info \(registers\)")


def test_machine_type_unknown_to_pycriu_is_read(imgs, tmp_path):
    """mtype 7 (LOONGARCH64) is not in pycriu 3.17's enum: it is read all the
    same, and the x86 registers are not taken for loongarch64 ones."""
    d = imgs()
    with open(img(d, "core-%d.img" % PID), "r+b") as f:
        raw = f.read()
        f.seek(raw.index(b"\x08\x01"))  # mtype = X86_64, the entry's first field
        f.write(b"\x08\x07")  # LOONGARCH64, unknown to pycriu 3.17's enum
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-%d.img" % PID),
                 r"no loongarch64 thread info \(registers\)")


def test_thread_info_of_another_machine(imgs, tmp_path):
    d = imgs()
    edit_image(img(d, "core-%d.img" % PID), lambda m: setattr(m[0], "mtype", 6))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-%d.img" % PID),
                 r"no mips thread info \(registers\)")


def test_machine_type_unknown(imgs, tmp_path):
    d = imgs()
    with open(img(d, "core-%d.img" % PID), "r+b") as f:
        raw = f.read()
        f.seek(raw.index(b"\x08\x01"))  # mtype = X86_64, the entry's first field
        f.write(b"\x08\x4d")  # 77: no such machine
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-%d.img" % PID), "machine type missing or unknown")


def test_task_state_of_no_process(imgs, tmp_path):
    d = imgs()
    edit_image(img(d, "core-%d.img" % PID), lambda m: setattr(m[0].tc, "task_state", 9))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "core-%d.img" % PID), "task state 9 is not one of a process")


def test_pid_twice_in_pstree(imgs, tmp_path):
    d = imgs()
    edit_image(img(d, "pstree.img"), lambda m: m + [m[0]])
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "pstree.img"), "id %d appears twice in the process tree" % PID)


# -- pages and pagemaps ---------------------------------------------------------------

def _pagemap(d, pid=PID):
    return img(d, "pagemap-%d.img" % pid)


def test_pages_image_shorter_than_its_pagemap(imgs, tmp_path):
    d = imgs()
    size = os.path.getsize(img(d, "pages-1.img"))
    os.truncate(img(d, "pages-1.img"), size - PAGE)
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "pages-1.img"),
                 r"pages image has %d bytes, its pagemap pagemap-%d\.img says %d "
                 r"pages \(%d bytes\)" % (size - PAGE, PID, size // PAGE, size))


def test_pages_image_missing(imgs, tmp_path):
    d = imgs()
    os.unlink(img(d, "pages-1.img"))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "pages-1.img"),
                 r"missing \(the pagemap pagemap-%d\.img names \d+ pages in it\)" % PID)


def test_overlapping_pagemap_entries(imgs, tmp_path):
    d = imgs()
    edit_image(_pagemap(d), lambda m: m.insert(2, m[2]))
    p, out = convert(d, tmp_path)
    assert_error(p, out, _pagemap(d), r"entry at 0x[0-9a-f]+ overlaps or is out of "
                 r"order with the one before it")


def test_pagemap_entry_outside_every_vma(imgs, tmp_path):
    d = imgs()
    # below the first VMA (0x400000): in order, but mapped by nothing
    edit_image(_pagemap(d), lambda m: setattr(m[1], "vaddr", 0x10000))
    p, out = convert(d, tmp_path)
    assert_error(p, out, _pagemap(d), "pages at 0x10000 lie outside every VMA of the process")


@pytest.mark.parametrize("flags,what", [
    (PE_PRESENT, r"pages image has \d+ bytes, its pagemap .* says \d+ pages .*"),
    (PE_LAZY, r"pages at 0x[0-9a-f]+ lie outside every VMA of the process"),
])
def test_pagemap_claiming_2_to_the_40_pages(imgs, tmp_path, flags, what):
    d = imgs()

    def edit(m):
        m[-1].nr_pages = 1 << 40
        m[-1].flags = flags
    edit_image(_pagemap(d), edit)
    p, out = convert(d, tmp_path)
    path = img(d, "pages-1.img") if flags == PE_PRESENT else _pagemap(d)
    assert_error(p, out, path, what)


def test_pagemap_in_parent_with_a_looping_parent_link(imgs, tmp_path):
    d = imgs()
    edit_image(_pagemap(d), lambda m: setattr(m[-1], "flags", 1))  # PE_PARENT
    os.symlink(".", img(d, "parent"))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "parent"), "the chain of parent checkpoints loops")


def test_shmem_pagemap_truncated(imgs, tmp_path):
    d = imgs("shmem")
    path = img(d, "pagemap-shmem-29.img")
    os.truncate(path, os.path.getsize(path) - 1)
    p, out = convert(d, tmp_path)
    assert_error(p, out, path, r"truncated entry \(\d+ of \d+ bytes\)")


def test_shmem_pages_shorter_than_their_pagemap(imgs, tmp_path):
    d = imgs("shmem")
    head, msgs = read_messages(img(d, "pagemap-shmem-29.img"))
    pages = img(d, "pages-%d.img" % msgs[0].pages_id)
    os.truncate(pages, os.path.getsize(pages) - PAGE)
    p, out = convert(d, tmp_path)
    assert_error(p, out, pages, r"pages image has \d+ bytes, its pagemap "
                 r"pagemap-shmem-29\.img says \d+ pages \(\d+ bytes\)")


# -- VMAs -----------------------------------------------------------------------------

def _mm(d):
    return img(d, "mm-%d.img" % PID)


def _edit_vma(d, index, **fields):
    def edit(m):
        for k, v in fields.items():
            setattr(m[0].vmas[index], k, v)
    edit_image(_mm(d), edit)


def test_zero_length_vma(imgs, tmp_path):
    d = imgs()
    _edit_vma(d, 5, end=0x4A8000)
    p, out = convert(d, tmp_path)
    assert_error(p, out, _mm(d), "VMA 0x4a8000-0x4a8000 is empty or reversed")


def test_unaligned_vma(imgs, tmp_path):
    d = imgs()
    _edit_vma(d, 5, end=0x4AC800)
    p, out = convert(d, tmp_path)
    assert_error(p, out, _mm(d), "VMA 0x4a8000-0x4ac800 is not page aligned")


@pytest.mark.parametrize("pgoff", [0x800, 1 << 63])
def test_vma_file_offset_unaligned_or_beyond_any_file(imgs, tmp_path, pgoff):
    d = imgs()
    _edit_vma(d, 1, pgoff=pgoff)
    p, out = convert(d, tmp_path)
    assert_error(p, out, _mm(d), "VMA 0x401000-0x479000 has a file offset 0x%x that is "
                 "not page aligned or beyond any file" % pgoff)


def test_overlapping_vmas(imgs, tmp_path):
    d = imgs()
    _edit_vma(d, 5, end=0x3F65C000)  # into the heap at 0x3f65b000
    p, out = convert(d, tmp_path)
    assert_error(p, out, _mm(d), "VMAs 0x4a8000-0x3f65c000 and 0x3f65b000-0x3f67d000 overlap")


def test_vma_of_2_to_the_60_bytes(imgs, tmp_path):
    d = imgs()
    _edit_vma(d, 9, end=0x7FFC7E116000 + (1 << 60))  # the stack
    p, out = convert(d, tmp_path)
    assert_error(p, out, _mm(d), r"VMA 0x7ffc7e116000-0x10007ffc7e116000 \(\d+ bytes\) "
                 r"lies beyond the x86_64 address space \(0x100000000000000\)")


def test_huge_vma_without_pages_is_written_at_once(imgs, tmp_path, fixtures_dir):
    """64 TiB of private anonymous memory nobody touched: a PT_LOAD with no
    bytes in the file, as the kernel writes it, made in bounded memory."""
    d = imgs()

    def add(m):
        v = m[0].vmas.add()
        v.CopyFrom(m[0].vmas[5])  # private anonymous
        v.start, v.end = 1 << 45, (1 << 45) + (1 << 46)
    edit_image(_mm(d), add)
    root = os.path.join(fixtures_dir("stopped_static"), "root")
    p, out = convert(d, tmp_path, "--root", root)
    assert p.returncode == 0, p.stderr
    core = os.path.join(out, "core.%d" % PID)
    phdrs = read_core(core)[0]
    big = [ph for ph in phdrs if ph["type"] == PT_LOAD and ph["vaddr"] == 1 << 45]
    assert big and big[0]["memsz"] == 1 << 46 and big[0]["filesz"] == 0
    assert os.path.getsize(core) < 8 << 20
    # and a real reader agrees
    r = subprocess.run(["readelf", "-lW", core], stdout=subprocess.PIPE, text=True)
    assert re.search(r"LOAD\s+0x[0-9a-f]+ 0x0*200000000000 0x0+ "
                     r"0x0+ 0x0*400000000000 RW ", r.stdout), r.stdout


# -- names taken from the images --------------------------------------------------------

def _rename_prog(d, name):
    def edit(m):
        for e in m:
            if e.HasField("reg") and e.reg.name.endswith("/prog"):
                e.reg.name = name
    edit_image(img(d, "files.img"), edit)


def test_file_name_with_a_newline_stays_one_line(imgs, tmp_path, fixtures_dir):
    d = imgs()
    _rename_prog(d, "/opt/x\ncoredump: error: forged")
    root = os.path.join(fixtures_dir("stopped_static"), "root")
    p, out = convert(d, tmp_path, "--root", root)
    assert p.returncode == 3, p.stderr
    warnings = p.stderr.splitlines()
    assert warnings == ["coredump: warning: %s/opt/x\\ncoredump: error: forged: cannot "
                        "read mapped file (No such file or directory); its pages are "
                        "holes" % root]


def test_file_name_that_is_not_utf8(imgs, tmp_path, fixtures_dir):
    """CRIU stores names as the bytes they are; a non-UTF-8 one is named
    with \\x escapes in messages and kept as is in NT_FILE."""
    d = imgs()
    with open(img(d, "files.img"), "rb") as f:
        raw = f.read()
    with open(img(d, "files.img"), "wb") as f:  # same length: framing intact
        f.write(raw.replace(b"/opt/ccd/stopped_static/prog", b"/opt/\xffcd/stopped_static/prog"))
    root = os.path.join(fixtures_dir("stopped_static"), "root")
    p, out = convert(d, tmp_path, "--root", root)
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines() == [
        "coredump: warning: %s/opt/\\xffcd/stopped_static/prog: cannot read mapped "
        "file (No such file or directory); its pages are holes" % root]
    with open(os.path.join(out, "core.%d" % PID), "rb") as f:
        assert b"/opt/\xffcd/stopped_static/prog\0" in f.read()


def test_pid_zero_in_pstree(imgs, tmp_path):
    d = imgs()
    edit_image(img(d, "pstree.img"), lambda m: setattr(m[0], "pid", 0))
    p, out = convert(d, tmp_path)
    assert_error(p, out, img(d, "pstree.img"), "process id 0 is not valid")



# -- the command line ------------------------------------------------------------------

def test_usage_error_is_exit_1(tmp_path):
    p = run_coredump("-o", tmp_path)
    assert p.returncode == 1
    assert p.stderr.splitlines()[-1] == ("coredump: error: the following arguments are "
                                         "required: -i/--images-dir")


def test_help_documents_the_exit_codes():
    p = run_coredump("--help", check=0)
    for code, text in (("0", "every requested core was written completely"),
                       ("1", "usage error"), ("2", "bad input"),
                       ("3", "cores written but incomplete"),
                       ("130", "interrupted by SIGINT .Ctrl-C.: the unfinished core is removed"),
                       ("143", "terminated by SIGTERM")):
        assert re.search(r"^  %s +%s" % (code, text), p.stdout, re.M), code


def test_command_name_that_is_not_one_printable_line(imgs, tmp_path, fixtures_dir):
    """The comm comes from the images: a newline or a byte that is not UTF-8
    in it is escaped in the summary and in --list, never printed raw."""
    d = imgs()
    path = img(d, "core-%d.img" % PID)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:  # same length: framing intact
        f.write(raw.replace(b"prog", b"p\n\xffg"))
    root = os.path.join(fixtures_dir("stopped_static"), "root")
    p, out = convert(d, tmp_path, "--root", root)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 1 and "(p\\n\\xffg)" in p.stdout, p.stdout
    p = run_coredump("-i", d, "--list", check=0)
    assert "Traceback" not in p.stderr
    assert p.stdout.splitlines()[-1].endswith(" p\\n\\xffg"), p.stdout
