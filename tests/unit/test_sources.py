"""sources.py: the page sources of a VMA in lookup order, falling through
to the next source where one has nothing, guard regions cut out, and the
sources' descriptors and their failures."""
import os

import pytest

from criu_coredump import images, sources
from criu_coredump.errors import BadImage
from criu_coredump.imagedir import ImageDir, ImageFile
from criu_coredump.model import Vma
from criu_coredump.rootfs import RootFS
from criu_coredump.sources import (Extent, FdCache, FilePages, GhostPages,
                                   Guards, ImagePages, MappedPages, layered)

from ..helpers import synth

P = synth.PAGE


class Fixed(sources.PageSource):
    """A page source answering with given extents, cut to the range asked."""

    def __init__(self, name, spans, hole=()):
        self.name, self.spans, self.hole = name, spans, set(hole)

    def extents(self, a, b):
        for s, e in self.spans:
            s2, e2 = max(s, a), min(e, b)
            if s2 < e2:
                yield Extent(s2, e2 - s2, None if (s, e) in self.hole else self.name,
                             s2 - s)


def test_layered_falls_through_gaps_in_order():
    first = Fixed("pagemap", [(0x1000, 0x2000), (0x4000, 0x5000)])
    second = Fixed("shmem", [(0x0, 0x6000)])
    got = [(e.addr, e.length, e.source) for e in layered([first, second], 0, 0x6000)]
    assert got == [(0x0, 0x1000, "shmem"), (0x1000, 0x1000, "pagemap"),
                   (0x2000, 0x2000, "shmem"), (0x4000, 0x1000, "pagemap"),
                   (0x5000, 0x1000, "shmem")]


def test_a_known_hole_is_not_looked_up_further():
    """A lazy page (source None) stays a hole: the file below does not fill it."""
    first = Fixed("pagemap", [(0x1000, 0x2000)], hole=[(0x1000, 0x2000)])
    second = Fixed("file", [(0x0, 0x3000)])
    got = [(e.addr, e.length, e.source) for e in layered([first, second], 0, 0x3000)]
    assert got == [(0x0, 0x1000, "file"), (0x2000, 0x1000, "file")]


def test_guards_cut_extents_and_keep_offsets():
    g = Guards([(0x2000, 0x3000), (0x5000, 0x7000)])
    got = list(g.cut([Extent(0x1000, 0x5000, "s", 100)]))
    assert got == [Extent(0x1000, 0x1000, "s", 100), Extent(0x3000, 0x2000, "s", 0x2000 + 100)]
    assert list(Guards([]).cut([Extent(0, 10, "s", 0)])) == [Extent(0, 10, "s", 0)]


def _vma(start, pages, pgoff=0):
    return Vma(start, start + pages * P, pgoff, 1, 3, 2, 1)


def test_file_pages_stop_at_the_files_size():
    v = _vma(0x10000, 4, pgoff=P)
    fp = FilePages(v, "f", size=P + P + 100)
    assert list(fp.extents(v.start, v.end)) == [Extent(0x10000, P + 100, "f", P)]
    assert list(FilePages(v, "f", None).extents(v.start + P, v.end)) == \
        [Extent(0x10000 + P, 3 * P, "f", 2 * P)]
    assert list(FilePages(v, "f", size=P).extents(v.start, v.end)) == []


def test_ghost_pages_map_file_offsets_to_image_offsets():
    v = _vma(0x10000, 4, pgoff=P)
    parts = [(0, 2 * P, 500), (3 * P, P, 500 + 2 * P + 60)]  # a hole at 2P..3P
    got = list(GhostPages(v, "g", parts).extents(v.start, v.end))
    assert got == [Extent(0x10000, P, "g", 500 + P),
                   Extent(0x10000 + 2 * P, P, "g", 500 + 2 * P + 60)]


