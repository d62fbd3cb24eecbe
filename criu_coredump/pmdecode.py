"""Pagemap entries decoded in bulk.

A pagemap image is a header then one length-prefixed protobuf message per
run of pages.  A process whose memory is a sparsely touched heap has
hundreds of thousands of them, and decoding them one by one (a parse, six
attribute reads, a generator step) costs microseconds each: most of a
conversion's CPU time.  But CRIU writes them all alike: the same fields,
in the same order, and mostly the same varint widths, so consecutive
entries have the same byte layout.  A window of such entries is checked
column by column (every entry's byte at one position, a strided slice: a
C loop).  Then each field, a varint at the same offset and of the same
width in every entry, is decoded for the whole window at once: its 7-bit
groups put in the 64-bit slots of one big integer and closed up there
(swar), a few C loops per byte of the varint instead of a step per entry.
The values are protobuf's: a uint32 field keeps its low 32 bits, a bool
is any value but 0, a non-canonical varint (a last byte of 0) is its
value.  A layout with a 10-byte varint (bits past 64, where protobuf's
rules are its own) is parsed by protobuf instead, as one message of
repeated fields.  An entry that does not share the layout of the one
before it is decoded on its own, so any valid pagemap reads the same
either way, and an invalid one fails at the same entry.
"""
from __future__ import annotations

import struct
from array import array

from . import images, protodecl, swar
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
_MAX_SKIP = 31  # entries decoded one by one after misses in a row
# read ahead for a whole window only when that is small (entries of a
# few tens of bytes are): a crafted image of large entries must not be
# read whole into memory
_FILL_MAX = 1 << 22


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


def _same_size(buf, pos, stride, k, size):
    """How many of the k entries from pos (stride bytes apart) have the
    payload size of the first one: their length prefixes, column by
    column.  Looked at first, and alone when entries of one size are
    fewer than _BULK_MIN (a size changes with a varint's width: entries
    of mixed page counts are not a window, and finding it out must cost
    them little)."""
    end = pos + stride * k
    for off, want in enumerate(struct.pack("<I", size)):
        k = _lead(buf[pos + off:end:stride], want, k)
        if k < _BULK_MIN:
            break
    return k


def _same(buf, pos, stride, k, layout):
    """How many of the k entries from pos (stride bytes apart), all of
    one size (_same_size), have the layout of the first one; any number
    below _BULK_MIN when they are fewer."""
    end = pos + stride * k
    p = pos + 4
    for num, off, width in layout:
        k = _lead(buf[p + off - 1:end:stride], num << 3, k)
        for b in range(width):
            col = buf[p + off + b:end:stride].translate(_HIGH)
            k = _lead(col, 1 if b < width - 1 else 0, k)
        if k < _BULK_MIN:
            break
    return k


def _lead(col, want, k):
    """How many of col's first k bytes, from the first, are `want`."""
    col = col[:k]
    if col.count(want) == k:  # all: a C loop, not lstrip's
        return k
    return k - len(col.lstrip(bytes((want,))))


def _columns(buf, pos, stride, k, layout):
    """(vaddrs, page counts, flags) of k entries of one layout, arrays of
    what the entry-by-entry decoding gives (Decoder._one).  Varints of
    up to 9 bytes (values below 2**63) are decoded column by column
    (_varints); a layout with a 10-byte one (a value past 2**63, where
    protobuf's own rules for the bits beyond 64 would have to be copied)
    is parsed by protobuf."""
    if any(width > 9 for _, _, width in layout):
        return _parsed(buf, pos, stride, k, layout)
    cols = {num: _varints(buf, pos + 4 + off, stride, k, width)
            for num, off, width in layout}
    for num in (2, 4):  # uint32: protobuf keeps the low 32 bits
        if num in cols and max(w for n, _, w in layout if n == num) > 4:
            cols[num] = _low32(cols[num])
    return _merge(k, cols.get(1), cols.get(2), cols.get(3), cols.get(4),
                  cols.get(5))


def _varints(buf, start, stride, k, width):
    """The k varints of `width` bytes (at most 9) at buf[start + i *
    stride], their continuation bits checked (_same), an array('Q').
    Byte b of every varint, a strided slice with bit 7 cleared, goes to
    byte b of its entry's 64-bit slot; the slots read as one integer
    (swar) then have their 7-bit groups closed up by three steps on all
    slots at once: in 16-, 32-, then 64-bit lanes, the high half moves
    down next to the low one (7+7, 14+14, 28+28 bits, never out of the
    lane).  A ninth group is bits 56-62: the slot's last byte."""
    out = bytearray(8 * k)
    span = stride * (k - 1) + 1
    for b in range(min(width, 8)):
        out[b::8] = buf[start + b:start + b + span:stride].translate(_LOW7)
    if width == 1:
        return swar.from_le(out)
    y = int.from_bytes(out, "little")
    for shift, lanes in ((1, 0xFF00FF00FF00FF00), (2, 0x3FFF00003FFF0000),
                         (4, 0x0FFFFFFF00000000)):
        if width <= shift:
            break
        high = y & swar.repeat(k, lanes)
        y = (y ^ high) | (high >> shift)
    if width < 9:
        return swar.to_array(y, k)
    out = bytearray(y.to_bytes(8 * k, "little"))
    out[7::8] = buf[start + 8:start + 8 + span:stride]
    return swar.from_le(out)


