"""The page index: lookups at the edges of pagemap runs, in both pagemap
encodings (CRIU 3.x field 2, CRIU 4.2 field 5), checked on the core with gdb,
and the index's own answers against a page-by-page model."""
import os

import pytest
from hypothesis import given, settings, strategies as st

from criu_coredump.pagemap import HERE, PageIndex

from .helpers import synth
from .helpers.tools import convert, gdb_memory

pytestmark = pytest.mark.slow

P = synth.PAGE
BASE = 0x10000000

# (first page, pages) of present entries inside one 64-page mapping: two
# adjacent entries (merged into one run), single pages, a run touching the
# end of the mapping
ENTRIES = [(0, 3), (3, 2), (8, 1), (10, 4), (20, 1), (62, 2)]


def build(path, fmt):
    ck = synth.Checkpoint(path, fmt=fmt)
    p = ck.process(100)
    p.vma(BASE, BASE + 64 * P)
    for first, n in ENTRIES:
        p.pages(BASE + first * P, nr_pages=n)
    return ck.write()


@pytest.mark.parametrize("fmt", ["3.x", "4.2"])
def test_gdb_reads_every_run_edge(tmp_path, fmt):
    images = build(tmp_path / "img", fmt)
    _, cores = convert(images, tmp_path / "out", "--jobs", "1")
    present = {first + i for first, n in ENTRIES for i in range(n)}
    # the first and last 16 bytes of every page around every edge
    pages = sorted({q for first, n in ENTRIES
                    for q in (first - 1, first, first + n - 1, first + n)
                    if 0 <= q < 64})
    ranges = []
    for q in pages:
        a = BASE + q * P
        ranges += [(a, 16), (a + P - 16, 16)]
    got = gdb_memory(cores[100], ranges, tmp_path / "gdb")
    for (addr, size), data in zip(ranges, got):
        page = (addr - BASE) // P
        if page in present:
            full = synth.page_pattern(BASE + page * P, 1)
            off = addr - BASE - page * P
            assert data == full[off:off + size], hex(addr)
        else:
            assert data == bytes(size), hex(addr)  # a hole reads as zeros


def test_contiguous_entries_merge_into_one_run(tmp_path):
    images = build(tmp_path / "img", "4.2")
    idx = PageIndex(images, "pagemap-100.img")
    # (0,3)+(3,2) merge; the other four stay apart
    assert len(idx) == len(ENTRIES) - 1
    runs = list(idx.runs(BASE + 2 * P, BASE + 4 * P))
    assert [(r.addr, r.length, r.kind, r.index.pages_path, r.offset)
            for r in runs] == [
        (BASE + 2 * P, 2 * P, HERE, os.path.join(images, "pages-1.img"), 2 * P)]


def _model(entries):
    """page -> page offset in the pages image, from the entry list."""
    m, off = {}, 0
    for first, n in entries:
        for i in range(n):
            m[first + i] = off + i
        off += n
    return m


@st.composite
def pagemaps(draw):
    entries, page = [], 0
    for _ in range(draw(st.integers(1, 12))):
        page += draw(st.integers(0, 3))
        n = draw(st.integers(1, 5))
        entries.append((page, n))
        page += n
    a = draw(st.integers(0, page + 2))
    b = draw(st.integers(a, page + 3))
    return entries, draw(st.sampled_from(["3.x", "4.2"])), a, b


_built = {}


@settings(max_examples=150, deadline=None)
@given(pagemaps())
def test_runs_match_page_by_page_model(tmp_path_factory, case):
    entries, fmt, a, b = case
    key = (tuple(entries), fmt)
    if key not in _built:
        d = str(tmp_path_factory.mktemp("pm"))
        ck = synth.Checkpoint(d, fmt=fmt)
        p = ck.process(7)
        for first, n in entries:
            p.pages(BASE + first * P, data=bytes(n * P))
        synth.write_pagemap(d, "pagemap-7.img", 1, p.entries, ck.fmt)
        _built[key] = PageIndex(d, "pagemap-7.img")
    idx = _built[key]
    model = _model(entries)
    got = {}
    pos = BASE + a * P
    for (addr, length, kind, _, off) in idx.runs(BASE + a * P, BASE + b * P):
        assert kind == HERE and addr >= pos and length > 0
        pos = addr + length
        for i in range(length // P):
            got[(addr - BASE) // P + i] = off + i * P
    assert pos <= BASE + b * P
    assert got == {q: o * P for q, o in model.items() if a <= q < b}
    assert idx.covers_any(BASE + a * P, BASE + b * P) == any(
        a <= q < b for q in model)


@pytest.mark.parametrize("defect, message", [
    ("overlap", "pagemap-100.img: entry at 0x10001000 overlaps or is out of "
                "order with the one before it"),
    ("short", "pages-1.img: pages image has 8192 bytes, its pagemap "
              "pagemap-100.img says 3 pages (12288 bytes)"),
    ("outside", "pagemap-100.img: pages at 0x20000000 lie outside every VMA "
                "of the process"),
])
def test_inconsistent_pagemap_is_one_line_error(tmp_path, defect, message):
    ck = synth.Checkpoint(tmp_path / "img")
    p = ck.process(100)
    p.vma(BASE, BASE + 8 * P)
    if defect == "overlap":
        p.pages(BASE, nr_pages=2).pages(BASE + P, nr_pages=1)
    elif defect == "outside":
        p.pages(BASE, nr_pages=1).pages(0x20000000, nr_pages=1)
    else:
        p.pages(BASE, nr_pages=3)
    images = ck.write()
    if defect == "short":
        with open(os.path.join(images, "pages-1.img"), "r+b") as f:
            f.truncate(2 * P)
    r, cores = convert(images, tmp_path / "out", check=2)
    assert r.stderr.strip().endswith(message), r.stderr
    assert r.stderr.startswith("coredump: error: ")
    assert len(r.stderr.strip().splitlines()) == 1
    assert os.listdir(str(tmp_path / "out")) == []

