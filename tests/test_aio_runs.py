"""aio_runs: on a file system in memory, a batch of small runs is written a
window at a time by io_submit.  The core must be the bytes the page-by-page
path writes, whatever the window and batch sizes, when writes come back
short, and when AIO is refused; a failure is the same one-line error."""
import errno
import os
from array import array

import pytest

from criu_coredump import aio, aio_runs, writer
from criu_coredump.convert import generate
from criu_coredump.errors import BadImage

from .helpers import synth
from .test_bulk_pages import PID, build

P = synth.PAGE
NAME = "core.%d" % PID


@pytest.fixture
def tmpfs(monkeypatch):
    """The core's file system taken for tmpfs (holes kept, runs written
    one by one), and the AIO writes counted."""
    monkeypatch.setattr(writer, "_fs_type", lambda fd: "tmpfs")
    # the mixed mappings too (a few hundred runs each), not only the
    # bench's 3,000 one-page runs
    monkeypatch.setattr(writer, "AIO_MIN_RUNS", 8)
    calls = []
    real = aio.Writes.write

    def spy(self, fd, bufs, lengths, offsets):
        calls.append(len(bufs))
        return real(self, fd, bufs, lengths, offsets)
    monkeypatch.setattr(aio.Writes, "write", spy)
    return calls


def _core(ck, path):
    path.mkdir()
    [r] = generate(ck.dir, str(path))
    return r, (path / NAME).read_bytes() if r.error is None else None


def _pwrite_path(monkeypatch):
    monkeypatch.setattr(aio, "get", lambda: None)


def test_same_bytes_as_page_by_page(tmp_path, monkeypatch, tmpfs):
    ck = build(tmp_path)
    r, by_aio = _core(ck, tmp_path / "aio")
    assert r.error is None
    # the bench's case (3,000 one-page runs) and the scattered mappings
    # went by AIO, in batches
    assert sum(tmpfs) > 3000 and max(tmpfs) > 100
    _pwrite_path(monkeypatch)
    tmpfs.clear()
    _, by_pwrite = _core(ck, tmp_path / "pwrite")
    assert tmpfs == []
    assert by_aio == by_pwrite
    assert by_aio.count(synth.page_pattern(0x7f0000000000 + 2 * 2999 * P, 1)) == 1


def test_small_windows_and_batches_same_bytes(tmp_path, monkeypatch, tmpfs):
    """Windows of 5 pages and batches of 3 writes: runs cut at every
    window's end, batches at every third write."""
    ck = build(tmp_path, seed=7)
    _, want = _core(ck, tmp_path / "a")
    monkeypatch.setattr(aio_runs, "SPAN", 5 * P)
    monkeypatch.setattr(aio, "DEPTH", 3)
    monkeypatch.setattr(aio, "_state", {})  # a context of 3
    tmpfs.clear()
    r, got = _core(ck, tmp_path / "b")
    assert r.error is None and max(tmpfs) == 3
    assert got == want


def test_short_writes_are_continued(tmp_path, monkeypatch, tmpfs):
    """Each write comes back having written half (or none) of its bytes:
    the rest is written by pwrite, the same bytes result."""
    ck = build(tmp_path)
    _, want = _core(ck, tmp_path / "a")
    real = aio.Writes.write

    def short(self, fd, bufs, lengths, offsets):
        halves = array("Q", (n // 2 for n in lengths))
        res = real(self, fd, bufs, halves, offsets)
        return [0 if i % 3 == 0 else r for i, r in enumerate(res)]
    monkeypatch.setattr(aio.Writes, "write", short)
    r, got = _core(ck, tmp_path / "b")
    assert r.error is None
    assert got == want


def test_a_failed_write_names_the_core(tmp_path, monkeypatch, tmpfs):
    ck = build(tmp_path)

    def full(self, fd, bufs, lengths, offsets):
        return [-errno.ENOSPC] * len(bufs)
    monkeypatch.setattr(aio.Writes, "write", full)
    (tmp_path / "out").mkdir()
    [r] = generate(ck.dir, str(tmp_path / "out"))
    assert "No space left on device" in str(r.error)
    assert NAME in str(r.error)
    assert not any(p.name.startswith(NAME) for p in (tmp_path / "out").iterdir())


def test_an_image_that_shrinks_meanwhile_is_a_bad_image(tmp_path, monkeypatch,
                                                        tmpfs):
    """The pages image cut short after its first window is mapped: the
    kernel cannot read the mapping (EFAULT), which is the image's error,
    not a SIGBUS, and no core is left."""
    ck = build(tmp_path)
    real = aio_runs._Mapping.__init__
    pages = os.path.join(ck.dir, "pages-%d.img" % ck.procs[0].pages_id)

    def shrinking(self, fd, offset, n):
        real(self, fd, offset, n)
        with open(pages, "r+b") as f:
            f.truncate(offset)
    monkeypatch.setattr(aio_runs._Mapping, "__init__", shrinking)
    (tmp_path / "out").mkdir()
    [r] = generate(ck.dir, str(tmp_path / "out"))
    assert isinstance(r.error, BadImage)
    assert r.error.path == str(pages)
    assert "cannot read" in str(r.error)
    assert not any(p.name.startswith(NAME) for p in (tmp_path / "out").iterdir())


def test_an_image_that_cannot_be_mapped_is_copied_run_by_run(tmp_path,
                                                             monkeypatch,
                                                             tmpfs):
    """A file system without mmap (or no address space left): after the
    first window fails to map, every run left is copied on its own."""
    ck = build(tmp_path)
    _, want = _core(ck, tmp_path / "a")
    maps = []

    def unmappable(self, fd, offset, n):
        maps.append(offset)
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
    monkeypatch.setattr(aio_runs._Mapping, "__init__", unmappable)
    tmpfs.clear()
    r, got = _core(ck, tmp_path / "b")
    assert r.error is None
    # tried once in each batch (three take the batch path), then given up
    assert 0 < len(maps) <= 3 and tmpfs == []
    assert got == want


def test_a_small_process_makes_no_aio_context(tmp_path, monkeypatch, tmpfs):
    """A context costs its process a wait of tens of milliseconds at exit
    (exit_aio): batches of fewer than AIO_MIN_RUNS runs (a tree's small
    processes) are written run by run without one."""
    monkeypatch.setattr(writer, "AIO_MIN_RUNS", 256)
    asked = []
    real_get = aio.get
    monkeypatch.setattr(aio, "get", lambda: asked.append(1) or real_get())
    ck = synth.Checkpoint(tmp_path / "img")
    H = 0x7f0000000000
    p = ck.process(PID)
    p.vma(H, H + 600 * P)
    for i in range(255):
        p.pages(H + 2 * i * P, nr_pages=1)
    ck.write()
    r, small = _core(ck, tmp_path / "a")
    assert r.error is None and asked == [] and tmpfs == []
    assert small.count(synth.page_pattern(H + 2 * 254 * P, 1)) == 1
    p.pages(H + 2 * 255 * P, nr_pages=1)  # 256 runs: AIO
    ck.write()
    r, _ = _core(ck, tmp_path / "b")
    assert r.error is None and asked == [1] and sum(tmpfs) == 256
