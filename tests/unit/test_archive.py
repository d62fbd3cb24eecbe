"""archive, container and binaries in process: the tar reader against
Python's tarfile as the writer, the compressions (and their truncation),
member checks, the plain archive's image directory, locate() below a root.
"""
import bz2
import gzip
import io
import lzma
import os
import tarfile

import pytest

from criu_coredump import archive, binaries, container
from criu_coredump.archive import BadArchive
from criu_coredump.rootfs import RootFS


def _tar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in entries:
            if isinstance(name, tarfile.TarInfo):
                t.addfile(name, io.BytesIO(data) if data else None)
                continue
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _stream(tmp_path, data, name="a"):
    p = tmp_path / name
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    return fd, archive.open_stream(fd, str(p))


ENTRIES = [("checkpoint/pstree.img", b"P" * 28), ("checkpoint/pages-1.img", os.urandom(8192)),
           ("x" * 120 + "/long.img", b"L" * 3)]


@pytest.mark.parametrize("kind,pack", [
    ("tar", lambda b: b), ("gzip", gzip.compress), ("xz", lzma.compress),
    ("bzip2", bz2.compress), ("zstd", None)])
def test_every_compression_unpacks_what_tarfile_wrote(tmp_path, kind, pack):
    raw = _tar(ENTRIES)
    if pack is None:
        import zstandard
        pack = zstandard.ZstdCompressor().compress
    fd, (got_kind, stream) = _stream(tmp_path, pack(raw))
    try:
        assert got_kind == kind
        dest = tmp_path / "d"
        dest.mkdir()
        members = archive.unpack(stream, "a", str(dest))
    finally:
        os.close(fd)
    assert sorted(members) == sorted(n for n, _ in ENTRIES)
    for name, data in ENTRIES:
        assert (dest / name).read_bytes() == data


@pytest.mark.parametrize("pack", [gzip.compress, lzma.compress, bz2.compress])
def test_a_cut_compressed_stream_is_truncated(tmp_path, pack):
    data = pack(_tar(ENTRIES))
    fd, (_, stream) = _stream(tmp_path, data[:len(data) * 2 // 3])
    try:
        with pytest.raises(BadArchive, match="truncated"):
            archive.index(stream, "a")
    finally:
        os.close(fd)


def test_gzip_members_concatenated_are_one_stream(tmp_path):
    raw = _tar(ENTRIES)
    fd, (_, stream) = _stream(tmp_path, gzip.compress(raw[:700]) + gzip.compress(raw[700:]))
    try:
        assert sorted(archive.index(stream, "a")) == sorted(n for n, _ in ENTRIES)
    finally:
        os.close(fd)


def test_plain_offsets_are_where_the_data_is(tmp_path):
    raw = _tar(ENTRIES, tarfile.GNU_FORMAT)
    fd, (_, stream) = _stream(tmp_path, raw)
    try:
        members = archive.index(stream, "a")
    finally:
        os.close(fd)
    for name, data in ENTRIES:
        m = members[name]
        assert raw[m.offset:m.offset + m.size] == data


@pytest.mark.parametrize("name,target,ok", [
    ("a/l", "../b", True), ("a/l", "../../b", False), ("l", "/etc/passwd", False),
    ("a/b/l", "../../c/d", True), ("l", "..", False)])
def test_symlink_members_must_stay_inside(tmp_path, name, target, ok):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    fd, (_, stream) = _stream(tmp_path, _tar([(ti, None)]))
    try:
        if ok:
            assert archive.index(stream, "a")[name].linkname == target
        else:
            with pytest.raises(BadArchive, match="points out of the archive"):
                archive.index(stream, "a")
    finally:
        os.close(fd)


def test_unpacking_never_goes_through_a_symlink(tmp_path):
    """A diff's absolute symlink is allowed (resolved below the root when
    used), but a later member written through it is refused."""
    ti = tarfile.TarInfo("usr")
    ti.type = tarfile.SYMTYPE
    ti.linkname = str(tmp_path / "outside")
    (tmp_path / "outside").mkdir()
    fd, (_, stream) = _stream(tmp_path, _tar([(ti, None), ("usr/evil", b"x")]))
    dest = tmp_path / "d"
    dest.mkdir()
    try:
        with pytest.raises(BadArchive, match="goes through a symlink"):
            archive.unpack(stream, "a", str(dest), links_out=True)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path / "outside") == []


def test_archive_image_dir_opens_pages_in_place(tmp_path):
    raw = _tar(ENTRIES)
    p = tmp_path / "a.tar"
    p.write_bytes(raw)
    fd = os.open(p, os.O_RDONLY)
    try:
        tree = container._plain_tree(str(p), fd, str(p))
    finally:
        os.close(fd)
    src, off, size = tree.where("checkpoint/pages-1.img")
    d = container.ArchiveImageDir(str(tmp_path), {"pages-1.img": (src, off, size)})
    f = d.open("pages-1.img")
    try:
        assert (f.base, f.size) == (off, 8192)
        assert os.pread(f.fd, f.size, f.base) == dict(ENTRIES)["checkpoint/pages-1.img"]
    finally:
        os.close(f.fd)
    assert d.size("pages-1.img") == 8192 and d.exists("pages-1.img")
    assert d.parent() is None


def test_locate_takes_the_root_file_when_its_build_matches(tmp_path):
    """Without a client, a file below the root is used as it is; with a
    recorded build-id it must match, else the plan's check refuses it (the
    root's file comes back, named as the root names it)."""
    from criu_coredump.buildid import read_build_id
    exe = "/bin/true"
    fd = os.open(exe, os.O_RDONLY)
    try:
        bid = read_build_id(fd)
    finally:
        os.close(fd)
    root = RootFS(None)
    try:
        fd, shown = binaries.locate(root, exe, bid, None)
        os.close(fd)
        assert shown == exe
        with pytest.raises(FileNotFoundError):
            binaries.locate(root, "/no/such/file", bid, None)
    finally:
        root.close()
