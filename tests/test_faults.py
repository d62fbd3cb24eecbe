"""Faults in the middle of a conversion, and images that promise what they
do not hold (issue 12): no hang, no silent loss, no traceback.

* Files change between the checks and the copy: a pages image becomes a
  FIFO (must not block in open()), a mapped file below --root is swapped
  (costs that file's pages with a warning, as when it is missing from the
  start, not the whole core).
* Images that promise a file or pages they do not deliver (files.img,
  memfd.img, pagemap-shmem-N.img absent, a VMA naming a pipe): a warning
  naming what is missing, exit 3, never a silent exit 0.
"""
import os
import re
import shutil
import signal

import pytest

from criu_coredump import memory, pagemap

from .conftest import run_coredump
from .helpers.corefile import read_core
from .helpers.imgedit import edit_image
from .helpers.inprocess import run_main

LINE = re.compile(r"coredump: (error|warning|note): .+")


@pytest.fixture
def copy(fixtures_dir, tmp_path):
    """A writable copy of a fixture (images and root)."""
    def make(name):
        dst = tmp_path / name.replace("/", "-")
        shutil.copytree(fixtures_dir(name), dst, symlinks=True)
        return str(dst)
    return make


class Hung(BaseException):
    """Not an Exception: code under test that catches Exception must not
    swallow it and block again."""


