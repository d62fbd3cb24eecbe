"""Where each byte of a process's memory comes from at checkpoint time.

A dumped range of a VMA is answered by page sources, asked in order:

1. `IndexPages` of the process's pagemap (this checkpoint, or its parents
   in a pre-dump chain),
2. `IndexPages` of the shared-memory object it maps (anonymous shared,
   memfd),
3. `GhostPages` (a file deleted while mapped, from its ghost image) or
   `FilePages` (the mapped file below the root, at the VMA's offset).

What one source lacks falls through to the next (`layered`); what none
has is a hole.  Guard regions are cut out last (`Guards.cut`).  Every
answer is an `Extent(addr, length, source, offset)`: `length` bytes at
`addr` are the bytes at `offset` of `source`, a `Source` whose `open()`
gives (fd, base, size) through a bounded cache of descriptors.

`PageSources` builds these for one process: it owns the process's page
index, the file checks (missing files, another build-id) and their
warnings, and the fd cache.
"""
from __future__ import annotations

import os
from bisect import bisect_left, bisect_right
from collections import OrderedDict, namedtuple
from collections.abc import Callable, Iterable, Iterator

from .buildid import read_build_id, same_build
from .buildid import shown as show_build_id
from .errors import BadImage
from .imagedir import ImageDir, ImageFile, pread
from .model import (PAGE_SIZE, VMA_ANON_SHARED, VMA_AREA_MEMFD, Checkpoint,
                    MappedFile, Process, Vma)
from .notes import nt_file_name
from .pagemap import HERE, PARENT, PageIndex

Warn = Callable[[str, str], None]


class Extent(namedtuple("Extent", "addr length source offset")):
    """`length` bytes of memory at `addr` are the bytes at `offset` of
    `source` (None: a known hole, such as a lazy page)."""
    # addr: int, length: int, source: "Source" | None, offset: int
    __slots__ = ()


class Batch(namedtuple("Batch", "source page index lo hi a b")):
    """Runs lo to hi of a page index, clipped to [a, b), all of them data
    of `source` (its pages image) or holes (lazy pages): what
    PageSources.batch gives when a segment is nothing else."""
    __slots__ = ()

    STEP = 1 << 16  # runs a chunk: what is copied of the index at a time

    def src_end(self):
        """Where the data of the last run with data ends in `source`
        (bytes; 0 when no run has data)."""
        index, b = self.index, self.b
        for i in range(self.hi - 1, self.lo - 1, -1):
            if index.where[i] == HERE:
                end = index.starts[i] + index.npages[i] * self.page
                cut = max(0, end - b)  # the last run may end after b
                return (index.offsets[i] + index.npages[i]) * self.page - cut
        return 0

    def chunks(self):
        """The runs in chunks of parallel arrays (start address, pages,
        page offset in the source, where: HERE or LAZY), the first and last
        run clipped to [a, b)."""
        index, P, a, b = self.index, self.page, self.a, self.b
        for i in range(self.lo, self.hi, self.STEP):
            j = min(i + self.STEP, self.hi)
            st, npages = index.starts[i:j], index.npages[i:j]
            offsets, where = index.offsets[i:j], index.where[i:j]
            if st[0] < a:  # the first run begins before the range
                cut = (a - st[0]) // P
                st[0], npages[0], offsets[0] = a, npages[0] - cut, offsets[0] + cut
            if st[-1] + npages[-1] * P > b:  # the last ends after it
                npages[-1] = (b - st[-1]) // P
            yield st, npages, offsets, where


class FdCache:
    """A bounded number of source files kept open across segments, and the
    sources given up on (warned about once, then holes)."""

    def __init__(self, limit: int = 64, warn: Warn | None = None):
        self.limit = limit
        self._open: "OrderedDict[tuple, ImageFile]" = OrderedDict()
        self._warn = warn or (lambda path, what: None)
        self._gone = set()

    def get(self, key) -> ImageFile | None:
        f = self._open.get(key)
        if f is not None:
            self._open.move_to_end(key)
        return f

    def keep(self, key, f: ImageFile) -> ImageFile:
        self._open[key] = f
        if len(self._open) > self.limit:
            _, old = self._open.popitem(last=False)
            if old.fd is not None:  # a StreamedImage holds none
                os.close(old.fd)
        return f

    def gone(self, key) -> bool:
        return key in self._gone

    def lose(self, key, path: str, what: str):
        """Give up on a source: warned once, its pages are holes."""
        if key not in self._gone:
            self._gone.add(key)
            self._warn(path, what)

    def close(self):
        for f in self._open.values():
            if f.fd is not None:
                os.close(f.fd)
        self._open.clear()


