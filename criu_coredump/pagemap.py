"""Pagemap decoding and the page index built once per pagemap.

A pagemap image says, run by run, where each dumped page of a process (or of
a shared-memory object) is: in this directory's pages image (PE_PRESENT), in
the parent checkpoint (PE_PARENT / in_parent, pre-dump chains), or nowhere
(lazy pages not transferred).  Pages of PE_PRESENT runs are stored one after
the other in `pages-<pages_id>.img`, in pagemap order.

The index keeps the runs in compact arrays (21 bytes a run, not Python
objects) sorted by address, so a lookup is a bisect and memory stays small
for pagemaps of millions of entries.  The entries are decoded a window at
a time (pmdecode), and a chunk of plain ones (present, in order, none
continuing another: a sparsely touched heap) is checked on all its values
at once (swar) and becomes runs by array copies.
"""
from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections import namedtuple
from collections.abc import Iterator
from itertools import accumulate

from google.protobuf import descriptor_pb2

from .errors import BadImage
from . import images, pmdecode, swar
from .imagedir import ImageDir, as_imagedir

PE_PARENT = 1 << 0
PE_LAZY = 1 << 1
PE_PRESENT = 1 << 2

# Where a run's pages are.
HERE, PARENT, LAZY = 0, 1, 2

_MAX_PAGES = 1 << 52  # 2^64 bytes of address space
MAX_PARENTS = 64      # pre-dump chains are a handful of directories deep


def _entry_class():
    """pagemap_entry with both page-count fields (CRIU 3.x field 2 and 4.2+
    field 5), all optional so that either encoding parses."""
    fdp = descriptor_pb2.FileDescriptorProto(
        name="criu_coredump_pagemap.proto", package="criu_coredump")
    msg = fdp.message_type.add(name="pagemap_entry")
    F = descriptor_pb2.FieldDescriptorProto
    for name, num, typ in (("vaddr", 1, F.TYPE_UINT64),
                           ("compat_nr_pages", 2, F.TYPE_UINT32),
                           ("in_parent", 3, F.TYPE_BOOL),
                           ("flags", 4, F.TYPE_UINT32),
                           ("nr_pages", 5, F.TYPE_UINT64)):
        msg.field.add(name=name, number=num, type=typ, label=F.LABEL_OPTIONAL)
    return images.message_class(fdp, "pagemap_entry")


PagemapEntry = _entry_class()


_RUN_MAX = (1 << 32) - 1  # pages in one run (npages is a 32-bit array)


class Run(namedtuple("Run", "addr length kind index offset")):
    """A part of the address space a pagemap covers: kind HERE (its bytes
    are at `offset` in `index`'s pages image; `index` is a parent's for
    pages of a pre-dump) or LAZY (no data; index None)."""
    # addr: int, length: int, kind: int, index: "PageIndex" | None, offset: int
    __slots__ = ()


def _plain(vaddrs, counts, flags):
    """(page counts as an array('I'), end of the last entry) when every
    entry is what most are: present pages, aligned, 1 to _RUN_MAX of them,
    in order with a gap after each (so no two make one run); else None,
    and the entries are indexed one by one (which also finds the error,
    if any).  The entries are pmdecode's arrays('Q'); they are checked all
    at once, in 64-bit slots (swar): addresses below 2**62 and counts
    below 2**32 first, so that an end (at most 2**62 + 2**32 pages) and
    2**63 + (an address - an end - 1) stay in their slots."""
    k = len(vaddrs)
    if flags != array("Q", (PE_PRESENT,)) * k:
        return None
    P = images.PAGE_SIZE
    rep = swar.repeat
    V, N = swar.from_array(vaddrs), swar.from_array(counts)
    if V & rep(k, (3 << 62) | (P - 1)) or N & rep(k, (1 << 64) - 1 - _RUN_MAX):
        return None
    top = rep(k, 1 << 63)  # bit 63 of 2**63 + n - 1 says n >= 1
    if ((N | top) - rep(k, 1)) & top != top:
        return None
    # each end before the next address: 2**63 + next - end - 1 keeps bit 63
    top = rep(k - 1, 1 << 63)
    E = V + N * P
    if (((V >> 64) | top) - (E & rep(k - 1, (1 << 64) - 1))
            - rep(k - 1, 1)) & top != top:
        return None
    raw = counts.tobytes()
    ns = bytearray(4 * k)
    for b in range(4):
        ns[b::4] = raw[b + _LOW32::8]
    return array("I", bytes(ns)), vaddrs[-1] + counts[-1] * P


# where a 64-bit value's low 32 bits are in its bytes
_LOW32 = 4 if sys.byteorder == "big" else 0
assert images.PAGE_SIZE <= 1 << 30  # an end stays below 2**63 (_plain)


