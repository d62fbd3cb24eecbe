"""writer._source_view: a pages image's gathered span is mapped, not read,
and only system calls touch the mapping, so an image that shrinks under
the conversion is a one-line error naming it, not a SIGBUS."""
import os

import pytest

from criu_coredump import writer
from criu_coredump.errors import BadImage, OutputError
from criu_coredump.imagedir import ImageFile

SIZE = 2 << 20


class Pages:
    """What the writer asks of a source: its name, and whether it may be
    mapped (sources.ImagePages)."""

    def __init__(self, path, mappable=True):
        self.path = path
        self.mappable = mappable


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "pages-1.img"
    path.write_bytes(os.urandom(SIZE))
    fd = os.open(path, os.O_RDWR)
    yield path, fd
    os.close(fd)


def _out(tmp_path):
    return os.open(tmp_path / "core", os.O_RDWR | os.O_CREAT, 0o600)


def test_a_mapped_span_writes_the_image_s_bytes(image, tmp_path):
    path, fd = image
    view = writer._source_view(Pages(str(path)), ImageFile(fd), SIZE, 4096)
    assert isinstance(view, memoryview) and not isinstance(view.obj, bytes)
    assert len(view) == SIZE - 4096  # up to the image's end, not past it
    out = _out(tmp_path)
    try:
        writer._pwritev_all(out, [view[:8192], view[8192:]], 100, "core",
                            str(path))
    finally:
        os.close(out)
    assert (tmp_path / "core").read_bytes()[100:] == path.read_bytes()[4096:]


def test_within_a_larger_file_at_an_unaligned_base(image):
    path, fd = image
    f = ImageFile(fd, base=1000, size=SIZE - 5000)
    view = writer._source_view(Pages(str(path)), f, SIZE, 3000)
    assert bytes(view) == path.read_bytes()[4000:SIZE - 4000]


def test_small_spans_and_other_sources_are_read(image):
    path, fd = image
    data = path.read_bytes()
    small = writer._source_view(Pages(str(path)), ImageFile(fd), 4096, 0)
    other = writer._source_view(Pages(str(path), mappable=False),
                                ImageFile(fd), SIZE, 0)
    assert isinstance(small, bytes) and small == data[:4096]
    assert isinstance(other, bytes) and other == data


@pytest.mark.parametrize("write", ["pwritev", "pwrite"])
def test_an_image_that_shrinks_meanwhile_is_a_bad_image(image, tmp_path, write):
    path, fd = image
    view = writer._source_view(Pages(str(path)), ImageFile(fd), SIZE, 0)
    os.ftruncate(fd, 4096)  # the pages the view maps are gone
    out = _out(tmp_path)
    try:
        with pytest.raises(BadImage) as e:
            if write == "pwritev":
                writer._pwritev_all(out, [view], 0, "core", str(path))
            else:
                writer._write_all(out, view, 0, "core", str(path))
    finally:
        os.close(out)
    assert e.value.path == str(path)
    assert "cannot read" in str(e.value)


def test_a_failed_write_still_names_the_core(image, tmp_path):
    path, fd = image
    view = writer._source_view(Pages(str(path)), ImageFile(fd), SIZE, 0)
    ro = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OutputError) as e:
            writer._pwritev_all(ro, [view], 0, "core", str(path))
    finally:
        os.close(ro)
    assert e.value.path == "core"


@pytest.mark.parametrize("limit", [7, 4999, 1 << 20])
def test_short_writes_go_on_where_they_stopped(tmp_path, monkeypatch, limit):
    """pwritev may write less than asked (a signal, a full disk freed
    meanwhile): the rest follows from the byte where it stopped, across
    views of any length (empty ones too) and _IOV_MAX at a time."""
    real = os.pwritev
    calls = []

    def short(fd, bufs, off):
        take, n = [], 0
        for b in bufs:
            b = memoryview(b)
            if n + len(b) > limit:
                take.append(b[:limit - n])
                break
            take.append(b)
            n += len(b)
        calls.append(len(bufs))
        return real(fd, take, off)
    monkeypatch.setattr(writer.os, "pwritev", short)
    data = os.urandom(3 << 20)
    view = memoryview(data)
    iov, pos = [], 0
    for i in range(2 * writer._IOV_MAX + 7):
        n = (i * 977) % 301
        iov.append(view[pos:pos + n])
        pos += n
    out = _out(tmp_path)
    try:
        writer._pwritev_all(out, iov, 10, "core")
    finally:
        os.close(out)
    assert (tmp_path / "core").read_bytes()[10:] == data[:pos]
    assert max(calls) <= writer._IOV_MAX
    assert len(calls) >= (pos + limit - 1) // limit
