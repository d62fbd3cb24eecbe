"""Recoverable trouble: a warning or one error line, exit 3, and everything
else still right (compared byte for byte with the untroubled conversion)."""
import os
import shutil

import pytest

from .helpers.tools import run_coredump
from .helpers.corefile import PT_LOAD, read_core
from .helpers.imgedit import read_messages

pytestmark = pytest.mark.slow


def test_one_broken_process_of_a_tree(fixtures_dir, cores, tmp_path):
    fx = fixtures_dir("tree")
    images = tmp_path / "images"
    shutil.copytree(os.path.join(fx, "images"), images)
    mm = images / "mm-13547.img"
    os.truncate(mm, os.path.getsize(mm) // 2)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", images, "-o", out, "--root", os.path.join(fx, "root"))
    assert p.returncode == 3, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if "error" in ln]
    assert len(errors) == 1 and errors[0].startswith("coredump: error: %s: truncated " % mm)
    assert "Traceback" not in p.stderr
    assert sorted(os.listdir(out)) == ["core.13544"]
    with open(out / "core.13544", "rb") as a, \
            open(os.path.join(cores("tree"), "core.13544"), "rb") as b:
        assert a.read() == b.read()


def test_every_process_broken_is_bad_input_not_partial(fixtures_dir, tmp_path):
    fx = fixtures_dir("tree")
    images = tmp_path / "images"
    shutil.copytree(os.path.join(fx, "images"), images)
    for pid in (13544, 13547):
        os.truncate(images / ("mm-%d.img" % pid), 10)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", images, "-o", out, "-q")
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.splitlines()) == 2
    assert os.listdir(out) == []


def test_mapped_file_missing_under_root(fixtures_dir, cores, tmp_path):
    """The executable is missing from the root: a warning naming it, its
    file pages become holes (zeros), every other byte is as before."""
    fx = fixtures_dir("stopped_static")
    root = tmp_path / "root"
    shutil.copytree(os.path.join(fx, "root"), root, symlinks=True)
    prog = root / "opt/ccd/stopped_static/prog"
    os.unlink(prog)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", out, "--root", root)
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines() == [
        "coredump: warning: %s: cannot read mapped file (No such file or directory); "
        "its pages are holes" % prog]
    new = read_core(out / "core.13508")
    ref = read_core(os.path.join(cores("stopped_static"), "core.13508"))
    assert new[0] == ref[0] and new[1] == ref[1]  # same headers, same notes
    _, msgs = read_messages(os.path.join(fx, "images", "mm-13508.img"))
    prog_vmas = {v.start for v in msgs[0].vmas if v.shmid == 1}
    changed = 0
    for ph in new[0]:
        if ph["type"] != PT_LOAD:
            continue
        a = new[2][ph["offset"]:ph["offset"] + ph["filesz"]]
        b = ref[2][ph["offset"]:ph["offset"] + ph["filesz"]]
        if a != b:
            changed += 1
            assert ph["vaddr"] in prog_vmas
            assert all(x == 0 or x == y for x, y in zip(a, b))
    assert changed  # the ELF header page came from the file before