_LOW7 = bytes(i & 0x7F for i in range(256))


def _low32(a):
    """The values of an array('Q') cut to 32 bits."""
    return swar.to_array(swar.from_array(a) & swar.repeat(len(a), 0xFFFFFFFF),
                         len(a))


def _zero(a):
    """True when every value of the array('Q') is 0."""
    return a == array("Q", bytes(8 * len(a)))


def _merge(k, vaddrs, compat, in_parent, flags, nr_pages):
    """The columns (array('Q') each, None for a field the layout has not)
    combined as Decoder._one combines one entry's fields: the page count
    is field 5 or else field 2, flags default to PE_PRESENT and get
    PE_PARENT for in_parent."""
    if nr_pages is None or compat is None:
        counts = nr_pages if compat is None else compat
        if counts is None:
            counts = array("Q", bytes(8 * k))
    elif _zero(compat):  # CRIU 4.2+ writes field 2 as 0 beside field 5
        counts = nr_pages
    elif _zero(nr_pages):
        counts = compat
    else:
        counts = array("Q", [a or b for a, b in zip(nr_pages, compat)])
    if flags is None:
        flags = array("Q", (PE_PRESENT,)) * k
    if in_parent is not None and not _zero(in_parent):
        flags = array("Q", [f | PE_PARENT if p else f
                            for f, p in zip(flags, in_parent)])
    return vaddrs, counts, flags


def _parsed(buf, pos, stride, k, layout):
    """_columns by protobuf: the window's length prefixes deleted (four
    strided deletions), what is left parsed once as a message of repeated
    fields: one list per field, in entry order."""
    data = bytearray(buf[pos:pos + stride * k])
    for step in range(stride, stride - 4, -1):
        del data[::step]
    cols = _Columns()
    cols.ParseFromString(bytes(data))
    nums = {num for num, _, _ in layout}
    got = [array("Q", getattr(cols, name)) if num in nums else None
           for name, num, _ in _FIELDS]
    for c in got:
        if c is not None and len(c) != k:  # the layout was checked: say so
            raise AssertionError("pagemap columns of %d, not %d"
                                 % (len(c), k))
    return _merge(k, *got)


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
        self._ended = False  # _fill found the end (or a read error)

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

    def _fill(self, need):
        """Read on, if the image has more, until `need` bytes from the read
        position are in the buffer, so that a window is not cut where a
        block ends; True when something was read.  A read error is left
        for _size to meet where the entry-by-entry reading meets it."""
        buf, pos = self._buf, self._pos
        read = False
        while not self._ended and len(buf) - pos < need:
            try:
                more = self._f.read(max(_BLOCK, need - (len(buf) - pos)))
            except OSError:
                more = b""
            if not more:
                self._ended = True
                break
            buf = self._buf = buf[pos:] + more
            pos = self._pos = 0
            read = True
        return read

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
        # entries to decode one by one before looking for a window again,
        # and how many after the next miss: misses in a row (entries of
        # mixed sizes) are looked for less and less often
        skip = backoff = 0
        while True:
            size = self._size()
            if size is None:
                return
            buf, pos = self._buf, self._pos
            stride = 4 + size
            if skip:
                skip -= 1
                self._pos = pos + stride
                va, n, flags = self._one(buf, pos + 4, size)
                yield (va,), (n,), (flags,)
                continue
            # entries of this size in the buffer: at most that many alike;
            # fewer than _BULK_MIN (a small process's few runs) are not
            # worth looking at their layout
            avail = (len(buf) - pos) // stride
            if (avail < window and window * stride <= _FILL_MAX
                    and self._fill(window * stride)):
                buf, pos = self._buf, self._pos
                avail = (len(buf) - pos) // stride
            avail = min(window, avail)
            k = (_same_size(buf, pos, stride, avail, size)
                 if avail >= _BULK_MIN else 0)
            layout = _layout(buf, pos + 4, size) if k >= _BULK_MIN else None
            if layout is not None:
                k = _same(buf, pos, stride, k, layout)
            if k >= _BULK_MIN:
                try:
                    cols = _columns(buf, pos, stride, k, layout)
                except Exception:
                    cols = None  # decoded one by one: the error in its place
                if cols is not None:
                    backoff = 0
                    self._pos = pos + k * stride
                    window = (min(window * 2, _MAX_WINDOW) if k == window
                              else _MIN_WINDOW)
                    yield cols
                    continue
            window = _MIN_WINDOW
            if avail >= _BULK_MIN:
                skip = backoff
                backoff = min(2 * backoff + 1, _MAX_SKIP)
            self._pos = pos + stride
            va, n, flags = self._one(buf, pos + 4, size)
            yield (va,), (n,), (flags,)
