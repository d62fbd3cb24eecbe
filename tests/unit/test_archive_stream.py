"""archive_stream.PagesStream in process: whatever the order of the reads,
each gives the member's bytes; going back restarts the decompression, a
member read backwards too often is copied out once, the prefetched ranges
cost no pass of their own afterwards."""
import gzip
import io
import os
import random
import tarfile

import pytest

from criu_coredump import archive, archive_stream


@pytest.fixture(autouse=True)
def small_buffers(monkeypatch):
    # buffers much smaller than the members: reads across buffers are seen
    monkeypatch.setattr(archive_stream, "BUF", 64 << 10)


def _archive(tmp_path, compress, sizes=(768 << 10, 1280 << 10, 256 << 10)):
    rnd = random.Random(13)
    datas = {"ck/pages-%d.img" % (i + 1): rnd.randbytes(n)
             for i, n in enumerate(sizes)}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in datas.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    if compress == "zstd":
        import zstandard
        raw = zstandard.ZstdCompressor(level=1).compress(raw)
    else:
        raw = gzip.compress(raw, compresslevel=1)
    path = tmp_path / ("a.tar." + compress)
    path.write_bytes(raw)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    kind, stream = archive.open_stream(fd, str(path))
    members = {m.name: (m.offset, m.size)
               for m in archive.index(stream, str(path)).values()}
    tmp = tmp_path / "private"
    tmp.mkdir()
    st = archive_stream.PagesStream((fd, 0, os.path.getsize(path), kind,
                                     str(path)), members, str(tmp))
    path.unlink()  # the stream reads the file it was given, not a name
    return st, datas, tmp


@pytest.mark.parametrize("compress", ["zstd", "gzip"])
def test_reads_in_any_order_give_the_members_bytes(tmp_path, compress):
    st, datas, tmp = _archive(tmp_path, compress)
    rnd = random.Random(5)
    names = sorted(datas)
    try:
        for _ in range(60):
            name = rnd.choice(names)
            off = rnd.randrange(len(datas[name]))
            n = rnd.choice([1, 4, 4096, 70000, 600 << 10])
            assert bytes(st.pread(name, n, off)) == datas[name][off:off + n]
        # past the end: nothing
        assert st.pread(names[0], 10, len(datas[names[0]])) == b""
    finally:
        st.close()
    # the read after the last restart allowed copies the member out
    assert all(r <= archive_stream.MAX_RESTARTS + 1 for r in st.restarts.values())
    assert len(os.listdir(tmp)) == st.stats["copied_out"] <= len(names)


def test_forward_reads_are_one_pass(tmp_path):
    st, datas, tmp = _archive(tmp_path, "zstd")
    try:
        for name in sorted(datas):
            for off in range(0, len(datas[name]), 100 << 10):
                assert bytes(st.pread(name, 100 << 10, off)) == \
                    datas[name][off:off + (100 << 10)]
    finally:
        st.close()
    assert st.stats == {"passes": 1, "copied_out": 0}
    assert os.listdir(tmp) == []


def test_back_and_forth_restarts_then_copies_out(tmp_path):
    st, datas, tmp = _archive(tmp_path, "gzip")
    name = "ck/pages-2.img"
    try:
        for _ in range(archive_stream.MAX_RESTARTS + 2):
            far = datas[name][1 << 20:(1 << 20) + 100]
            assert bytes(st.pread(name, 100, 1 << 20)) == far
            assert bytes(st.pread(name, 100, 0)) == datas[name][:100]
        assert st.stats["copied_out"] == 1
        assert [os.path.getsize(tmp / f) for f in os.listdir(tmp)] == \
            [len(datas[name])]
    finally:
        st.close()


def test_interleaved_members_keep_a_decompression_each(tmp_path):
    """A core reading its own pages and shared memory's in turn: one
    restart, not one at each switch."""
    st, datas, tmp = _archive(tmp_path, "zstd")
    own, shm = "ck/pages-1.img", "ck/pages-3.img"
    try:
        for i in range(6):
            off = i * (40 << 10)
            assert bytes(st.pread(own, 4096, off)) == datas[own][off:off + 4096]
            assert bytes(st.pread(shm, 4096, off)) == datas[shm][off:off + 4096]
    finally:
        st.close()
    assert st.stats == {"passes": 2, "copied_out": 0}


def test_prefetched_ranges_are_served_from_memory(tmp_path):
    st, datas, tmp = _archive(tmp_path, "zstd")
    want = [("ck/pages-3.img", 1000, 16), ("ck/pages-1.img", 8192, 4),
            ("ck/pages-2.img", (1280 << 10) - 80, 80)]
    try:
        st.prefetch(want)
        assert st.stats["passes"] == 1 and st.pumps == []
        for name, off, n in want:
            assert st.pread(name, n, off) == datas[name][off:off + n]
        assert st.stats["passes"] == 1
        # then the cores: one pass from the start, not counted as a restart
        first = datas["ck/pages-1.img"][:10]
        assert bytes(st.pread("ck/pages-1.img", 10, 0)) == first
        assert st.stats["passes"] == 2 and st.restarts == {}
    finally:
        st.close()
