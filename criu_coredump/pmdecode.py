"""Pagemap entries decoded in bulk.

A pagemap image is a header then one length-prefixed protobuf message per
run of pages.  A process whose memory is a sparsely touched heap has
hundreds of thousands of them, and decoding them one by one (a parse, six
attribute reads, a generator step) costs microseconds each: most of a
conversion's CPU time.  But CRIU writes them all alike: the same fields,
in the same order, and mostly the same varint widths, so consecutive
entries have the same byte layout.  A window of such entries is checked
column by column (every entry's byte at one position, a strided slice: a
C loop), its length prefixes are deleted (four strided deletions), and
what is left, the entries' fields one after the other, is parsed once as
a message of repeated fields: one list per field, in entry order.  An
entry that does not share the layout of the one before it is decoded on
its own, as before, so any valid pagemap reads the same either way.
"""
from __future__ import annotations

import struct

from . import images, protodecl
from .errors import BadImage
from .imagedir import ImageReader

PE_PARENT = 1 << 0
PE_PRESENT = 1 << 2

# pagemap_entry's fields, all varints: vaddr 1, compat_nr_pages 2 (CRIU
# 3.x), in_parent 3, flags 4, nr_pages 5 (CRIU 4.2+)
_FIELDS = (("vaddr", 1, "uint64"), ("compat_nr_pages", 2, "uint32"),
           ("in_parent", 3, "bool"), ("flags", 4, "uint32"),
           ("nr_pages", 5, "uint64"))
_NAMES = {num: name for name, num, _ in _FIELDS}
_Columns = protodecl.declare(
    "criu_coredump_pagemap_columns.proto",
    [("pagemap_columns", [(n, num, "repeated " + t) for n, num, t in _FIELDS])],
    "pagemap_columns")

_HIGH = bytes(1 if i & 0x80 else 0 for i in range(256))
_BLOCK = 1 << 20
_MIN_WINDOW = 64
_BULK_MIN = 16  # fewer entries alike are decoded one by one
_MAX_WINDOW = 1 << 14


def _layout(buf, pos, size):
    """The byte layout of the entry payload buf[pos:pos + size]: a tuple of
    (field number, offset, varint width), or None when it is not one
    entry of distinct known varint fields (it is then decoded alone)."""
    out = []
    seen = set()
    i, end = pos, pos + size
    while i < end:
        tag = buf[i]
        num = tag >> 3
        if tag & 7 or num not in _NAMES or num in seen:
            return None
        seen.add(num)
        j = i + 1
        while j < end and buf[j] & 0x80:
            j += 1
        if j >= end or j - i > 10:
            return None
        out.append((num, i + 1 - pos, j - i))
        i = j + 1
    if 1 not in seen:
        return None
    return tuple(out)


def _same(buf, pos, stride, k, size, layout):
    """How many of the k entries from pos (stride bytes apart) have the
    payload size and the layout of the first one."""
    end = pos + stride * k
    for off, want in enumerate(struct.pack("<I", size)):
        col = buf[pos + off:end:stride]
        k = min(k, len(col) - len(col.lstrip(bytes((want,)))))
    p = pos + 4
    for num, off, width in layout:
        col = buf[p + off - 1:end:stride]
        k = min(k, len(col) - len(col.lstrip(bytes((num << 3,)))))
        for b in range(width):
            col = buf[p + off + b:end:stride].translate(_HIGH)
            more = b"\x01" if b < width - 1 else b"\x00"
            k = min(k, len(col) - len(col.lstrip(more)))
        if k == 0:
            break
    return k


def _columns(buf, pos, stride, k, layout):
    """(vaddrs, page counts, flags) of k entries of one layout, flags with
    PE_PARENT added for in_parent, as the entry-by-entry decoding gives
    them."""
    data = bytearray(buf[pos:pos + stride * k])
    for step in range(stride, stride - 4, -1):
        del data[::step]
    cols = _Columns()
    cols.ParseFromString(bytes(data))
    nums = {num for num, _, _ in layout}
    vaddrs = cols.vaddr
    if 5 in nums and 2 in nums:
        # CRIU 4.2+ writes field 2 as 0 beside field 5
        if not any(cols.compat_nr_pages):
            counts = cols.nr_pages
        elif not any(cols.nr_pages):
            counts = cols.compat_nr_pages
        else:
            counts = [a or b for a, b in zip(cols.nr_pages, cols.compat_nr_pages)]
    elif 5 in nums:
        counts = cols.nr_pages
    elif 2 in nums:
        counts = cols.compat_nr_pages
    else:
        counts = [0] * k
    if 4 in nums:
        flags = cols.flags
        if 3 in nums:
            flags = [f | PE_PARENT if p else f
                     for f, p in zip(flags, cols.in_parent)]
    elif 3 in nums:
        flags = [PE_PARENT if p else PE_PRESENT for p in cols.in_parent]
    else:
        flags = [PE_PRESENT] * k
    for c in (vaddrs, counts, flags):
        if len(c) != k:  # cannot be, the layout was checked: say so
            raise AssertionError("pagemap columns of %d, not %d" % (len(c), k))
    return vaddrs, counts, flags


