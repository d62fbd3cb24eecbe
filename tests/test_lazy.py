"""Lazy pages (`criu dump --lazy-pages`): entries flagged PE_LAZY whose pages
are not in the images.  The core is written with those ranges as holes, one
warning line per process names the pagemap, and the exit code is 3."""
import os

import pytest

from .helpers import synth
from .helpers.tools import convert, gdb_memory

pytestmark = pytest.mark.slow

P = synth.PAGE
ANON = 0x50000000
FILE = 0x60000000


def page(text):
    return text.encode().ljust(P, b"#")


def lazy_process(ck, pid, root):
    """Anonymous pages 0-1 present, 2-3 lazy, 4 present, 5 lazy; a private
    file mapping whose page 1 was written (lazy: not in the images) and whose
    page 0 is the file's."""
    ck.reg_file(pid, "/data/file-%d" % pid, size=2 * P)
    with open(os.path.join(root, "data", "file-%d" % pid), "wb") as f:
        f.write(page("file page 0") + page("file page 1"))
    p = ck.process(pid)
    p.vma(ANON, ANON + 6 * P)
    p.vma(FILE, FILE + 2 * P, kind="file", shmid=pid)
    p.pages(ANON, page("anon 0") + page("anon 1")).lazy(ANON + 2 * P, 2)
    p.pages(ANON + 4 * P, page("anon 4")).lazy(ANON + 5 * P, 1)
    p.lazy(FILE + P, 1)
    return p


def test_lazy_ranges_are_holes_with_one_warning_per_process(tmp_path):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    ck = synth.Checkpoint(tmp_path / "img")
    lazy_process(ck, 200, str(root))
    lazy_process(ck, 201, str(root))
    images = ck.write()
    r, cores = convert(images, tmp_path / "out", "--root", root, "--jobs", "1",
                       check=3)
    assert r.stderr.splitlines() == [
        "coredump: warning: %s/pagemap-%d.img: 4 pages were left for lazy "
        "restore and are not in the images; they are holes" % (images, pid)
        for pid in (200, 201)]
    assert sorted(cores) == [200, 201]
    for pid in (200, 201):
        got = gdb_memory(cores[pid], [(ANON + i * P, P) for i in range(6)]
                         + [(FILE, P), (FILE + P, P)], tmp_path / "gdb")
        assert got == [page("anon 0"), page("anon 1"), bytes(P), bytes(P),
                       page("anon 4"), bytes(P),
                       page("file page 0"), bytes(P)]
        st = os.stat(cores[pid])
        assert st.st_blocks * 512 < st.st_size  # the holes are holes


def test_lazy_exit_code_with_jobs(tmp_path):
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    ck = synth.Checkpoint(tmp_path / "img")
    lazy_process(ck, 200, str(root))
    ck.process(202).vma(ANON, ANON + P).pages(ANON, page("complete"))
    images = ck.write()
    r, cores = convert(images, tmp_path / "out", "--root", root, "--jobs", "2",
                       check=3)
    assert len(r.stderr.splitlines()) == 1
    assert "pagemap-200.img: 4 pages were left for lazy restore" in r.stderr
    assert sorted(cores) == [200, 202]
