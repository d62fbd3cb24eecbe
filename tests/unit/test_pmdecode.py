"""Pagemap entries decoded a window at a time (pmdecode: varints in the
64-bit slots of one big integer) and indexed from arrays (pagemap._plain)
give what protobuf gives decoding them one by one: the same values, the
same index, the same error at the same entry.  The pagemaps are written
byte by byte here (pycriu's encoder for the head), so that they hold what
CRIU's encoder never writes but protobuf accepts: varints of every width,
non-canonical ones, bools above 1, uint32 fields past 2**32."""
import functools
import io
import os
import random
import struct

import pytest
from pycriu import images as pimages

from criu_coredump import images, pmdecode
from criu_coredump.errors import BadImage
from criu_coredump.imagedir import as_imagedir
from criu_coredump.pagemap import PagemapEntry, PageIndex

from ..helpers import synth

P = synth.PAGE
VADDR, COMPAT, IN_PARENT, FLAGS, NR_PAGES = 1, 2, 3, 4, 5
NAME = "pagemap-1.img"


def varint(value, width=None):
    """value as a varint of `width` bytes: canonical, or padded with
    continuation bytes (0x80, then a last 0: non-canonical, which protobuf
    reads as the same value)."""
    out = []
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    while width is not None and len(out) < width:
        out[-1] |= 0x80
        out.append(0)
    assert width is None or len(out) == width
    return bytes(out)


@functools.lru_cache(maxsize=4096)
def field(num, *value_width):
    return bytes((num << 3,)) + varint(*value_width)


def entry(*fields):
    """An entry's payload: fields (number, value[, varint width]), in order."""
    return b"".join(field(*f) for f in fields)


def write(d, payloads, pages=0, tail=b""):
    """The pagemap NAME in d: pycriu's head, the payloads length-prefixed,
    then `tail`; a sparse pages image of `pages` pages."""
    buf = io.BytesIO()
    pimages.dump({"magic": "PAGEMAP", "entries": [{"pages_id": 1}]}, buf)
    raw = b"".join(struct.pack("<I", len(p)) + p for p in payloads)
    with open(os.path.join(d, NAME), "wb") as f:
        f.write(buf.getvalue() + raw + tail)
    with open(os.path.join(d, "pages-1.img"), "wb") as f:
        f.truncate(pages * P)
    return str(d)


def outcome(fn):
    """fn()'s result, or its exception's type and message."""
    try:
        return fn()
    except Exception as e:  # the same error either way is what is compared
        return type(e), str(e)


def decoded(d, windows=None):
    """Every entry's (vaddr, pages, flags), as Decoder.chunks gives them;
    `windows`: a list to which each chunk's length is added."""
    dec = pmdecode.Decoder(as_imagedir(d), NAME, PagemapEntry, None)
    out = []
    try:
        with images.strict_decoding() as strict:
            dec.strict = strict
            dec.head()
            for vaddrs, counts, flags in dec.chunks():
                if windows is not None:
                    windows.append(len(vaddrs))
                out += zip(vaddrs, counts, flags)
    finally:
        dec.close()
    return out


def indexed(d):
    idx = PageIndex(d, NAME)
    return ([bytes(a) for a in (idx.starts, idx.npages, idx.offsets, idx.where)],
            idx.present_pages, idx.lazy_pages)


def both(monkeypatch, fn):
    """fn's outcome in bulk and entry by entry (pmdecode._BULK_MIN out of
    reach, as tests/test_bulk_pages.py does)."""
    bulk = outcome(fn)
    with monkeypatch.context() as m:
        m.setattr(pmdecode, "_BULK_MIN", 1 << 60)
        each = outcome(fn)
    return bulk, each


def assert_same_decoding(tmp_path, monkeypatch, payloads, tail=b"", bulk=True):
    d = write(tmp_path, payloads, tail=tail)
    windows = []
    got, want = both(monkeypatch, lambda: decoded(d, windows))
    assert got == want
    if bulk:  # the case is the bulk path's, not the one-by-one's again
        assert max(windows) >= pmdecode._BULK_MIN
    return got


