"""The memory plan: what each VMA contributes to the core, and from where.

For every VMA we decide, with the kernel's vma_dump_size() rules and the
coredump_filter bits, how many bytes are dumped; then each dumped byte comes
from, in order: the process's pagemap (this checkpoint, or its parents for
pre-dump chains), the shared-memory images (anonymous shared, memfd), the
mapped file at the VMA's offset, else it is a hole (zeros, written sparse).

Nothing here reads page contents except `read()` (for the few bytes the
notes need, such as the command line); the writer streams the chunks.
"""
from __future__ import annotations

import os
from bisect import bisect_right
from collections import OrderedDict

from . import images
from .elf import PF_R, PF_W, PF_X
from .dump_filter import (DEFAULT_FILTER, MMF_ANON_PRIVATE, MMF_ANON_SHARED,
                          MMF_ELF_HEADERS, MMF_HUGETLB_PRIVATE,
                          MMF_HUGETLB_SHARED, MMF_MAPPED_PRIVATE,
                          MMF_MAPPED_SHARED)
from .buildid import read_build_id, same_build
from .buildid import shown as show_build_id
from .errors import BadImage
from .notes import nt_file_name
from .pagemap import HERE, PageIndex
from .record import Record
from .rootfs import open_regular

P = images.PAGE_SIZE


class Source(Record):
    """A file that page data is copied from."""
    def __init__(self, path: str, kind: str, open_path: str = "", sized: bool = True):
        self.path = path                  # host path, for messages
        self.kind = kind                  # "pages" (an image) or "mapped" (a process's file)
        self.open_path = open_path        # for "mapped": the path in the process's view
        self.sized = sized                # for "mapped": its size at checkpoint time is known,


class Segment(Record):
    def __init__(self, vma: images.Vma,
                 flags: int,
                 dump_size: int,
                 chunks_fn: object | None = None):
        self.vma = vma
        self.flags = flags
        self.dump_size = dump_size
        self.chunks_fn = chunks_fn        # () -> iterator of chunks

    @property
    def vaddr(self):
        return self.vma.start

    @property
    def memsz(self):
        return self.vma.size

    def chunks(self):
        """(addr, length, Source, offset) for every part of the dumped range
        that has data; what is not yielded is a hole."""
        if self.dump_size and self.chunks_fn is not None:
            yield from self.chunks_fn()


class PlanStats(Record):
    def __init__(self, lazy_pages: int = 0, missing_files: list[str] | None = None):
        self.lazy_pages = lazy_pages
        self.missing_files = [] if missing_files is None else missing_files


class FdCache:
    """Keeps a bounded number of source files open across segments.

    A pages image that cannot be opened is an error (BadImage): the images
    promised its pages.  A mapped file that cannot be opened now (removed,
    replaced by something that is not a regular file since the plan checked
    it) costs its pages, with a warning, as it does when it is missing from
    the start: `fd()` returns None and its chunks stay holes.  Likewise a
    source that ends before a chunk (`short_read`)."""

    def __init__(self, rootfs, limit=64, warn=None):
        self.rootfs = rootfs
        self.limit = limit
        self._fds = OrderedDict()
        self._warn = warn or (lambda path, what: None)
        self._gone = set()    # mapped files warned about: no more warnings

    def fd(self, src):
        key = (src.kind, src.path)
        fd = self._fds.get(key)
        if fd is not None:
            self._fds.move_to_end(key)
            return fd
        if key in self._gone:
            return None
        if src.kind == "pages":
            try:
                fd = open_regular(src.path)
            except OSError as e:
                raise BadImage(src.path, "cannot open: %s"
                               % (e.strerror or e)) from None
        else:
            try:
                fd = self.rootfs.open(src.open_path)
            except OSError as e:
                self._lost(src, "cannot read mapped file (%s); its pages are "
                           "holes" % (e.strerror or e))
                return None
        self._fds[key] = fd
        if len(self._fds) > self.limit:
            _, old = self._fds.popitem(last=False)
            os.close(old)
        return fd

    def short_read(self, src, addr, missing):
        """`missing` bytes at addr were not in src (it ended before them)."""
        if src.kind == "pages":
            raise BadImage(src.path, "ends before the pages its pagemap "
                           "places at 0x%x (it changed during the conversion?)"
                           % addr)
        if not src.sized:
            return  # read up to its end, as the kernel would
        self._lost(src, "ends before the mapping at 0x%x needs it (it is "
                   "shorter than when it was checkpointed?); the pages past "
                   "its end are holes" % addr)

    def _lost(self, src, what):
        key = (src.kind, src.path)
        if key not in self._gone:
            self._gone.add(key)
            self._warn(src.path, what)

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def prot_to_pflags(prot):
    return ((PF_R if prot & images.PROT_READ else 0)
            | (PF_W if prot & images.PROT_WRITE else 0)
            | (PF_X if prot & images.PROT_EXEC else 0))


