"""A batch of small runs of a pages image written to their own offsets of
the core, holes kept, a window at a time by AIO (aio.py).

What writer._copy_batch_holes does run by run (a file system in memory,
where the holes between runs must stay holes), done for a window of runs
at once: the part of the pages image they come from is mapped, and the
writes' addresses, lengths and offsets are computed from the index's
arrays all at once (as slots of one big integer, swar.py), then handed
to io_submit.
A quarter of a million one-page runs cost a few hundred system calls and
no Python step per page.

Runs that do not fit a window (lazy pages, a run of GATHER_CHUNK or more,
one that would overwrite what was written, one past the image's end) are
copied one by one by writer._copy_extent, as before (all the runs left,
when the image cannot be mapped).  The mapping is only
ever read by the kernel: an image that shrinks meanwhile makes the write
fail with EFAULT, reported as a BadImage naming it, never a SIGBUS.
"""
from __future__ import annotations

import ctypes
import functools
import mmap
import os
from array import array
from bisect import bisect_left

from . import aio, imagedir, libc, swar
from .pagemap import HERE

SPAN = 4 << 20     # bytes of the pages image mapped at a time
_MIN_RUNS = 4      # fewer runs fitting a window are copied one by one
_MAX_RUNS = 1024   # runs a window takes at most


class _Mapping:
    """A read-only shared mapping of n bytes at `offset` of fd, by address
    (libc's mmap: a Python mmap gives no address of a read-only mapping)."""

    def __init__(self, fd, offset, n):
        mmap_ = libc.function("mmap", (ctypes.c_void_p, ctypes.c_size_t,
                                       ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_long), ctypes.c_void_p)
        lead = offset % mmap.ALLOCATIONGRANULARITY
        self.length = lead + n
        # populated at once: every page of a window is written from
        self.base = mmap_(None, self.length, mmap.PROT_READ,
                          mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
                          fd, offset - lead)
        if self.base in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        self.address = self.base + lead

    def close(self):
        libc.function("munmap", (ctypes.c_void_p, ctypes.c_size_t))(
            self.base, self.length)


def copy(writes, batch, source, src, base, floor, gather, progress):
    """writer._copy_batch_holes by AIO `writes`; the same arguments and
    result (bytes copied, new floor)."""
    from .writer import GATHER_CHUNK, _copy_extent
    P = batch.page
    small = GATHER_CHUNK
    fd, writeback = gather.fd, gather.writeback
    last_page = imagedir.length(src) // P  # pages a window may map
    span = max(SPAN // P, 1)
    written = 0
    for starts, npages, offsets, wheres in batch.chunks():
        k = len(starts)
        i = 0
        while i < k:
            n = npages[i]
            j = i
            if writes is not None and wheres[i] == HERE and n * P < small \
                    and base + starts[i] >= floor:
                j = _window(npages, offsets, wheres, i, k,
                            min(offsets[i] + span, last_page), small // P)
            if j - i < _MIN_RUNS:
                if wheres[i] == HERE:  # else lazy pages: a hole
                    dst = base + starts[i]
                    written += _copy_extent(source, src, fd, starts[i], n * P,
                                            offsets[i] * P, dst,
                                            gather.dst_name, writeback)
                    if progress:
                        progress(n * P)
                    floor = max(floor, dst + n * P)
                i += 1
                continue
            try:
                done, end = _write_window(writes, fd, P, base, starts, npages,
                                          offsets, i, j, src, source,
                                          gather.dst_name)
            except _Unmappable:
                writes = None  # the rest one by one
                continue
            first = base + starts[i]
            writeback.wrote(first, end - first)
            if progress:
                progress(done)
            written += done
            floor = end
            i = j
    return written, floor


def _window(npages, offsets, wheres, i, k, end_page, big):
    """The end j of the runs from i that one window takes: present pages
    (none lazy), each shorter than `big` pages, all of them within the
    image's pages [offsets[i], end_page) (the runs of present pages are in
    order in the image: their offsets ascend)."""
    j = min(k, i + _MAX_RUNS)
    tail = wheres[i:j].tobytes()
    j = i + len(tail) - len(tail.lstrip(bytes((HERE,))))  # the first not HERE
    j = bisect_left(offsets, end_page, i, j)
    if j > i and offsets[j - 1] + npages[j - 1] > end_page:
        j -= 1
    if j > i and max(npages[i:j]) >= big:
        j = i + next(x for x, n in enumerate(npages[i:j]) if n >= big)
    return j


def _write_window(writes, fd, P, base, starts, npages, offsets, i, j, src,
                  source, dst_name):
    """Write runs i to j (_window's) from one mapping of their part of the
    image: (bytes written, where the last ends in the core)."""
    first = offsets[i]
    last = offsets[j - 1] + npages[j - 1]
    try:
        m = _Mapping(src.fd, src.base + first * P, (last - first) * P)
    except OSError:
        raise _Unmappable() from None
    try:
        count = j - i
        ns = npages[i:j]
        if last - first == count:
            # one page each, one after the other in the image (what a
            # sparsely touched heap is): the addresses are a ramp
            bufs = _plus(_ramp(count, P), count, m.address)
            lengths = array("Q", [P]) * count
        else:
            shift = m.address - first * P
            bufs = array("Q", map(shift.__add__, map(P.__mul__, offsets[i:j])))
            lengths = array("Q", map(P.__mul__, ns))
        # every offset in the core is base + a start, 0 or more: no slot
        # carries or borrows
        dsts = _plus(swar.from_array(starts[i:j]), count, base)
        depth = aio.DEPTH
        for a in range(0, count, depth):
            b = min(a + depth, count)
            try:
                res = writes.write(fd, bufs[a:b], lengths[a:b], dsts[a:b])
            except OSError as e:
                from .writer import _write_error
                raise _write_error(e, dst_name, source.path) from None
            want = lengths[a:b].tolist()
            if res != want:
                _finish(fd, res, want, bufs[a:b], dsts[a:b], source, dst_name)
        return sum(lengths), dsts[-1] + lengths[-1]
    finally:
        m.close()


def _plus(slots, k, by):
    """The k values in slots (swar) plus `by` (which may be negative), as
    an array('Q'); the callers' sums are all in 0 .. 2**64 - 1."""
    one = swar.repeat(k, 1)
    return swar.to_array(slots + one * by if by >= 0 else slots - one * -by, k)


@functools.lru_cache(maxsize=8)
def _ramp(k, step):
    """0, step, 2 step, ... (k values) in swar slots."""
    return swar.from_array(array("Q", range(0, k * step, step)))


class _Unmappable(Exception):
    """The image cannot be mapped (a file system without mmap, no address
    space left): its runs are copied one by one instead."""


def _finish(fd, res, want, bufs, dsts, source, dst_name):
    """The writes of a batch that failed or were short: an error as
    writer's pwrite gives it (EFAULT: the image could not be read), the
    rest of a short one written by pwrite from the same mapping."""
    from .writer import _write_all, _write_error
    for r, n, buf, dst in zip(res, want, bufs, dsts):
        if r < 0:
            raise _write_error(OSError(-r, os.strerror(-r)), dst_name,
                               source.path)
        if r < n:
            view = (ctypes.c_char * (n - r)).from_address(buf + r)
            _write_all(fd, view, dst + r, dst_name, source.path)