# -- values: one layout per pagemap ---------------------------------------

def widths_case(rnd, num, width, n=300):
    """n values whose canonical varints are `width` bytes long (none 0: a
    page count of 0 would be field 2's)."""
    lo = 1 if width == 1 else 1 << 7 * (width - 1)
    hi = min(1 << 7 * width, 1 << 64)
    return [rnd.randrange(lo, hi) for _ in range(n)]


@pytest.mark.parametrize("num", [VADDR, NR_PAGES, COMPAT, FLAGS])
def test_varint_widths(tmp_path, monkeypatch, num):
    """Every width a varint has, in each numeric field: uint64 values
    whole, uint32 ones (field 2, flags) cut to their low 32 bits as
    protobuf cuts them; 10 bytes (past 2**63) by protobuf's own parse."""
    for width in range(1, 11):
        rnd = random.Random(width * 10 + num)
        vals = widths_case(rnd, num, width)
        others = [(f, 7) for f in (VADDR, COMPAT, FLAGS, NR_PAGES) if f != num]
        payloads = [entry((num, v), *others) for v in vals]
        got = assert_same_decoding(tmp_path, monkeypatch, payloads)
        col = {VADDR: 0, NR_PAGES: 1, FLAGS: 2}.get(num)
        if num == COMPAT:  # beside nr_pages 7: the count is 7 either way
            assert {c for _, c, _ in got} == {7}
        else:
            cut = 0xFFFFFFFF if num == FLAGS else (1 << 64) - 1
            assert [e[col] for e in got] == [v & cut for v in vals], width


def test_non_canonical_varints(tmp_path, monkeypatch):
    """Values padded to 2 to 10 bytes (a last byte of 0): protobuf reads
    the value; so do the columns."""
    for width in range(2, 11):
        rnd = random.Random(width)
        payloads = []
        for i in range(200):
            va = ((1 << 40) + rnd.randrange(1 << 40)) * P  # 8 bytes
            payloads.append(entry((VADDR, va, max(width, len(varint(va)))),
                                  (COMPAT, 0, width), (FLAGS, 4, width),
                                  (NR_PAGES, 1 + i % 3, width)))
        got = assert_same_decoding(tmp_path, monkeypatch, payloads)
        assert [c for _, c, _ in got] == [1 + i % 3 for i in range(200)]
        assert {f for _, _, f in got} == {4}


@pytest.mark.parametrize("flags", [None, 4, 2])
def test_in_parent_bools(tmp_path, monkeypatch, flags):
    """in_parent (a bool) is true for any value but 0, whatever its
    width; it adds PE_PARENT to the flags (PE_PRESENT without a flags
    field); entries of false ones among them."""
    for value, width in [(1, 1), (2, 1), (127, 1), (128, 2), (0, 2), (0, 3),
                         (1 << 40, 7), ((1 << 63) + 2, 10), (1 << 63, 10)]:
        payloads = []
        for i in range(100):
            fields = [(VADDR, i * 2 * P), (COMPAT, 0)]
            if flags is not None:
                fields.append((FLAGS, flags))
            fields += [(IN_PARENT, value if i % 3 else 0, width), (NR_PAGES, 1)]
            payloads.append(entry(*fields))
        got = assert_same_decoding(tmp_path, monkeypatch, payloads)
        base = 4 if flags is None else flags
        assert [f for _, _, f in got] == [base | (1 if i % 3 and value else 0)
                                          for i in range(100)], (value, width)


