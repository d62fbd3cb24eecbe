"""From images to a core, in process: images.py loads the records,
pagemap.py indexes the pages, memory.py plans the segments, convert.py
writes the core; listing.py reads the same records.  Checkpoints are
synthetic (helpers.synth), cores are read back with helpers.corefile."""
import os

import pytest

from criu_coredump import convert, images, listing
from criu_coredump.errors import BadImage
from criu_coredump.imagedir import ImageDir
from criu_coredump.memory import MemoryPlan
from criu_coredump.pagemap import HERE, LAZY, PageIndex
from criu_coredump.rootfs import RootFS

from ..helpers import synth
from ..helpers.corefile import PT_LOAD, read_core

P = synth.PAGE
A = 0x10000000


@pytest.fixture
def ck(tmp_path):
    """Process 100 (two threads): an anonymous mapping with pages 1-2
    present and page 3 lazy; an untouched one; a guard page in the first."""
    c = synth.Checkpoint(tmp_path / "img")
    p = c.process(100, tids=[100, 101])
    p.cmdline(A, A + 16)
    p.vma(A, A + 4 * P).pages(A, b"prog\0-x\0".ljust(P, b"\0"))
    p.pages(A + P, nr_pages=1).lazy(A + 3 * P, 1)
    p.vma(A + 0x100000, A + 0x100000 + 2 * P)
    p.vma(A + 2 * P, A + 3 * P, status=1 << 16)          # a guard entry
    q = c.process(200, ppid=100)
    q.vma(A, A + P).pages(A, nr_pages=1)
    return c


def test_records_of_a_process(ck):
    d = ck.write()
    ckpt = images.open_checkpoint(d)
    assert [e.pid for e in ckpt.entries] == [100, 200]
    proc = images.load_process(ckpt.images, ckpt.entries[0])
    assert (proc.pid, proc.comm, proc.arch, [t.tid for t in proc.threads]) == \
        (100, "synth", "x86_64", [100, 101])
    assert [(v.start, v.end) for v in proc.mm.vmas] == [(A, A + 4 * P), (A + 0x100000, A + 0x100000 + 2 * P)]
    assert proc.mm.guards == [(A + 2 * P, A + 3 * P)]
    assert proc.threads[0].regs.gp["ip"] == 0x401000


def test_overlapping_vmas_are_one_error_naming_the_image(ck):
    ck.procs[1].vma(A, A + 2 * P)
    d = ck.write()
    ckpt = images.open_checkpoint(d)
    with pytest.raises(BadImage) as e:
        images.load_process(ckpt.images, ckpt.entries[1])
    assert str(e.value) == "%s: VMAs 0x%x-0x%x and 0x%x-0x%x overlap" % (
        os.path.join(d, "mm-200.img"), A, A + P, A, A + 2 * P)


def test_page_index_runs(ck):
    d = ck.write()
    idx = PageIndex(ImageDir(d), "pagemap-100.img")
    assert len(idx) == 2 and idx.lazy_pages == 1 and idx.present_pages == 2
    runs = list(idx.runs(A, A + 4 * P))
    assert [(r.addr, r.length, r.kind, r.offset) for r in runs] == \
        [(A, 2 * P, HERE, 0), (A + 3 * P, P, LAZY, 0)]
    assert runs[0].index is idx and idx.covers_any(A + P, A + 2 * P)
    assert not idx.covers_any(A + 0x100000, A + 0x100000 + P)


def test_parent_pages_come_from_the_parent_checkpoint(tmp_path):
    pre = synth.Checkpoint(tmp_path / "pre")
    pre.process(7).vma(A, A + 2 * P).pages(A, nr_pages=2)
    final = synth.Checkpoint(tmp_path / "final", parent=pre)
    final.process(7).vma(A, A + 2 * P).in_parent(A, 1).pages(A + P, nr_pages=1)
    d = final.write()
    idx = PageIndex(ImageDir(d), "pagemap-7.img")
    (a, b) = idx.runs(A, A + 2 * P)
    assert a.index.images.path == str((tmp_path / "pre").resolve())
    assert (a.offset, b.index, b.offset) == (0, idx, 0)


def test_the_plan_dumps_written_memory_and_reads_it(ck, tmp_path):
    d = ck.write()
    ckpt = images.open_checkpoint(d)
    proc = images.load_process(ckpt.images, ckpt.entries[0])
    plan = MemoryPlan(ckpt, proc, RootFS(None))
    try:
        assert [s.dump_size for s in plan.segments] == [4 * P, 0]
        assert plan.stats.lazy_pages == 1
        ext = [(e.addr, e.length) for e in plan.segments[0].extents()]
        assert ext == [(A, 2 * P)]                # page 3 lazy: a hole
        assert plan.read(A, 8) == b"prog\0-x\0"
        assert plan.read(A + P, 16) == synth.page_pattern(A + P, 1)[:16]
        assert plan.read(A + 0x100000, 4) == bytes(4)
    finally:
        plan.close()


def test_convert_process_writes_the_core(ck, tmp_path):
    d = ck.write()
    out = tmp_path / "out"
    out.mkdir()
    warned = []
    results = convert.generate(d, str(out), warn=lambda p, w: warned.append((p, w)))
    assert [(r.pid, r.threads, r.segments, r.lazy_pages, r.error) for r in results] == \
        [(100, 2, 2, 1, None), (200, 1, 1, 0, None)]
    assert warned == [(os.path.join(d, "pagemap-100.img"), "1 pages were left for lazy "
                       "restore and are not in the images; they are holes")]
    phdrs, notes, data = read_core(str(out / "core.100"))
    load = [p for p in phdrs if p["type"] == PT_LOAD][0]
    assert (load["vaddr"], load["filesz"]) == (A, 4 * P)
    assert data[load["offset"]:load["offset"] + 8] == b"prog\0-x\0"
    assert data[load["offset"] + 3 * P:load["offset"] + 4 * P] == bytes(P)
    assert sorted(os.listdir(str(out))) == ["core.100", "core.200"]


def test_listing_reads_the_same_records(ck):
    rows = listing.list_processes(ck.write())
    assert [(r.pid, r.ppid, r.depth, r.threads, r.dumped_pages) for r in rows] == \
        [(100, 0, 0, 2, 2), (200, 100, 1, 1, 1)]