class _alarm:
    """Fail (instead of hanging the test run) after `seconds`, and again
    every second after that."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def ring(signum, frame):
            raise Hung("hung for %d s" % self.seconds)
        self.old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 1)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _clean(stderr):
    assert "Traceback" not in stderr, stderr
    for ln in stderr.splitlines():
        assert LINE.fullmatch(ln), ln


def _convert(fx, tmp_path, *extra):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", out,
                     "--root", os.path.join(fx, "root"), *extra, timeout=120)
    _clean(p.stderr)
    return p, out


def _warnings(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("coredump: warning")]


# -- files changed during the conversion ------------------------------------------

def test_pages_image_replaced_by_a_fifo_after_the_check(copy, tmp_path, monkeypatch):
    """The size check passes, then the pages image is a FIFO: open() must
    not block (O_NONBLOCK, fstat on the descriptor), the error names it."""
    fx = copy("stopped_static")
    imgs = os.path.join(fx, "images")
    checked = pagemap.PageIndex._check_pages_image

    def check_then_swap(self):
        checked(self)
        if self.present_pages:
            os.unlink(self.pages_path)
            os.mkfifo(self.pages_path)
    monkeypatch.setattr(pagemap.PageIndex, "_check_pages_image", check_then_swap)
    out = tmp_path / "out"
    out.mkdir()
    with _alarm(20):
        rc, _, err = run_main(["-q", "-i", imgs, "-o", str(out)])
    _clean(err)
    assert rc == 2, err
    assert re.search(r"coredump: error: %s/pages-\d+\.img: cannot open: not a "
                     r"regular file" % re.escape(imgs), err), err
    assert os.listdir(out) == []


@pytest.mark.parametrize("swap", ["fifo", "symlink-out", "removed"])
def test_mapped_file_swapped_after_the_check_costs_its_pages(copy, tmp_path,
                                                             monkeypatch, swap):
    """A file below --root is fine when the plan checks it, then replaced
    (a symlink race): like a file missing from the start, a warning and
    holes for its pages, not a lost core."""
    fx = copy("stopped_static")
    root = os.path.join(fx, "root")
    prog = os.path.join(root, "opt/ccd/stopped_static/prog")
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET" * 1000)
    checked = memory.MemoryPlan._file_source

    def check_then_swap(self, f):
        src = checked(self, f)
        if src and os.path.lexists(prog):
            os.unlink(prog)
            if swap == "fifo":
                os.mkfifo(prog)
            elif swap == "symlink-out":
                os.symlink("../../../../../../../../" + str(secret), prog)
        return src
    monkeypatch.setattr(memory.MemoryPlan, "_file_source", check_then_swap)
    out = tmp_path / "out"
    out.mkdir()
    with _alarm(20):
        rc, _, err = run_main(["-q", "-i", os.path.join(fx, "images"),
                               "-o", str(out), "--root", root])
    _clean(err)
    assert rc == 3, err
    warn = _warnings(err)
    assert len(warn) == 1 and warn[0].startswith(
        "coredump: warning: %s: cannot read mapped file (" % prog), err
    assert warn[0].endswith("; its pages are holes"), err
    core = read_core(os.path.join(out, "core.13508"))
    assert b"SECRET" not in core[2]


def test_pages_image_truncated_after_the_check(copy, tmp_path, monkeypatch):
    """A pages image cut short after the size check: an error naming it,
    not zeros in place of its pages."""
    fx = copy("stopped_static")
    imgs = os.path.join(fx, "images")
    checked = pagemap.PageIndex._check_pages_image

    def check_then_cut(self):
        checked(self)
        if self.present_pages:
            os.truncate(self.pages_path, 4096)
    monkeypatch.setattr(pagemap.PageIndex, "_check_pages_image", check_then_cut)
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = run_main(["-q", "-i", imgs, "-o", str(out)])
    _clean(err)
    assert rc == 2, err
    assert re.search(r"coredump: error: %s/pages-\d+\.img: ends before the pages"
                     % re.escape(imgs), err), err
    assert os.listdir(out) == []


def test_mapped_file_shorter_than_at_checkpoint(copy, tmp_path):
    """A mapped file now shorter than files.img says: its missing tail is a
    warning, not silent zeros."""
    fx = copy("stopped_static")
    prog = os.path.join(fx, "root/opt/ccd/stopped_static/prog")
    os.truncate(prog, 4096)
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    assert len(warn) == 1 and warn[0].startswith("coredump: warning: %s: ends before"
                                                 % prog), p.stderr


# -- promised and not delivered ----------------------------------------------------

def test_without_files_img_every_mapped_file_is_a_warning(copy, tmp_path):
    fx = copy("threads")
    os.unlink(os.path.join(fx, "images", "files.img"))
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    files_img = os.path.join(fx, "images", "files.img")
    warn = _warnings(p.stderr)
    assert warn and all(w.startswith("coredump: warning: %s: no regular file or "
                                     "memfd with id " % files_img) for w in warn), p.stderr
    assert all("left out of NT_FILE" in w for w in warn)


def test_vma_naming_a_pipe_is_a_warning(copy, tmp_path):
    """shmem's files.img has a pipe (id 12): a file VMA naming it would
    vanish from NT_FILE."""
    fx = copy("shmem")
    mm = os.path.join(fx, "images", "mm-13585.img")

    def name_the_pipe(msgs):
        v = [v for v in msgs[0].vmas if v.status & (1 << 6)][0]  # FILE_PRIVATE
        v.shmid = 12
    edit_image(mm, name_the_pipe)
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    assert _warnings(p.stderr) == [
        "coredump: warning: %s: no regular file or memfd with id 12, which the "
        "mapping at %s names; the mapping is left out of NT_FILE and its pages "
        "not in the pagemap are holes" % (os.path.join(fx, "images", "files.img"),
                                         re.search(r"0x[0-9a-f]+-0x[0-9a-f]+",
                                                   p.stderr).group(0))]


def test_without_memfd_img_shared_memory_is_a_warning(copy, tmp_path):
    fx = copy("shmem")
    os.unlink(os.path.join(fx, "images", "memfd.img"))
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    memfd_img = os.path.join(fx, "images", "memfd.img")
    assert warn and all(w.startswith("coredump: warning: %s: no inode for memfd "
                                     "file " % memfd_img) for w in warn), p.stderr


@pytest.mark.parametrize("shmid", [28, 29])
def test_without_pagemap_shmem_the_shared_memory_is_a_warning(copy, tmp_path, shmid):
    """CRIU 4.2 writes pagemap-shmem-N.img for every shared-memory object it
    dumps, even one never touched (zdtm/pthread00's has a header and no
    entry): its absence is a loss."""
    fx = copy("shmem")
    gone = os.path.join(fx, "images", "pagemap-shmem-%d.img" % shmid)
    os.unlink(gone)
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    assert len(warn) == 1 and warn[0].startswith(
        "coredump: warning: %s: missing: the shared memory mapped at " % gone), p.stderr
