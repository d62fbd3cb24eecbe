"""The bulk page path (issue 16): pagemap entries decoded a window at a time
(pmdecode), a segment that is only runs of the process's pages image copied
from arrays (sources.Batch, writer._copy_batch).  Each must give exactly
what the entry-by-entry, extent-by-extent path gives: the same index, the
same core bytes, the same error for a bad entry."""
import os
import random
import struct

import pytest

from criu_coredump import pmdecode, writer
from criu_coredump.convert import generate
from criu_coredump.model import VMA_AREA_GUARD
from criu_coredump.pagemap import PageIndex
from criu_coredump.sources import PageSources

from .helpers import synth

P = synth.PAGE
PID = 4300


def scattered(p, rnd, start, end, lazy=True):
    """Entries of mixed lengths (1 to 20 pages, some of 300: past the
    gathering size) with holes of 0 to 20 pages, some lazy, from start
    to at most end; returns where they stop."""
    a = start
    while True:
        n = rnd.choice((1, 1, 1, 2, 3, 16, 17, 20, 300))
        if a + n * P > end:
            return a
        if lazy and rnd.random() < 0.1:
            p.lazy(a, n)
        else:
            p.pages(a, nr_pages=n)
        a += (n + rnd.choice((0, 1, 1, 1, 2, 15, 16, 17, 20))) * P


def build(path, fmt="4.2", seed=16):
    """A parent checkpoint and its child: one process whose mappings are
    scattered entries, among them: varint widths that change (addresses
    across 2**35, page counts across 128), an entry crossing from one VMA
    into the next, a mapping with pages in the parent, one with a guard
    region."""
    rnd = random.Random(seed)
    PAR, G = 0x30000000, 0x40000000
    A = 0x800000000 - 2000 * P  # five- then six-byte vaddr varints
    B = A + 4000 * P
    H = 0x7f0000000000
    parent = synth.Checkpoint(path / "parent", fmt=fmt)
    parent.process(PID).vma(PAR, PAR + 64 * P).pages(PAR, nr_pages=64)
    ck = synth.Checkpoint(path / "img", fmt=fmt, parent=parent)
    p = ck.process(PID)
    # pages in the parent among scattered ones: the general path
    p.vma(PAR, PAR + 64 * P)
    for i in range(0, 64, 2):
        p.in_parent(PAR + i * P, 1)
        p.pages(PAR + (i + 1) * P, nr_pages=1)
    # a guard region inside a scattered mapping: the general path
    p.vma(G, G + 600 * P)
    p.vma(G + 100 * P, G + 110 * P, status=VMA_AREA_GUARD)
    scattered(p, rnd, G, G + 600 * P)
    # B begins where A ends, and an entry crosses from A into B
    p.vma(A, B)
    p.vma(B, B + 8000 * P)
    scattered(p, rnd, A, B - 400 * P)
    p.pages(B - 2 * P, nr_pages=5)
    b = scattered(p, rnd, B + 4 * P, B + 2000 * P)
    p.pages(b, nr_pages=130)                # a two-byte page count
    for i in range(40):                     # 40 entries of 128 pages
        p.pages(b + (131 + i * 129) * P, nr_pages=128)
    # many one-page entries a page apart, the bench's case
    p.vma(H, H + 6000 * P)
    for i in range(3000):
        p.pages(H + 2 * i * P, nr_pages=1)
    ck.write()
    return ck


def one_by_one(monkeypatch):
    """The entry-by-entry, extent-by-extent path."""
    monkeypatch.setattr(pmdecode, "_BULK_MIN", 1 << 60)
    monkeypatch.setattr(PageSources, "batch", lambda self, srcs, a, b: None)


def index_arrays(d):
    idx = PageIndex(d, "pagemap-%d.img" % PID)
    return ([list(x) for x in (idx.starts, idx.npages, idx.offsets, idx.where)],
            idx.present_pages, idx.lazy_pages)


@pytest.mark.parametrize("fmt", ["4.2", "3.x"])
def test_index_is_the_one_entry_by_entry(tmp_path, monkeypatch, fmt):
    ck = build(tmp_path, fmt)
    bulk = index_arrays(ck.dir)
    one_by_one(monkeypatch)
    assert bulk == index_arrays(ck.dir)
    assert len(bulk[0][0]) > 3000