def test_fd_cache_closes_the_oldest_beyond_its_limit(tmp_path):
    cache = FdCache(limit=2)
    fds = []
    for i in range(3):
        p = tmp_path / ("f%d" % i)
        p.write_bytes(b"x")
        fds.append(cache.keep(("k", i), ImageFile(os.open(str(p), os.O_RDONLY))).fd)
    with pytest.raises(OSError):
        os.fstat(fds[0])            # the first was closed
    assert cache.get(("k", 2)).fd == fds[2]
    cache.close()
    with pytest.raises(OSError):
        os.fstat(fds[2])


def test_an_image_that_cannot_be_opened_is_an_error(tmp_path):
    src = ImagePages(ImageDir(str(tmp_path)), "pages-9.img", FdCache())
    with pytest.raises(BadImage) as e:
        src.open()
    assert str(e.value).startswith(str(tmp_path / "pages-9.img") + ": cannot open")
    with pytest.raises(BadImage):
        src.short(0x1000, P)


def test_a_mapped_file_that_is_gone_costs_its_pages_with_one_warning(tmp_path):
    warned = []
    cache = FdCache(warn=lambda path, what: warned.append((path, what)))
    src = MappedPages(RootFS(str(tmp_path)), "/lib/gone.so", "/lib/gone.so", True, cache)
    assert src.open() is None and src.open() is None
    assert len(warned) == 1 and warned[0][0] == "/lib/gone.so"
    assert warned[0][1].startswith("cannot read mapped file (No such file")
    src.short(0x1000, P)        # already given up on: no second warning
    assert len(warned) == 1


def test_a_short_file_of_unknown_size_is_no_warning(tmp_path):
    warned = []
    cache = FdCache(warn=lambda path, what: warned.append(path))
    (tmp_path / "f").write_bytes(b"abc")
    src = MappedPages(RootFS(str(tmp_path)), "/f", "/f", False, cache)
    f = src.open()
    assert os.pread(f.fd, 10, f.base) == b"abc"
    src.short(0x1000, P)
    assert warned == []
    MappedPages(RootFS(str(tmp_path)), "/f", "/f", True, cache).short(0x1000, P)
    assert warned == ["/f"]
    cache.close()


def test_page_sources_of_a_checkpoint(tmp_path):
    """The process's pagemap first, then the shared memory it maps, then
    the mapped file; each extent names the image its bytes are in."""
    ck = synth.Checkpoint(tmp_path / "img")
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "f").write_bytes(b"F" * 4 * P)
    fid = ck.reg_file(5, "/data/f", size=4 * P)
    p = ck.process(300)
    p.vma(0x10000000, 0x10004000, kind="file", shmid=fid).pages(0x10001000, nr_pages=1)
    ck.shmem_pages(9, P, synth.page_pattern(0, 1))
    p.vma(0x20000000, 0x20002000, kind="anon_shared", shmid=9)
    d = ck.write()
    ckpt = images.open_checkpoint(d)
    proc = images.load_process(ckpt.images, ckpt.entries[0])
    ps = sources.PageSources(ckpt, proc, RootFS(str(root)))
    try:
        filev, shm = proc.mm.vmas
        got = [(e.addr, e.length, type(e.source).__name__, e.offset)
               for e in ps.extents(ps.for_vma(filev), filev.start, filev.end)]
        assert got == [(0x10000000, P, "MappedPages", 0),
                       (0x10001000, P, "ImagePages", 0),
                       (0x10002000, 2 * P, "MappedPages", 2 * P)]
        (ext,) = ps.extents(ps.for_vma(shm), shm.start, shm.end)
        assert (ext.addr, ext.length, ext.offset) == (0x20001000, P, 0)
        # the shared object's own pages image, not the process's
        assert os.path.dirname(ext.source.path) == d
        assert ext.source.path != ps.index.pages_path
        f = ext.source.open()
        assert os.pread(f.fd, 16, f.base + ext.offset) == synth.page_pattern(0, 1)[:16]
    finally:
        ps.close()