class Source:
    """A file page data is copied from.  `open()` gives (fd, base, size):
    the source's byte 0 is at `base` of fd and it has `size` bytes (None:
    up to fd's end), or None when the source is gone (warned: holes);
    `short()` is told when it ends before an extent's end."""
    path: str  # for messages

    def open(self) -> ImageFile | None:
        raise NotImplementedError

    def short(self, addr: int, missing: int) -> None:
        raise NotImplementedError


class ImagePages(Source):
    """An image holding page data: a pages image, or a ghost file's image.
    The images promised these bytes: failing to read them is an error."""

    # writer._source_view may map it: an image nobody changes meanwhile
    # (a mapped file of the root may be, and is always read)
    mappable = True

    def __init__(self, images: ImageDir, name: str, fds: FdCache):
        self.images, self.name, self.fds = images, name, fds
        self.path = images.join(name)
        self.key = ("pages", self.path)

    def open(self) -> ImageFile | None:
        f = self.fds.get(self.key)
        if f is not None:
            return f
        try:
            f = self.images.open(self.name)
        except OSError as e:
            raise BadImage(self.path, "cannot open: %s"
                           % (e.strerror or e)) from None
        return self.fds.keep(self.key, f)

    def short(self, addr: int, missing: int) -> None:
        raise BadImage(self.path, "ends before the pages its pagemap "
                       "places at 0x%x (it changed during the conversion?)"
                       % addr)


class MappedPages(Source):
    """A file the process had mapped, read below the root.  One that cannot
    be opened now (removed or replaced since it was checked) or that ends
    early costs its pages, with one warning."""

    def __init__(self, rootfs, shown: str, path: str, sized: bool,
                 fds: FdCache):
        self.rootfs, self.fds = rootfs, fds
        self.path = shown          # for messages
        self.open_path = path      # in the process's view
        self.sized = sized         # its size at checkpoint time is known
        self.key = ("mapped", shown)

    def open(self) -> ImageFile | None:
        f = self.fds.get(self.key)
        if f is not None or self.fds.gone(self.key):
            return f
        try:
            fd = self.rootfs.open(self.open_path)
        except OSError as e:
            self.fds.lose(self.key, self.path, "cannot read mapped file (%s); "
                          "its pages are holes" % (e.strerror or e))
            return None
        return self.fds.keep(self.key, ImageFile(fd))

    def short(self, addr: int, missing: int) -> None:
        if not self.sized:
            return  # read up to its end, as the kernel would
        self.fds.lose(self.key, self.path, "ends before the mapping at 0x%x "
                      "needs it (it is shorter than when it was "
                      "checkpointed?); the pages past its end are holes" % addr)


# -- page sources: (start, end) -> extents ------------------------------------

class PageSource:
    """Answers a range of addresses with Extents, in address order; what it
    does not cover is left to the next source."""

    def extents(self, a: int, b: int) -> Iterator[Extent]:
        raise NotImplementedError


class IndexPages(PageSource):
    """A page index whose offset 0 is at address `base` (0 for a process's
    pagemap, the VMA's start less its offset for shared memory)."""

    def __init__(self, index: PageIndex, base: int,
                 pages: Callable[[PageIndex], Source]):
        self.index, self.base, self.pages = index, base, pages

    def extents(self, a, b):
        base = self.base
        for r in self.index.runs(a - base, b - base):
            yield Extent(r.addr + base, r.length,
                         self.pages(r.index) if r.kind == HERE else None,
                         r.offset)


class FilePages(PageSource):
    """A mapped file at the VMA's offset, up to its size at checkpoint time
    when known."""

    def __init__(self, vma: Vma, source: Source, size: int | None):
        self.vma, self.source, self.size = vma, source, size

    def extents(self, a, b):
        off = self.vma.pgoff + (a - self.vma.start)
        n = b - a
        if self.size is not None:
            n = min(n, max(0, self.size - off))
        if n > 0:
            yield Extent(a, n, self.source, off)