@pytest.mark.parametrize("fs", ["ext4", "tmpfs"])
def test_core_is_the_one_extent_by_extent(tmp_path, monkeypatch, fs):
    """Filled spans (pwritev of data and zeros) and chunks written one by
    one, as on tmpfs: the same bytes as the general path copying each
    extent on its own (no gathering) either way, and
    the batch is taken for the plain mappings (not for the ones with
    parent pages or a guard)."""
    ck = build(tmp_path)
    monkeypatch.setattr(writer, "_fs_type", lambda fd: fs)
    batches = []
    real = PageSources.batch

    def spy(self, srcs, a, b):
        got = real(self, srcs, a, b)
        batches.append((a, got is not None))
        return got
    monkeypatch.setattr(PageSources, "batch", spy)
    (tmp_path / "bulk").mkdir()
    [r] = generate(ck.dir, str(tmp_path / "bulk"))
    assert r.error is None
    assert dict(batches) == {0x800000000 - 2000 * P: True,
                             0x800000000 + 2000 * P: True,
                             0x30000000: False, 0x40000000: False,
                             0x7f0000000000: True}
    one_by_one(monkeypatch)
    monkeypatch.setattr(writer, "GATHER_CHUNK", 0)  # a kernel copy each
    (tmp_path / "each").mkdir()
    generate(ck.dir, str(tmp_path / "each"))
    name = "core.%d" % PID
    bulk = (tmp_path / "bulk" / name).read_bytes()
    assert bulk == (tmp_path / "each" / name).read_bytes()
    # and the pages are where the pagemap put them (not only equal)
    assert bulk.count(synth.page_pattern(0x7f0000000000 + 2 * 2999 * P, 1)) == 1


@pytest.mark.parametrize("fs", ["ext4", "tmpfs"])
def test_writer_small_gather_sizes_same_bytes(tmp_path, monkeypatch, fs):
    """Batches cut where the span, the gap or the chunk limit says: the
    same bytes."""
    ck = build(tmp_path, seed=7)
    monkeypatch.setattr(writer, "_fs_type", lambda fd: fs)
    (tmp_path / "a").mkdir()
    generate(ck.dir, str(tmp_path / "a"))
    monkeypatch.setattr(writer, "GATHER_SPAN", 5 * P)
    monkeypatch.setattr(writer, "GATHER_CHUNK", 3 * P)
    monkeypatch.setattr(writer, "GATHER_GAP", 1 * P)
    (tmp_path / "b").mkdir()
    generate(ck.dir, str(tmp_path / "b"))
    name = "core.%d" % PID
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def corrupt(d, index, how):
    """Rewrite entry `index` (0: the first after the head) of the pagemap."""
    path = os.path.join(d, "pagemap-%d.img" % PID)
    raw = bytearray(open(path, "rb").read())
    pos = 8  # the magics
    size, = struct.unpack_from("<I", raw, pos)
    pos += 4 + size
    for _ in range(index):
        size, = struct.unpack_from("<I", raw, pos)
        pos += 4 + size
    how(raw, pos)
    with open(path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("how", [
    # vaddr's low byte made odd: not page aligned
    lambda raw, pos: raw.__setitem__(pos + 5, raw[pos + 5] | 1),
    # the vaddr tag made a length-delimited field: cannot be decoded
    lambda raw, pos: raw.__setitem__(pos + 4, 0x0a),
    # the entry's length made absurd
    lambda raw, pos: raw.__setitem__(pos + 3, 0x7f),
    # the image cut inside an entry
    lambda raw, pos: raw.__delitem__(slice(pos + 6, None)),
], ids=["unaligned", "undecodable", "absurd", "truncated"])
def test_bad_entry_in_a_uniform_run_same_error(tmp_path, monkeypatch, how):
    """An entry in the middle of thousands alike: the error the entry-by-
    entry path gives, for that entry."""
    ck = synth.Checkpoint(tmp_path / "img")
    p = ck.process(PID)
    H = 0x7f0000000000
    p.vma(H, H + 6000 * P)
    for i in range(3000):
        p.pages(H + 2 * i * P, nr_pages=1)
    ck.write()
    corrupt(ck.dir, 1500, how)
    with pytest.raises(Exception) as bulk:
        PageIndex(ck.dir, "pagemap-%d.img" % PID)
    one_by_one(monkeypatch)
    with pytest.raises(Exception) as each:
        PageIndex(ck.dir, "pagemap-%d.img" % PID)
    assert str(bulk.value) == str(each.value)
    assert type(bulk.value) is type(each.value)