class Decoder:
    """The entries of one pagemap image, after its magic: `head()` (the
    pagemap_head payload, None when there is none), then chunks() of
    (vaddrs, page counts, flags), in file order.  Errors come in the order
    the entry-by-entry reading met them."""

    def __init__(self, d, name, entry_class, strict):
        self.path = d.join(name)
        self.entry = entry_class()
        self.strict = strict
        self._f = ImageReader(images.open_image(d, name))
        self._buf = b""
        self._pos = 0

    def close(self):
        self._f.__exit__(None, None, None)

    def _size(self):
        """The size of the entry at the read position, with the whole entry
        in the buffer (reading on as needed); None at the image's end."""
        buf, pos = self._buf, self._pos
        while True:
            if len(buf) - pos >= 4:
                size, = struct.unpack_from("<I", buf, pos)
                if size > images.MAX_ENTRY:
                    raise BadImage(self.path, "entry of %d bytes is absurd" % size)
                if pos + 4 + size <= len(buf):
                    return size
                need = pos + 4 + size - len(buf)
            else:
                size, need = None, 4
            try:
                more = self._f.read(max(_BLOCK, need))
            except OSError as e:
                raise BadImage(self.path, "cannot read: %s"
                               % (e.strerror or e)) from None
            if not more:
                if pos == len(buf):
                    return None
                if size is None:
                    raise BadImage(self.path, "truncated entry header")
                raise BadImage(self.path, "truncated entry (%d of %d bytes)"
                               % (len(buf) - pos - 4, size))
            buf = self._buf = buf[pos:] + more
            pos = self._pos = 0

    def head(self):
        # the magic is taken from the first block read
        buf = self._f.read(_BLOCK)
        self._pos = images._magic_end(buf, self.path, "PAGEMAP")
        self._buf = buf
        size = self._size()
        if size is None:
            return None
        pos = self._pos
        self._pos = pos + 4 + size
        return self._buf[pos + 4:pos + 4 + size]

    def _one(self, buf, pos, size):
        """One entry decoded on its own: (vaddr, pages, flags)."""
        e = self.entry
        try:
            e.ParseFromString(buf[pos:pos + size])
        except Exception as exc:
            raise BadImage(self.path, "cannot decode pagemap entry: %s"
                           % exc) from None
        self.strict.check(self.path, "pagemap entry")
        flags = e.flags if e.HasField("flags") else PE_PRESENT
        if e.in_parent:
            flags |= PE_PARENT
        return e.vaddr, e.nr_pages or e.compat_nr_pages, flags

    def chunks(self):
        """The entries after the head, in chunks of parallel sequences
        (vaddrs, page counts, flags)."""
        window = _MIN_WINDOW
        while True:
            size = self._size()
            if size is None:
                return
            buf, pos = self._buf, self._pos
            stride = 4 + size
            # entries of this size in the buffer: at most that many alike;
            # fewer than _BULK_MIN (a small process's few runs) are not
            # worth looking at their layout
            avail = min(window, (len(buf) - pos) // stride)
            layout = _layout(buf, pos + 4, size) if avail >= _BULK_MIN else None
            k = 0
            if layout is not None:
                k = _same(buf, pos, stride, avail, size, layout)
            if k >= _BULK_MIN:
                try:
                    cols = _columns(buf, pos, stride, k, layout)
                except Exception:
                    cols = None  # decoded one by one: the error in its place
                if cols is not None:
                    self._pos = pos + k * stride
                    window = (min(window * 2, _MAX_WINDOW) if k == window
                              else _MIN_WINDOW)
                    yield cols
                    continue
            window = _MIN_WINDOW
            self._pos = pos + stride
            va, n, flags = self._one(buf, pos + 4, size)
            yield (va,), (n,), (flags,)