class GhostPages(PageSource):
    """A deleted file's contents from its ghost image: each part is (file
    offset, length, image offset); what no part covers (a hole of a sparse
    file, or past its end) is a hole."""

    def __init__(self, vma: Vma, source: Source,
                 parts: list[tuple[int, int, int]]):
        self.vma, self.source, self.parts = vma, source, parts

    def extents(self, a, b):
        lo = self.vma.pgoff + (a - self.vma.start)
        hi = lo + (b - a)
        for foff, flen, ioff in self.parts:
            s, e = max(lo, foff), min(hi, foff + flen)
            if s < e:
                yield Extent(a + (s - lo), e - s, self.source, ioff + (s - foff))


def layered(srcs: list[PageSource], a: int, b: int) -> Iterator[Extent]:
    """Extents of [a, b) from the first source that has them; gaps fall
    through to the next source.  A known hole (source None) is not looked
    up further, and not yielded."""
    if not srcs:
        return
    first, rest = srcs[0], srcs[1:]
    if not rest:
        for ext in first.extents(a, b):
            if ext.source is not None:
                yield ext
        return
    pos = a
    for ext in first.extents(a, b):
        if ext.addr > pos:
            yield from layered(rest, pos, ext.addr)
        if ext.source is not None:
            yield ext
        pos = ext.addr + ext.length
    if pos < b:
        yield from layered(rest, pos, b)


class Guards:
    """The guard regions of a process (sorted, merged): a guard page has no
    page behind it and reads as zeros in the kernel's core."""

    def __init__(self, ranges: list[tuple[int, int]]):
        self.ranges = ranges
        self.starts = [g[0] for g in ranges]

    def meets(self, a: int, b: int) -> bool:
        """Whether some guard region intersects [a, b)."""
        i = bisect_right(self.starts, a) - 1
        if i >= 0 and self.ranges[i][1] > a:
            return True
        return i + 1 < len(self.ranges) and self.ranges[i + 1][0] < b

    def cut(self, extents: Iterable[Extent]) -> Iterator[Extent]:
        guards = self.ranges
        if not guards:
            yield from extents
            return
        starts = self.starts
        for (ra, rl, src, off) in extents:
            pos, end = ra, ra + rl
            i = max(bisect_right(starts, pos) - 1, 0)
            while pos < end:
                while i < len(guards) and guards[i][1] <= pos:
                    i += 1
                if i == len(guards) or guards[i][0] >= end:
                    yield Extent(pos, end - pos, src, off + (pos - ra))
                    break
                gs, ge = guards[i]
                if gs > pos:
                    yield Extent(pos, gs - pos, src, off + (pos - ra))
                pos = max(pos, ge)


# -- one process -----------------------------------------------------------------

def _where(vma: Vma) -> str:
    """A mapping as messages name it (made only when one is given)."""
    return "0x%x-0x%x" % (vma.start, vma.end)