class PageIndex:
    """Runs of one pagemap image, sorted, with their offsets in the pages image.

    Adjacent entries are merged into one run when they continue each other
    (in the address space and, for present pages, in the pages image), so a
    pagemap of a million entries written page by page costs a million runs at
    most, 21 bytes each.
    """

    def __init__(self, images_dir, pagemap_name, children=()):
        """images_dir: the ImageDir (or its path) holding `pagemap_name`."""
        self.images: ImageDir = as_imagedir(images_dir)
        # real paths of the checkpoints whose parent this is: a 'parent'
        # link that loops back must be an error, not endless recursion
        self._children = children
        self.path = self.images.join(pagemap_name)
        self.name = pagemap_name
        self.starts = array("Q")
        self.npages = array("I")
        self.offsets = array("Q")  # page offset in the pages image
        self.where = array("B")
        self._parent = None
        self.pages_name = None
        self.pages_path = None
        self.lazy_pages = 0
        self.present_pages = 0
        self._load()

    def _load(self):
        dec = pmdecode.Decoder(self.images, self.name, PagemapEntry,
                               None)
        try:
            with images.strict_decoding() as strict:
                dec.strict = strict
                head = dec.head()
                if head is None:
                    raise BadImage(self.path, "no pagemap header")
                head = images.parse(self.path, images.message("pagemap_head"),
                                    head)
                self.pages_name = ImageDir.pages(head.pages_id)
                self.pages_path = self.images.join(self.pages_name)
                self._add_runs(dec.chunks())
        finally:
            dec.close()
        self._check_pages_image()

    def _add_runs(self, chunks):
        """Index the entries, chunks of (vaddrs, page counts, flags) in
        file order (pmdecode.Decoder.chunks)."""
        P = images.PAGE_SIZE
        offset = 0       # pages of this pagemap in the pages image so far
        last_end = 0
        lazy = 0
        # the last run, kept in locals and flushed when the next one starts
        r_start = r_n = r_off = r_end = 0
        r_w = -1
        add_s, add_n = self.starts.append, self.npages.append
        add_o, add_w = self.offsets.append, self.where.append
        # locals, not globals: this loop runs once per entry
        parent_bit, present_bit = PE_PARENT, PE_PRESENT
        max_pages, top = _MAX_PAGES, 1 << 64
        here, lazy_w, parent_w = HERE, LAZY, PARENT
        for vaddrs, counts, flagss in chunks:
            plain = _plain(vaddrs, counts, flagss) if len(vaddrs) > 2 else None
            if plain is not None:
                # the first entry as any other (it may continue the run
                # before it), the rest at once below
                vas = vaddrs
                vaddrs, counts, flagss = vas[:1], counts[:1], (PE_PRESENT,)
            for va, n, flags in zip(vaddrs, counts, flagss):
                if va % P:
                    raise BadImage(self.path, "entry at 0x%x is not page "
                                   "aligned" % va)
                if n == 0:
                    continue
                end = va + n * P
                if n > max_pages or end > top:
                    raise BadImage(self.path, "entry at 0x%x claims %d pages, "
                                   "beyond the address space" % (va, n))
                if va < last_end:
                    raise BadImage(self.path, "entry at 0x%x overlaps or is "
                                   "out of order with the one before it" % va)
                last_end = end
                if flags & parent_bit:
                    w = parent_w
                elif flags & present_bit:
                    if r_w == here and r_end == va and r_off + r_n == offset:
                        r_n += n
                        r_end = end
                        offset += n
                        continue
                    if r_n > _RUN_MAX:
                        self._append(r_start, r_n, r_off, r_w)
                    elif r_w >= 0:
                        add_s(r_start), add_n(r_n), add_o(r_off), add_w(r_w)
                    r_start, r_n, r_w, r_off, r_end = va, n, here, offset, end
                    offset += n
                    continue
                else:
                    w = lazy_w
                    lazy += n
                if w == r_w and r_end == va:
                    r_n += n
                    r_end = end
                    continue
                if r_n > _RUN_MAX:
                    self._append(r_start, r_n, r_off, r_w)
                elif r_w >= 0:
                    add_s(r_start), add_n(r_n), add_o(r_off), add_w(r_w)
                r_start, r_n, r_w, r_off, r_end = va, n, w, 0, end
            if plain is not None:
                # runs of their own: none continues another (_plain); the
                # last is kept, the next chunk's first may continue it
                ns, end = plain
                if r_n > _RUN_MAX:
                    self._append(r_start, r_n, r_off, r_w)
                else:
                    add_s(r_start), add_n(r_n), add_o(r_off), add_w(r_w)
                c = ns[0]
                if ns == array("I", (c,)) * len(ns):  # one-page entries, often
                    offs = array("Q", range(offset, offset + c * len(ns), c))
                else:
                    offs = array("Q", accumulate(ns[1:], initial=offset))
                self.starts.extend(vas[1:-1])
                self.npages.extend(ns[1:-1])
                self.offsets.extend(offs[:-2])
                self.where.frombytes(bytes(len(vas) - 2))  # HERE
                r_start, r_n, r_w = vas[-1], ns[-1], here
                r_off, r_end = offs[-2], end
                offset = offs[-1]
                last_end = end
        if r_w >= 0:
            self._append(r_start, r_n, r_off, r_w)
        self.present_pages = offset
        self.lazy_pages = lazy

    def _append(self, start, n, off, w):
        """One run, cut in pieces of at most _RUN_MAX pages."""
        while n:
            k = min(n, _RUN_MAX)
            self.starts.append(start)
            self.npages.append(k)
            self.offsets.append(off)
            self.where.append(w)
            start += k * images.PAGE_SIZE
            n -= k
            if w == HERE:
                off += k

    def _check_pages_image(self):
        P = images.PAGE_SIZE
        n = self.present_pages
        if not n:
            return
        try:
            size = self.images.size(self.pages_name)
        except OSError:
            raise BadImage(self.pages_path, "missing (the pagemap %s names "
                           "%d pages in it)" % (self.name, n)) from None
        if size < n * P:
            raise BadImage(self.pages_path, "pages image has %d bytes, its "
                           "pagemap %s says %d pages (%d bytes)"
                           % (size, self.name, n, n * P))

    @property
    def parent(self):
        """The same pagemap in the parent checkpoint (pre-dump chain), with
        its own index; CRIU links the previous images as `parent`."""
        if self._parent is None:
            pdir = self.images.join(ImageDir.PARENT)
            parent = self.images.parent()
            if parent is None:
                raise BadImage(self.path, "entries are in the parent "
                               "checkpoint but there is no 'parent' directory")
            chain = self._children + (self.images.real(),)
            if parent.real() in chain:
                raise BadImage(pdir, "the chain of parent checkpoints loops")
            if len(chain) > MAX_PARENTS:
                raise BadImage(pdir, "more than %d parent checkpoints"
                               % MAX_PARENTS)
            self._parent = PageIndex(parent, self.name, chain)
        return self._parent

    def __len__(self):
        return len(self.starts)

    def runs(self, start, end) -> Iterator[Run]:
        """The Runs of the parts of [start, end) that the pagemap (or its
        parents) covers, in address order."""
        if end <= start:
            return
        P = images.PAGE_SIZE
        starts, npages, where = self.starts, self.npages, self.where
        i = bisect_right(starts, start) - 1
        if i < 0:
            i = 0
        n = len(starts)
        while i < n:
            rs = starts[i]
            if rs >= end:
                break
            re = rs + npages[i] * P
            if re > start:
                a = rs if rs > start else start
                b = re if re < end else end
                w = where[i]
                if w == HERE:
                    yield Run(a, b - a, HERE, self,
                              self.offsets[i] * P + (a - rs))
                elif w == PARENT:
                    yield from self._parent_runs(a, b)
                else:
                    yield Run(a, b - a, LAZY, None, 0)
            i += 1

    def _parent_runs(self, a, b):
        """Parent data for [a, b); every page of it must be in the parent
        (as data, or as lazy pages of the parent, which stay holes)."""
        parent = self.parent
        pos = a
        for r in parent.runs(a, b):
            if r.addr > pos:
                break
            yield r
            pos = r.addr + r.length
        if pos < b:
            raise BadImage(parent.path, "has no pages at 0x%x, which %s says "
                           "are in the parent checkpoint" % (pos, self.path))

    def covers_any(self, start, end):
        """True when some run of this pagemap intersects [start, end)."""
        if end <= start:
            return False
        i = bisect_right(self.starts, start) - 1
        if i >= 0 and self.starts[i] + self.npages[i] * images.PAGE_SIZE > start:
            return True
        return i + 1 < len(self.starts) and self.starts[i + 1] < end

    def check_inside(self, vmas):
        """BadImage unless every run lies inside the VMAs (sorted by
        address), naming the lowest address outside them: the gaps between
        the VMAs are looked up in the runs (two bisects each), so the cost
        goes with the VMAs, not with the runs."""
        prev = 0
        for v in vmas:
            if v.start > prev:
                self._outside(prev, v.start)
            prev = max(prev, v.end)
        self._outside(prev, 1 << 64)

    def _outside(self, a, b):
        """BadImage if some run meets [a, b), an address range no VMA has."""
        starts = self.starts
        i = bisect_right(starts, a) - 1
        if i >= 0 and starts[i] + self.npages[i] * images.PAGE_SIZE > a:
            pos = a
        elif i + 1 < len(starts) and starts[i + 1] < b:
            pos = starts[i + 1]
        else:
            return
        raise BadImage(self.path, "pages at 0x%x lie outside every VMA of "
                       "the process" % pos)
