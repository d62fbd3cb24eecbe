"""The memory plan: the segments of one process's core.

For every VMA, `policy.dump_size()` decides how many bytes from its start
go into the core, and `sources.PageSources` gives the page sources those
bytes come from; a `Segment` holds both, and `Segment.extents()` yields
the typed extents the writer copies.  `read()` gives the few bytes of
memory the notes and the registers need (the command line, the
instruction at a thread's pc), from the same sources.
"""
from __future__ import annotations

from collections.abc import Iterator

from . import policy
from .elf import PF_R, PF_W, PF_X
from .model import PROT_EXEC, PROT_READ, PROT_WRITE, Checkpoint, Process, Vma
from .policy import DEFAULT_FILTER
from .record import Record
from .sources import Batch, Extent, PageSource, PageSources


class Segment(Record):
    """One PT_LOAD: the whole VMA in memory, its first dump_size bytes in
    the file, from `sources`."""
    def __init__(self, vma: Vma,
                 flags: int,
                 dump_size: int,
                 sources: list[PageSource] | None = None,
                 pages: PageSources | None = None):
        self.vma = vma
        self.flags = flags
        self.dump_size = dump_size
        self.sources = [] if sources is None else sources
        self.pages = pages

    @property
    def vaddr(self) -> int:
        return self.vma.start

    @property
    def memsz(self) -> int:
        return self.vma.size

    def extents(self) -> Iterator[Extent]:
        """Every part of the dumped range that has data; what is not
        yielded is a hole."""
        if self.dump_size and self.pages is not None:
            yield from self.pages.extents(self.sources, self.vma.start,
                                          self.vma.start + self.dump_size)

    def batch(self) -> Batch | None:
        """The same extents as one Batch of arrays, when they are all runs
        of the process's pages image (sources.PageSources.batch), for the
        writer to copy without one Python object per extent; else None."""
        if self.dump_size and self.pages is not None:
            return self.pages.batch(self.sources, self.vma.start,
                                    self.vma.start + self.dump_size)
        return None


class PlanStats(Record):
    def __init__(self, lazy_pages: int = 0):
        self.lazy_pages = lazy_pages


def prot_to_pflags(prot: int) -> int:
    return ((PF_R if prot & PROT_READ else 0)
            | (PF_W if prot & PROT_WRITE else 0)
            | (PF_X if prot & PROT_EXEC else 0))


class MemoryPlan:
    """The segments of one process (policy and sources per VMA); read()
    gives its memory at checkpoint time (PageSources.read)."""

    def __init__(self, ckpt: Checkpoint, proc: Process, rootfs,
                 dump_filter: int = DEFAULT_FILTER, shmem_cache=None,
                 warn=None):
        self.proc = proc
        self.filter = dump_filter
        self.stats = PlanStats()
        self.pages = PageSources(ckpt, proc, rootfs, warn, shmem_cache)
        self.segments: list[Segment] = []
        self.index = self.pages.index
        mm = proc.mm
        if mm is None:
            return
        self.stats.lazy_pages = self.index.lazy_pages
        for vma in mm.vmas:
            self.segments.append(self._segment(vma))
        self.pages.check_promises(mm.vmas, [s.dump_size for s in self.segments])

    def close(self):
        self.pages.close()

    def _is_elf(self, vma: Vma) -> bool:
        try:
            return self.read(vma.start, 4) == b"\x7fELF"
        except Exception:
            return False

    def dump_size(self, vma: Vma) -> int:
        """The kernel's vma_dump_size() for a VMA described by CRIU images."""
        return policy.dump_size(
            vma, self.pages.mapped_file(vma),
            self.index is not None and self.index.covers_any(vma.start, vma.end),
            lambda: self._is_elf(vma), self.filter)

    def _segment(self, vma: Vma) -> Segment:
        size = self.dump_size(vma)
        seg = Segment(vma=vma, flags=prot_to_pflags(vma.prot), dump_size=size)
        if size:
            seg.sources = self.pages.for_vma(vma)
            seg.pages = self.pages
        return seg

    def read(self, addr: int, size: int) -> bytes:
        """Bytes of the process's memory at checkpoint time (holes read as
        0): sources.PageSources.read."""
        return self.pages.read(addr, size)