class PageSources:
    """The page sources of one process: its page index, the shared-memory
    indexes (shared between processes through `shmem_cache`), the mapped
    files (checked once each, warned about once), and the fd cache."""

    def __init__(self, ckpt: Checkpoint, proc: Process, rootfs,
                 warn: Warn | None = None,
                 shmem_cache: dict[int, PageIndex | None] | None = None):
        self.ckpt = ckpt
        self.images: ImageDir = ckpt.images
        self.proc = proc
        self.rootfs = rootfs
        self._warn = warn or (lambda path, what: None)
        self._shmem = shmem_cache if shmem_cache is not None else {}
        self.fds = FdCache(warn=self._warn)
        self._files: dict[int, object] = {}   # file id -> Source or False
        self._pages: dict[str, ImagePages] = {}
        self._warned = set()
        self.index: PageIndex | None = None
        self.guards = Guards(proc.mm.guards if proc.mm is not None else [])
        self._vmas = proc.mm.vmas if proc.mm is not None else []
        self._vma_starts = [v.start for v in self._vmas]
        if proc.mm is not None:
            self.index = PageIndex(self.images, ImageDir.pagemap(proc.pid))
            if self.index.starts:
                self.index.check_inside(proc.mm.vmas)

    def close(self):
        self.fds.close()

    # -- what a VMA maps ---------------------------------------------------------

    def mapped_file(self, vma: Vma) -> MappedFile | None:
        if vma.has(VMA_AREA_MEMFD) or vma.is_file:
            return self.ckpt.files.get(vma.shmid)
        return None

    def shmem_id(self, vma: Vma) -> int | None:
        """Id of the shared-memory pagemap holding this VMA's pages, if any."""
        f = self.mapped_file(vma)
        if f is not None and f.kind == "memfd":
            return f.shmem_id
        if vma.has(VMA_ANON_SHARED) and not vma.is_file:
            return vma.shmid
        return None

    def shmem_index(self, shmid: int) -> PageIndex | None:
        """The page index of a shared-memory object, or None when its image
        is absent (check_promises warns about it)."""
        if shmid not in self._shmem:
            name = ImageDir.shmem_pagemap(shmid)
            self._shmem[shmid] = (PageIndex(self.images, name)
                                  if self.images.lexists(name) else None)
        return self._shmem[shmid]

    # -- the sources ---------------------------------------------------------------

    def pages_of(self, index: PageIndex) -> ImagePages:
        """One Source per pages image, shared by all its runs."""
        src = self._pages.get(index.pages_path)
        if src is None:
            src = self._pages[index.pages_path] = ImagePages(
                index.images, index.pages_name, self.fds)
        return src

    def image_sources(self, vma: Vma) -> list[PageSource]:
        """The VMA's page sources that are pages images (its pagemap's,
        then its shared memory's), in the order pages are looked for."""
        srcs: list[PageSource] = [IndexPages(self.index, 0, self.pages_of)]
        sid = self.shmem_id(vma)
        if sid is not None:
            sidx = self.shmem_index(sid)
            if sidx is not None:
                srcs.append(IndexPages(sidx, vma.start - vma.pgoff,
                                       self.pages_of))
        return srcs

    def for_vma(self, vma: Vma) -> list[PageSource]:
        """The VMA's page sources, in the order pages are looked for: the
        pages images, then the mapped file (not for shared memory)."""
        srcs = self.image_sources(vma)
        sid = self.shmem_id(vma)
        f = self.mapped_file(vma)
        fsrc = self.file_source(f) if sid is None else None
        if fsrc is not None and f.ghost is not None:
            srcs.append(GhostPages(vma, fsrc, f.ghost[1]))
        elif fsrc is not None:
            srcs.append(FilePages(vma, fsrc, f.size))
        return srcs

    def extents(self, srcs: list[PageSource], a: int,
                b: int) -> Iterator[Extent]:
        """The extents of [a, b) the sources have, guard regions cut out."""
        return self.guards.cut(layered(srcs, a, b))

    def batch(self, srcs: list[PageSource], a: int, b: int) -> Batch | None:
        """The extents of [a, b) as one Batch when they are all runs of the
        process's own pages image (the sources are its pagemap alone, no
        run is in a parent, no guard region meets the range): what a
        sparsely touched heap of a million entries is.  None otherwise:
        extents() answers."""
        if len(srcs) != 1 or type(srcs[0]) is not IndexPages \
                or srcs[0].base != 0 or srcs[0].index is not self.index:
            return None
        P = PAGE_SIZE
        if a % P or b % P or b <= a or self.guards.meets(a, b):
            return None
        index = self.index
        starts = index.starts
        lo = max(bisect_right(starts, a) - 1, 0)
        hi = bisect_left(starts, b, lo)
        if lo < hi and starts[lo] + index.npages[lo] * P <= a:
            lo += 1
        if PARENT in index.where[lo:hi]:
            return None
        return Batch(self.pages_of(index), P, index, lo, hi, a, b)

    def file_source(self, f: MappedFile | None) -> Source | None:
        """A Source for a mapped regular file, or None (warned once) if it is
        absent or not the file the process mapped (another build-id).

        A file deleted while mapped is read where CRIU kept it: its ghost
        image, or the hard link CRIU made (a LINKED remap)."""
        if f is None or f.kind != "reg":
            return None
        ok = self._files.get(f.id)
        if ok is None:
            if f.ghost is not None:
                ok = ImagePages(self.images, f.ghost[0], self.fds)
            else:
                ok = self._checked_file(f, f.linked_path or f.path)
            self._files[f.id] = ok
        return ok or None

    def _checked_file(self, f: MappedFile, path: str):
        shown = self.rootfs.display(path)
        try:
            fd = self.rootfs.open(path)
        except OSError as e:
            self._warn(shown, "cannot read mapped file (%s); its pages are "
                       "holes" % (e.strerror or e))
            return False
        try:
            found = read_build_id(fd) if f.build_id else None
        except OSError:
            found = None
        finally:
            os.close(fd)
        if f.build_id and not same_build(f.build_id, found):
            self._warn(shown, "is not the file the process mapped: build-id "
                       "%s, the checkpoint recorded %s; its pages are holes"
                       % (show_build_id(found), show_build_id(f.build_id)))
            return False
        return MappedPages(self.rootfs, shown, path, f.size is not None, self.fds)

    # -- reading memory ----------------------------------------------------------

    def vma_at(self, addr: int) -> Vma | None:
        i = bisect_right(self._vma_starts, addr) - 1
        if i >= 0 and addr < self._vmas[i].end:
            return self._vmas[i]
        return None

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of the process's memory at checkpoint time (holes read as
        0): the few the notes and the registers need (the command line,
        the instruction at a thread's pc)."""
        out = bytearray(size)
        before = getattr(self.images, "before_reads", None)
        if before is not None:
            before(self)  # a compressed archive prefetches what is read here
        for ext in self.extents_in(addr, size):
            f = ext.source.open()
            if f is None:
                continue  # a mapped file gone since the plan: a hole
            n = ext.length
            if f.size is not None:
                n = min(n, max(0, f.size - ext.offset))
            data = pread(f, n, ext.offset)
            out[ext.addr - addr:ext.addr - addr + len(data)] = data
        return bytes(out)

    def extents_in(self, addr: int, size: int,
                   images_only: bool = False) -> Iterator[Extent]:
        """The extents of [addr, addr + size), mapping after mapping, up to
        the first address no mapping holds.  `images_only`: of the pages
        images alone (what a compressed archive prefetches: no mapped file
        is opened, nothing is warned)."""
        pos, end = addr, addr + size
        while pos < end:
            vma = self.vma_at(pos)
            if vma is None:
                break
            b = min(end, vma.end)
            srcs = self.image_sources(vma) if images_only else self.for_vma(vma)
            yield from self.extents(srcs, pos, b)
            pos = b

    # -- what the images promise and lack -------------------------------------------

    def _once(self, key, path, what):
        if key not in self._warned:
            self._warned.add(key)
            self._warn(path, what)

    def check_promises(self, vmas: list[Vma], dumped: list[int]):
        """Warn about every mapping whose file or pages the images promise
        and do not hold: a file VMA whose id names no regular file or memfd
        (files.img absent, or the id names a pipe or nothing), a memfd whose
        inode memfd.img lacks, shared memory without its pagemap-shmem image
        (CRIU writes one for every shared-memory object it dumps, untouched
        ones included).  Such a mapping is left out of NT_FILE and what the
        pagemap does not hold of it is a hole.  `dumped`: each VMA's dump
        size."""
        d = self.images
        files_img = d.join(d.FILES)
        for vma, size in zip(vmas, dumped):
            if vma.is_file or vma.has(VMA_AREA_MEMFD):
                f = self.ckpt.files.get(vma.shmid)
                if f is None:
                    self._once(("file", vma.shmid), files_img,
                               "no regular file or memfd with id %d, which "
                               "the mapping at %s names; the mapping is left "
                               "out of NT_FILE and its pages not in the "
                               "pagemap are holes" % (vma.shmid, _where(vma)))
                    continue
                if nt_file_name(f.kernel_name)[1]:
                    self._once(("name", f.id), files_img if f.kind == "reg"
                               else d.join(d.MEMFD),
                               "the name of file %d, mapped at %s, holds a NUL "
                               "or a character no path can hold; NT_FILE has "
                               "it escaped" % (f.id, _where(vma)))
                if f.kind == "memfd" and f.shmem_id is None:
                    self._once(("inode", f.id), d.join(d.MEMFD),
                               "no inode for memfd file %d, which the mapping "
                               "at %s names; its name is unknown and its pages "
                               "are holes" % (f.id, _where(vma)))
                    continue
            if not size:
                continue
            sid = self.shmem_id(vma)
            if sid is not None and self.shmem_index(sid) is None:
                self._once(("shmem", sid), d.join(d.shmem_pagemap(sid)),
                           "missing: the shared memory mapped at %s has no "
                           "pages; they are holes" % _where(vma))
