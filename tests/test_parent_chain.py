"""Incremental checkpoints: pages marked in_parent / PE_PARENT come from the
parent image directory (the `parent` link `criu dump --prev-images-dir`
writes), recursively, each level with its own pagemap index."""
import os

import pytest

from .helpers import synth
from .helpers.tools import convert, gdb_memory

pytestmark = pytest.mark.slow

P = synth.PAGE
BASE = 0x40000000
PID = 100


def page(text):
    return text.encode().ljust(P, b".")


def chain(tmp_path, old_style=False, fmt="4.2"):
    """Three levels over one 8-page mapping.

      grandparent: pages 0-7 present ("gp N")
      parent:      0-1 in parent, 2-3 present ("p N"), 4-5 in parent, 6-7 present
      child:       0-2 in parent, 3 present ("c 3"), 4-7 in parent
    so the child's page N is: gp 0, gp 1, p 2, c 3, gp 4, gp 5, p 6, p 7.
    """
    def level(name, parent=None):
        ck = synth.Checkpoint(tmp_path / name, fmt=fmt, parent=parent)
        p = ck.process(PID)
        p.vma(BASE, BASE + 8 * P)
        return ck, p

    gp, g = level("gp")
    g.pages(BASE, b"".join(page("gp %d" % i) for i in range(8)))
    parent, p = level("p", gp)
    p.in_parent(BASE, 2, old_style).pages(BASE + 2 * P, page("p 2") + page("p 3"))
    p.in_parent(BASE + 4 * P, 2, old_style).pages(BASE + 6 * P, page("p 6") + page("p 7"))
    child, c = level("c", parent)
    c.in_parent(BASE, 3, old_style).pages(BASE + 3 * P, page("c 3"))
    c.in_parent(BASE + 4 * P, 4, old_style)
    return child


EXPECTED = ["gp 0", "gp 1", "p 2", "c 3", "gp 4", "gp 5", "p 6", "p 7"]


@pytest.mark.parametrize("old_style, fmt", [(False, "4.2"), (False, "3.x"),
                                            (True, "3.x")])
def test_two_levels_of_parents(tmp_path, old_style, fmt):
    images = chain(tmp_path, old_style, fmt).write()
    assert os.path.islink(os.path.join(images, "parent"))
    # from another directory: the relative `parent` link is the image dir's
    r, cores = convert(images, tmp_path / "out", cwd=str(tmp_path / "gp"))
    assert r.stderr == ""
    got = gdb_memory(cores[PID], [(BASE + i * P, P) for i in range(8)],
                     tmp_path / "gdb")
    assert [g[:8].rstrip(b".").decode() for g in got] == EXPECTED
    assert got == [page(t) for t in EXPECTED]


def test_in_parent_without_parent_directory_is_an_error(tmp_path):
    ck = synth.Checkpoint(tmp_path / "img")
    p = ck.process(PID)
    p.vma(BASE, BASE + 2 * P)
    p.pages(BASE, page("x")).in_parent(BASE + P, 1)
    images = ck.write()
    r, _ = convert(images, tmp_path / "out", check=2)
    assert r.stderr == ("coredump: error: %s/pagemap-%d.img: entries are in the "
                        "parent checkpoint but there is no 'parent' directory\n"
                        % (images, PID))
    assert os.listdir(str(tmp_path / "out")) == []


def test_pages_missing_from_the_parent_are_an_error(tmp_path):
    parent = synth.Checkpoint(tmp_path / "img.parent")
    pp = parent.process(PID)
    pp.vma(BASE, BASE + 4 * P)
    pp.pages(BASE, page("p 0"))
    ck = synth.Checkpoint(tmp_path / "img")
    ck.parent = parent
    p = ck.process(PID)
    p.vma(BASE, BASE + 4 * P)
    p.in_parent(BASE, 2)  # the parent has page 0 only
    images = ck.write()
    r, _ = convert(images, tmp_path / "out", check=2)
    assert r.stderr == (
        "coredump: error: %s/pagemap-%d.img: has no pages at 0x%x, which "
        "%s/pagemap-%d.img says are in the parent checkpoint\n"
        % (tmp_path / "img.parent", PID, BASE + P, images, PID))
    assert os.listdir(str(tmp_path / "out")) == []