class MemoryPlan:
    """Segments of one process, and reads of its memory at checkpoint time."""

    def __init__(self, ckpt, proc, rootfs, dump_filter=DEFAULT_FILTER,
                 shmem_cache=None, warn=None):
        self.ckpt = ckpt
        self.proc = proc
        self.rootfs = rootfs
        self.filter = dump_filter
        self.stats = PlanStats()
        self._warn = warn or (lambda path, what: None)
        self._shmem = shmem_cache if shmem_cache is not None else {}
        self._file_ok = {}
        self._page_srcs = {}
        self.fds = FdCache(rootfs, warn=self._warn)
        self.segments = []
        self._warned = set()
        self.index = None
        mm = proc.mm
        if mm is None:
            return
        self._vma_starts = [v.start for v in mm.vmas]
        self._guard_starts = [g[0] for g in mm.guards]
        pm = "pagemap-%d.img" % proc.pid
        self.index = PageIndex(ckpt.dir, pm)
        self.stats.lazy_pages = self.index.lazy_pages
        if self.index.starts:
            self._check_inside_vmas(mm.vmas)
        for vma in mm.vmas:
            self.segments.append(self._segment(vma))
        self._check_promises()

    def close(self):
        self.fds.close()

    # -- page sources ------------------------------------------------------

    def _check_inside_vmas(self, vmas):
        """Every pagemap run must lie inside the VMAs (one walk over both
        sorted lists)."""
        idx = self.index
        starts, npages = idx.starts, idx.npages
        j, nv = 0, len(vmas)
        for i in range(len(starts)):
            pos = starts[i]
            b = pos + npages[i] * P
            while pos < b:
                while j < nv and vmas[j].end <= pos:
                    j += 1
                if j == nv or vmas[j].start > pos:
                    raise BadImage(idx.path, "pages at 0x%x lie outside every "
                                   "VMA of the process" % pos)
                pos = vmas[j].end

    def _shmem_index(self, shmid):
        """The page index of a shared-memory object, or None when its image
        is absent (_check_promises warns about it)."""
        if shmid not in self._shmem:
            name = "pagemap-shmem-%d.img" % shmid
            try:
                os.lstat(os.path.join(self.ckpt.dir, name))
                self._shmem[shmid] = PageIndex(self.ckpt.dir, name)
            except FileNotFoundError:
                self._shmem[shmid] = None
        return self._shmem[shmid]

    def _once(self, key, path, what):
        if key not in self._warned:
            self._warned.add(key)
            self._warn(path, what)

    def _check_promises(self):
        """Warn about every mapping whose file or pages the images promise
        and do not hold: a file VMA whose id names no regular file or memfd
        (files.img absent, or the id names a pipe or nothing), a memfd whose
        inode memfd.img lacks, shared memory without its pagemap-shmem image
        (CRIU writes one for every shared-memory object it dumps, untouched
        ones included).  Such a mapping is left out of NT_FILE and what the
        pagemap does not hold of it is a hole."""
        files_img = os.path.join(self.ckpt.dir, "files.img")
        for vma, seg in zip(self.proc.mm.vmas, self.segments):
            where = "0x%x-0x%x" % (vma.start, vma.end)
            if vma.is_file or vma.has(images.VMA_AREA_MEMFD):
                f = self.ckpt.files.get(vma.shmid)
                if f is None:
                    self._once(("file", vma.shmid), files_img,
                               "no regular file or memfd with id %d, which "
                               "the mapping at %s names; the mapping is left "
                               "out of NT_FILE and its pages not in the "
                               "pagemap are holes" % (vma.shmid, where))
                    continue
                if nt_file_name(f.kernel_name)[1]:
                    self._once(("name", f.id), files_img if f.kind == "reg"
                               else os.path.join(self.ckpt.dir, "memfd.img"),
                               "the name of file %d, mapped at %s, holds a NUL "
                               "or a character no path can hold; NT_FILE has "
                               "it escaped" % (f.id, where))
                if f.kind == "memfd" and f.shmem_id is None:
                    self._once(("inode", f.id),
                               os.path.join(self.ckpt.dir, "memfd.img"),
                               "no inode for memfd file %d, which the mapping "
                               "at %s names; its name is unknown and its pages "
                               "are holes" % (f.id, where))
                    continue
            if not seg.dump_size:
                continue
            sid = self._shmem_id(vma)
            if sid is not None and self._shmem_index(sid) is None:
                self._once(("shmem", sid), os.path.join(
                    self.ckpt.dir, "pagemap-shmem-%d.img" % sid),
                    "missing: the shared memory mapped at %s has no pages; "
                    "they are holes" % where)

    def _mapped_file(self, vma):
        if vma.has(images.VMA_AREA_MEMFD) or vma.is_file:
            return self.ckpt.files.get(vma.shmid)
        return None

    def _shmem_id(self, vma):
        """Id of the shared-memory pagemap holding this VMA's pages, if any."""
        f = self._mapped_file(vma)
        if f is not None and f.kind == "memfd":
            return f.shmem_id
        if vma.has(images.VMA_ANON_SHARED) and not vma.is_file:
            return vma.shmid
        return None

    def _file_source(self, f):
        """A Source for a mapped regular file, or None (warned once) if it is
        absent or not the file the process mapped (another build-id).

        A file deleted while mapped is read where CRIU kept it: its ghost
        image, or the hard link CRIU made (a LINKED remap)."""
        if f is None or f.kind != "reg":
            return None
        ok = self._file_ok.get(f.id)
        if ok is None:
            if f.ghost is not None:
                ok = Source(f.ghost[0], "pages")
            else:
                ok = self._checked_file(f, f.linked_path or f.path)
            self._file_ok[f.id] = ok
        return ok or None

    def _checked_file(self, f, path):
        shown = self.rootfs.display(path)
        try:
            fd = self.rootfs.open(path)
        except OSError as e:
            self.stats.missing_files.append(shown)
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
            self.stats.missing_files.append(shown)
            self._warn(shown, "is not the file the process mapped: build-id %s, "
                       "the checkpoint recorded %s; its pages are holes"
                       % (show_build_id(found), show_build_id(f.build_id)))
            return False
        return Source(shown, "mapped", path, sized=f.size is not None)

    def _pages_source(self, path):
        """One Source per pages image, shared by all its runs."""
        src = self._page_srcs.get(path)
        if src is None:
            src = self._page_srcs[path] = Source(path, "pages")
        return src

    def _index_source(self, idx, base=0):
        """Runs (start, end) -> (addr, length, Source or None, offset) of a
        page index whose offset 0 is at address `base`; None is a known hole
        (lazy page)."""
        def runs(a, b):
            for (ra, rl, kind, path, off) in idx.runs(a - base, b - base):
                yield (ra + base, rl,
                       self._pages_source(path) if kind == HERE else None, off)
        return runs

    def _sources(self, vma):
        """Functions (start, end) -> runs, in the order pages are looked for."""
        srcs = [self._index_source(self.index)]
        sid = self._shmem_id(vma)
        if sid is not None:
            sidx = self._shmem_index(sid)
            if sidx is not None:
                srcs.append(self._index_source(sidx, vma.start - vma.pgoff))
        f = self._mapped_file(vma)
        fsrc = self._file_source(f) if sid is None else None
        if fsrc is not None and f.ghost is not None:
            srcs.append(self._ghost_runs(f.ghost[1], fsrc, vma))
        elif fsrc is not None:
            size = f.size

            def from_file(a, b, fsrc=fsrc, size=size, vma=vma):
                off = vma.pgoff + (a - vma.start)
                n = b - a
                if size is not None:
                    n = min(n, max(0, size - off))
                if n > 0:
                    yield (a, n, fsrc, off)
            srcs.append(from_file)
        return srcs

    @staticmethod
    def _ghost_runs(extents, src, vma):
        """Runs of a deleted file's contents from its ghost image: each
        extent is (file offset, length, image offset); what no extent
        covers (a hole of a sparse file, or past its end) is a hole."""
        def runs(a, b):
            lo = vma.pgoff + (a - vma.start)
            hi = lo + (b - a)
            for foff, flen, ioff in extents:
                s, e = max(lo, foff), min(hi, foff + flen)
                if s < e:
                    yield (a + (s - lo), e - s, src, ioff + (s - foff))
        return runs

    @staticmethod
    def _layered(srcs, a, b):
        """Runs of [a, b) from the first source that has them; gaps fall
        through to the next source.  A run with Source None is a known hole
        (lazy page) and is not looked up further."""
        if not srcs:
            return
        first, rest = srcs[0], srcs[1:]
        if not rest:
            for run in first(a, b):
                if run[2] is not None:
                    yield run
            return
        pos = a
        for run in first(a, b):
            ra = run[0]
            if ra > pos:
                yield from MemoryPlan._layered(rest, pos, ra)
            if run[2] is not None:
                yield run
            pos = ra + run[1]
        if pos < b:
            yield from MemoryPlan._layered(rest, pos, b)

    # -- what is dumped ----------------------------------------------------

    def _is_elf(self, vma):
        try:
            return self.read(vma.start, 4) == b"\x7fELF"
        except Exception:
            return False

    def dump_size(self, vma):
        """The kernel's vma_dump_size() for a VMA described by CRIU images."""
        flt = self.filter
        st = vma.status
        if st & (images.VMA_AREA_VSYSCALL | images.VMA_AREA_VVAR):
            return 0  # not readable from user space; nothing in the images
        if st & images.VMA_AREA_VDSO:
            return vma.size  # always_dump_vma()
        if vma.madv & (1 << images.MADV_DONTDUMP):
            return 0
        if st & images.VMA_AREA_SOCKET:
            return 0
        if st & (images.VMA_AREA_UPROBES | images.VMA_EXT_PLUGIN):
            # the uprobes XOL area and device mappings are VM_IO or
            # special mappings, which the kernel does not dump
            return 0
        # DAX (bits 7, 8) cannot be told from the images: CRIU does not
        # record it, so those bits change nothing.
        if vma.is_hugetlb:
            bit = MMF_HUGETLB_SHARED if vma.is_shared else MMF_HUGETLB_PRIVATE
            return vma.size if flt & bit else 0
        f = self._mapped_file(vma)
        if vma.is_shared:
            anon_like = (not vma.is_file or st & (images.VMA_AREA_MEMFD
                                                  | images.VMA_AREA_SYSVIPC)
                         or (f is not None and (f.kind == "memfd" or f.deleted)))
            bit = MMF_ANON_SHARED if anon_like else MMF_MAPPED_SHARED
            return vma.size if flt & bit else 0
        # Written-to private memory: the kernel tests vma->anon_vma; the
        # images show it as pages in the pagemap.
        if flt & MMF_ANON_PRIVATE and self.index is not None \
                and self.index.covers_any(vma.start, vma.end):
            return vma.size
        if not vma.is_file:
            return 0
        if flt & MMF_MAPPED_PRIVATE:
            return vma.size
        if flt & MMF_ELF_HEADERS and vma.pgoff == 0 and vma.prot & images.PROT_READ:
            if f is not None and f.mode & 0o111:
                return P
            if self._is_elf(vma):
                return P
        return 0

    def _segment(self, vma):
        seg = Segment(vma=vma, flags=prot_to_pflags(vma.prot), dump_size=0)
        size = self.dump_size(vma)
        seg.dump_size = size
        if size:
            srcs = self._sources(vma)
            seg.chunks_fn = lambda srcs=srcs, a=vma.start, b=vma.start + size: \
                self._unguarded(self._layered(srcs, a, b))
        return seg

    def _unguarded(self, runs):
        """Runs with the guard regions cut out: a guard page has no page
        behind it, and reads as zeros in the kernel's core."""
        guards = self.proc.mm.guards
        if not guards:
            yield from runs
            return
        starts = self._guard_starts
        for (ra, rl, src, off) in runs:
            pos, end = ra, ra + rl
            i = max(bisect_right(starts, pos) - 1, 0)
            while pos < end:
                while i < len(guards) and guards[i][1] <= pos:
                    i += 1
                if i == len(guards) or guards[i][0] >= end:
                    yield (pos, end - pos, src, off + (pos - ra))
                    break
                gs, ge = guards[i]
                if gs > pos:
                    yield (pos, gs - pos, src, off + (pos - ra))
                pos = max(pos, ge)

    # -- reading -----------------------------------------------------------

    def vma_at(self, addr):
        if self.proc.mm is None:
            return None
        vmas = self.proc.mm.vmas
        i = bisect_right(self._vma_starts, addr) - 1
        if i >= 0 and addr < vmas[i].end:
            return vmas[i]
        return None

    def read(self, addr, size):
        """Bytes of the process's memory at checkpoint time (holes read as 0)."""
        out = bytearray(size)
        pos, end = addr, addr + size
        while pos < end:
            vma = self.vma_at(pos)
            if vma is None:
                break
            b = min(end, vma.end)
            for (ra, rl, src, off) in self._unguarded(
                    self._layered(self._sources(vma), pos, b)):
                fd = self.fds.fd(src)
                if fd is None:
                    continue  # a mapped file gone since the plan: a hole
                data = os.pread(fd, rl, off)
                out[ra - addr:ra - addr + len(data)] = data
            pos = b
        return bytes(out)
