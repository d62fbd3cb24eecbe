"""PagesStream.pread(partial=True): a core's pages are read from a
compressed archive in chunks that rarely start at a decompression
buffer's boundary; a partial read gives what the current buffer holds
(without copying it into a new one), and the reader loops.  The bytes
must be the member's, whole, in order, however the chunks fall."""
import os
import random

import pytest

from criu_coredump import archive_stream


@pytest.fixture
def stream(tmp_path, monkeypatch):
    import zstandard
    monkeypatch.setattr(archive_stream, "BUF", 4096)  # many buffers
    rng = random.Random(7)
    raw = bytes(rng.getrandbits(8) for _ in range(200_000))
    path = tmp_path / "a.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(raw))
    fd = os.open(str(path), os.O_RDONLY)
    # a member at an offset that is not a buffer's boundary
    s = archive_stream.PagesStream((fd, 0, os.path.getsize(path), "zstd", str(path)),
                                   {"m": (1000, 150_000)}, str(tmp_path))
    yield s, raw[1000:151_000]
    s.close()


def test_partial_reads_give_the_member_whole(stream):
    s, want = stream
    got, off, short = bytearray(), 0, 0
    while off < len(want):
        n = min(10_000, len(want) - off)
        data = s.pread("m", n, off, partial=True)
        assert 0 < len(data) <= n
        short += len(data) < n
        got += data
        off += len(data)
    assert bytes(got) == want
    assert short  # the chunks did fall across buffers
    assert s.pread("m", 10, len(want), partial=True) == b""


def test_whole_reads_still_give_all_they_ask(stream):
    s, want = stream
    for off in range(0, len(want), 10_000):
        n = min(10_000, len(want) - off)
        assert bytes(s.pread("m", n, off)) == want[off:off + n]
