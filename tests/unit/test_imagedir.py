"""imagedir.ImageDir: the one owner of image names and the one seam image
files are opened through.  A subclass that serves every image from inside
one larger file (as an archive reader does) must be enough for the whole
loader: records, page index, pages."""
import os

import pytest

from criu_coredump import images
from criu_coredump.errors import BadImage
from criu_coredump.imagedir import ImageDir, ImageFile, ImageReader
from criu_coredump.memory import MemoryPlan
from criu_coredump.rootfs import NotRegular, RootFS

from ..helpers import synth

P = synth.PAGE


def test_names_are_criu_s():
    d = ImageDir("/ck")
    assert (d.core(7), d.mm(7), d.pagemap(7), d.shmem_pagemap(3), d.pages(2),
            d.ghost(5)) == ("core-7.img", "mm-7.img", "pagemap-7.img",
                            "pagemap-shmem-3.img", "pages-2.img",
                            "ghost-file-5.img")
    assert (d.PSTREE, d.FILES, d.join("x.img")) == ("pstree.img", "files.img", "/ck/x.img")


def test_open_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(str(tmp_path / "pstree.img"))
    with pytest.raises(NotRegular):
        ImageDir(str(tmp_path)).open("pstree.img")   # O_NONBLOCK: no hang
    with pytest.raises(FileNotFoundError):
        ImageDir(str(tmp_path)).open("mm-1.img")


def test_reader_reads_a_range_of_a_file(tmp_path):
    p = tmp_path / "big"
    p.write_bytes(b"0123456789abcdef")
    with ImageReader(ImageFile(os.open(str(p), os.O_RDONLY), 4, 6)) as r:
        assert r.read(2) == b"45"
        assert r.read() == b"6789"
        assert r.read(5) == b""
        r.seek(1)
        assert (r.tell(), r.read(100)) == (1, b"56789")
        assert r.end == 6


@pytest.mark.parametrize("make,what", [
    (lambda d: None, "no such image directory"),
    (lambda d: d.mkdir(), "empty image directory"),
    (lambda d: (d.mkdir(), (d / "x").write_bytes(b"")), "no pstree.img: not a CRIU image directory"),
    (lambda d: d.write_bytes(b""), "not a directory"),
])
def test_check_says_what_is_wrong(tmp_path, make, what):
    d = tmp_path / "ck"
    make(d)
    with pytest.raises(BadImage) as e:
        ImageDir(str(d)).check()
    assert str(e.value) == "%s: %s" % (d, what)


def test_parent_is_the_real_directory(tmp_path):
    (tmp_path / "pre").mkdir()
    (tmp_path / "final").mkdir()
    os.symlink("../pre", str(tmp_path / "final" / "parent"))
    parent = ImageDir(str(tmp_path / "final")).parent()
    assert parent.path == str((tmp_path / "pre").resolve())
    assert ImageDir(str(tmp_path / "pre")).parent() is None


class Packed(ImageDir):
    """Every image of a checkpoint inside one file, at recorded offsets:
    what an archive reader's ImageDir does, and nothing else."""

    def __init__(self, blob, table):
        super().__init__("packed")
        self.blob, self.table, self.opened = blob, table, []

    def open(self, name):
        if name not in self.table:
            raise FileNotFoundError(2, "No such file or directory", name)
        self.opened.append(name)
        base, size = self.table[name]
        return ImageFile(os.open(self.blob, os.O_RDONLY), base, size)

    def size(self, name):
        if name not in self.table:
            raise FileNotFoundError(2, "No such file or directory", name)
        return self.table[name][1]

    def exists(self, name):
        return name in self.table

    lexists = exists

    def check(self):
        pass


def test_a_subclass_serves_the_whole_loader(tmp_path):
    ck = synth.Checkpoint(tmp_path / "img")
    p = ck.process(400)
    p.vma(0x10000000, 0x10003000).pages(0x10001000, nr_pages=2)
    d = ck.write()
    blob, table = tmp_path / "blob", {}
    with open(str(blob), "wb") as out:
        out.write(b"\xff" * 1000)           # nothing starts at offset 0
        for name in sorted(os.listdir(d)):
            data = open(os.path.join(d, name), "rb").read()
            table[name] = (out.tell(), len(data))
            out.write(data + b"\xee" * 77)  # nor ends at the file's end
    packed = Packed(str(blob), table)
    ckpt = images.open_checkpoint(packed)
    proc = images.load_process(packed, ckpt.entries[0])
    plan = MemoryPlan(ckpt, proc, RootFS(None))
    try:
        assert plan.read(0x10001000 + P - 8, 16) == \
            synth.page_pattern(0x10001000, 2)[P - 8:P + 8]
        assert plan.read(0x10000000, 8) == bytes(8)    # a hole
        (seg,) = plan.segments
        assert [(e.addr, e.length) for e in seg.extents()] == [(0x10001000, 2 * P)]
    finally:
        plan.close()
    assert set(packed.opened) >= {"pstree.img", "core-400.img", "mm-400.img",
                                  "pagemap-400.img", "pages-1.img"}