@pytest.mark.parametrize("fields", [
    # CRIU 4.2: field 2 written as 0, the count in field 5
    lambda i: [(VADDR, i * 2 * P), (COMPAT, 0), (FLAGS, 4), (NR_PAGES, 1 + i % 5)],
    # CRIU 3.x: field 2 alone
    lambda i: [(VADDR, i * 2 * P), (COMPAT, 1 + i % 5), (FLAGS, 4)],
    # both fields, field 5 0 in all: field 2's count
    lambda i: [(VADDR, i * 2 * P), (COMPAT, 1 + i % 5), (NR_PAGES, 0)],
    # both, some entries one, some the other, some both (field 5 wins)
    lambda i: [(VADDR, i * 2 * P), (COMPAT, i % 3), (NR_PAGES, (i // 3) % 2)],
    # neither: no pages
    lambda i: [(VADDR, i * 2 * P), (FLAGS, 4)],
    # the fields in another order
    lambda i: [(NR_PAGES, 1), (FLAGS, 2), (VADDR, i * 2 * P)],
    # the old in_parent without flags, all true
    lambda i: [(VADDR, i * 2 * P), (COMPAT, 3), (IN_PARENT, 1)],
], ids=["4.2", "3.x", "both-5-zero", "both-mixed", "no-count", "reordered",
        "in-parent"])
def test_page_count_fields(tmp_path, monkeypatch, fields):
    assert_same_decoding(tmp_path, monkeypatch,
                         [entry(*fields(i)) for i in range(300)])


def test_mixed_layouts(tmp_path, monkeypatch):
    """Runs of one layout (widths, fields, order) after another, of every
    length from 1 to a few windows: values and window cuts where the
    layouts change."""
    rnd = random.Random(7)
    payloads = []
    va = 0
    while len(payloads) < 8000:
        n = rnd.choice((1, 2, 15, 16, 17, 63, 64, 65, 300, 700))
        order = [VADDR, COMPAT, FLAGS, NR_PAGES, IN_PARENT]
        rnd.shuffle(order)
        keep = [f for f in order if f == VADDR or rnd.random() < 0.7]
        pad = {f: rnd.choice((None, None, None, 2, 3)) for f in keep}
        for _ in range(n):
            va += rnd.randrange(1, 1 << rnd.choice((4, 12, 30))) * P
            vals = {VADDR: va & ((1 << 64) - 1), COMPAT: rnd.randrange(4),
                    FLAGS: rnd.choice((4, 4, 1, 2)), NR_PAGES: rnd.randrange(1, 3),
                    IN_PARENT: rnd.randrange(2)}
            payloads.append(entry(*[
                (f, vals[f]) if pad[f] is None or len(varint(vals[f])) > pad[f]
                else (f, vals[f], pad[f]) for f in keep]))
    assert_same_decoding(tmp_path, monkeypatch, payloads)


# -- bad entries: the same error ------------------------------------------

def uniform(n=3000):
    return [entry((VADDR, 0x7F0000000000 + 2 * i * P), (COMPAT, 0), (FLAGS, 4),
                  (NR_PAGES, 1)) for i in range(n)]


@pytest.mark.parametrize("tail", [
    b"\x0e\x00\x00\x00\x08\x80",          # a truncated last entry
    b"\x0e\x00",                          # a truncated length
    b"\x02\x00\x00\x00\x08\x80",          # a varint cut by the entry's end
    b"\x0b\x00\x00\x00" + b"\x08" + b"\xff" * 10,  # an 11-byte varint
    b"\x02\x00\x00\x00\x0a\x05",          # a length-delimited field 1
    b"\x02\x00\x00\x00\x30\x01",          # an unknown field 6 (kept)
], ids=["truncated", "truncated-length", "cut-varint", "11-byte", "wire-type",
        "unknown-field"])
def test_bad_last_entry_same_outcome(tmp_path, monkeypatch, tail):
    d = write(tmp_path, uniform(), pages=3001, tail=tail)
    got, want = both(monkeypatch, lambda: decoded(d))
    assert got == want
    got, want = both(monkeypatch, lambda: indexed(d))
    assert got == want


def test_duplicate_field_decoded_alone(tmp_path, monkeypatch):
    """A field twice (protobuf keeps the last) is not a layout: those
    entries are decoded one by one, among bulk ones."""
    payloads = uniform(500)
    payloads[200:300] = [p + entry((FLAGS, 2)) for p in payloads[200:300]]
    got = assert_same_decoding(tmp_path, monkeypatch, payloads)
    assert {f for _, _, f in got[200:300]} == {2}


# -- the index: plain windows checked in slots ----------------------------

def plain(n, step=2, count=1, base=0x7F0000000000):
    return [[base + step * i * P, count, 4] for i in range(n)]


def build(entries, fmt):
    """Payloads of [vaddr, pages, flags] entries, in CRIU 4.2's encoding
    (field 2 as 0, field 5) or 3.x's (field 2)."""
    out = []
    for va, n, flags in entries:
        count = [(COMPAT, 0), (NR_PAGES, n)] if fmt == "4.2" else [(COMPAT, n)]
        out.append(entry((VADDR, va), count[0], (FLAGS, flags), *count[1:]))
    return out


def defect(entries, i, what):
    """entries with entry i (or all from i on) changed as `what` says;
    "top-": all at the top of the address space first (ten-byte varints,
    values past the 2**62 up to which _plain checks in slots)."""
    if what.startswith("top-"):
        for e in entries:
            e[0] += (1 << 64) - (1 << 36) - 0x7F0000000000
    va, n, _ = entries[i]
    edits = {
        "unaligned": lambda: entries[i].__setitem__(0, va + 8),
        "zero-pages": lambda: entries[i].__setitem__(1, 0),
        "run-max": lambda: entries[i].__setitem__(1, (1 << 32) - 1),
        "past-run-max": lambda: entries[i].__setitem__(1, 1 << 32),
        "huge-count": lambda: entries[i].__setitem__(1, 1 << 52),
        "adjacent": lambda: entries[i].__setitem__(0, entries[i - 1][0] + P),
        "overlap": lambda: entries[i].__setitem__(0, entries[i - 1][0]),
        "backwards": lambda: entries[i].__setitem__(0, entries[i - 1][0] - 4 * P),
        "lazy": lambda: entries[i].__setitem__(2, 2),
        "parent": lambda: entries[i].__setitem__(2, 1),
        "high-address": lambda: [e.__setitem__(0, e[0] + (1 << 62))
                                 for e in entries[i:]],
        "top-of-space": lambda: None,
        "top-overlap": lambda: entries[i].__setitem__(0, entries[i - 1][0]),
        "top-end-past": lambda: entries[i].__setitem__(1, 1 << 30),
        "end-past-2**64": lambda: [entries[i].__setitem__(0, (1 << 64) - P),
                                   entries[i].__setitem__(1, 2)],
        "none": lambda: None,
    }
    edits[what]()
    return entries


@pytest.mark.parametrize("what", ["none", "unaligned", "zero-pages", "run-max",
                                  "past-run-max", "huge-count", "adjacent",
                                  "overlap", "backwards", "lazy", "parent",
                                  "high-address", "top-of-space", "top-overlap",
                                  "top-end-past",
                                  "end-past-2**64"])
def test_index_same_as_one_by_one(tmp_path, monkeypatch, what):
    """Thousands of plain one-page entries with one that is not (or all
    from one on): the index, or the error, is the entry-by-entry one (the
    pages image is not looked at: a count of 2**32 pages would need one
    of 16 TiB)."""
    monkeypatch.setattr(PageIndex, "_check_pages_image", lambda self: None)
    for fmt, where in [("4.2", 0), ("4.2", 1), ("4.2", 63), ("4.2", 64),
                       ("3.x", 700), ("4.2", 1199)]:
        entries = defect(plain(1200), where, what)
        d = write(tmp_path, build(entries, fmt))
        got, want = both(monkeypatch, lambda: indexed(d))
        assert got == want, (fmt, where)
        if what == "none":
            assert len(got[0][0]) == 1200 * 8


@pytest.mark.parametrize("count", [1, 3, 128, 300])
def test_index_counts_and_gaps(tmp_path, monkeypatch, count):
    """Runs of several pages, gaps of one page or many, or entries that
    continue each other (merged into one run, not plain): the same index."""
    for step in (None, 2, 1000):
        rnd = random.Random(count)
        entries, va = [], 0x10000000
        for i in range(1500):
            n = rnd.randrange(1, count + 1)
            entries.append([va, n, 4])
            va += (n + (rnd.randrange(2) if step is None else step)) * P
        d = write(tmp_path, build(entries, "4.2"),
                  pages=sum(n for _, n, _ in entries))
        got, want = both(monkeypatch, lambda: indexed(d))
        assert got == want, step
        assert not isinstance(got[0], type)


def test_bench_shape_is_bulk(tmp_path, monkeypatch):
    """The scattered bench's pagemap (one-page entries a page apart) is
    read in windows of up to _MAX_WINDOW, not cut where a read block
    ends, and the runs are its entries."""
    monkeypatch.setattr(pmdecode, "_MAX_WINDOW", 256)
    monkeypatch.setattr(pmdecode, "_BLOCK", 1000)
    n = 10 * 256 + 100
    d = write(tmp_path, build(plain(n), "4.2"), pages=n)
    windows = []
    assert decoded(d, windows) == [tuple(e) for e in plain(n)]
    assert windows == [64, 128] + [256] * 9 + [n - 64 - 128 - 9 * 256]
    got, want = both(monkeypatch, lambda: indexed(d))
    assert got == want
    starts = got[0][0]
    assert starts == b"".join(struct.pack("=Q", 0x7F0000000000 + 2 * i * P)
                              for i in range(n))


def test_width_change_inside_a_window(tmp_path, monkeypatch):
    """Addresses crossing 2**35 (five- to six-byte varints) and counts
    crossing 128 mid-window: the window is cut there, values the same."""
    entries, va = [], (1 << 35) - 1000 * P
    for i in range(2000):
        n = 1 + (i // 700) * 127
        entries.append([va, n, 4])
        va += (n + 1) * P
    d = write(tmp_path, build(entries, "4.2"),
              pages=sum(n for _, n, _ in entries))
    got, want = both(monkeypatch, lambda: indexed(d))
    assert got == want
    assert not isinstance(got[0], type)


def test_truncated_pages_image_same_error(tmp_path, monkeypatch):
    d = write(tmp_path, build(plain(500), "4.2"), pages=499)
    got, want = both(monkeypatch, lambda: indexed(d))
    assert got == want
    assert got[0] is BadImage and "pages image has" in got[1]


def test_mixed_sizes_then_uniform(tmp_path, monkeypatch):
    """Entries whose sizes change every one or two (page counts across
    128) are decoded one by one, windows looked for less often after each
    miss; a uniform run after them is found and read in growing windows."""
    rnd = random.Random(3)
    entries, va = [], 0x10000000
    for i in range(5000):
        n = rnd.choice((1, 300)) if i < 1000 else 1
        entries.append([va, n, 4])
        va += (n + 1) * P
    windows = []
    d = write(tmp_path, build(entries, "4.2"))
    got, want = both(monkeypatch, lambda: decoded(d, windows))
    assert got == want == [tuple(e) for e in entries]
    assert windows[:1000] == [1] * 1000
    assert max(windows) >= 1024


def test_large_entries_are_not_read_ahead(tmp_path, monkeypatch):
    """Entries of 200 KB (an unknown length-delimited field: protobuf
    keeps it): no window is read ahead for them, the buffer holds about
    one entry and one block at a time; the values are the same."""
    big = b"\x32" + varint(200000) + bytes(200000)  # field 6, 200,000 bytes
    payloads = [entry((VADDR, i * 2 * P), (NR_PAGES, 1)) + big
                for i in range(40)]
    d = write(tmp_path, payloads)
    seen = []
    real = pmdecode.Decoder._size

    def spy(self):
        seen.append(len(self._buf))
        return real(self)
    monkeypatch.setattr(pmdecode.Decoder, "_size", spy)
    got = decoded(d)
    assert got == [(i * 2 * P, 1, 4) for i in range(40)]
    assert max(seen) <= pmdecode._BLOCK + 2 * len(payloads[0])
