"""End to end: real CRIU images -> our core -> real gdb, compared with what
gdb said on a gcore of the same live process.

A fixture with a reference core (ref.core.xz) is judged by
shared/tools/gdbcheck.py: the gdb of this machine answers on both cores,
line for line.  The four first fixtures have only expected.txt, gdb 13.1's
answers on Debian 12: they are compared fact by fact
(tests/helpers/gdbfacts.py: threads, frames, values, auxv, libraries), the
facts that do not depend on gdb's version or this machine's debug files.
"""
import os
import re

import pytest

from criu_coredump import images

from .helpers.paths import FIXTURES
from .helpers.tools import gdb, gdb_major, gdbcheck, run_coredump
from .helpers.debuggers import fixture_exe
from .helpers.gdbfacts import differences, facts

pytestmark = pytest.mark.slow


def gdb_cmds_answers(fx, core):
    """gdb's answers to the fixture's gdb.cmds on a core, as gdbcheck.py asks."""
    root = os.path.abspath(os.path.join(fx, "root"))
    out = gdb(core, exe=fixture_exe(fx), sysroot=root,
              early=["set debuginfod enabled off"],
              script=os.path.join(fx, "gdb.cmds"))
    return out, root


ZDTM = sorted(os.listdir(os.path.join(FIXTURES, "zdtm")))
EXACT = ["threads", "stopped_static", "tree", "shmem", "modern_threads"] + \
    ["zdtm/" + n for n in ZDTM]


def first_pid(fx):
    """The root process of a fixture's tree: the one its gcore was taken of."""
    return images.open_checkpoint(os.path.join(fx, "images")).entries[0].pid


def gdb_is_the_fixtures():
    """expected.txt is gdb 13.1's answer: a gdb 13 compares with it line
    for line (gdbcheck.py); another version words things its own way."""
    return gdb_major() == 13


@pytest.mark.parametrize("name", EXACT)
def test_gdb_answers_match_gcore(name, fixtures_dir, cores):
    """Every address, register and line gdb gives on our core is what it
    gives on the gcore of the same moment (the conversion exits 0: `cores`
    checks it)."""
    fx = fixtures_dir(name)
    core = os.path.join(cores(name), "core.%d" % first_pid(fx))
    if os.path.exists(os.path.join(fx, "ref.core.xz")) or gdb_is_the_fixtures():
        r = gdbcheck(fx, core)
        assert r.returncode == 0, r.stdout
        assert re.search(r"^all \d+ expected lines match$", r.stdout, re.M), r.stdout
        return
    with open(os.path.join(fx, "expected.txt")) as f:
        want = facts(f.read())
    out, root = gdb_cmds_answers(fx, core)
    got = facts(out, root)
    assert want["frames"] and want["threads"], want
    diff = differences(want, got)
    assert not diff, "\n".join(diff) + "\n\ngdb said:\n" + out


def test_tree_child_is_exact_too(fixtures_dir, cores):
    """The sleeping child of `tree` has no gcore of its own; it forked from
    the parent, so its libc sits at the same addresses and its frame 0 is
    the parent's pc, with its own LWP, role and caller line."""
    fx = fixtures_dir("tree")
    out, _ = gdb_cmds_answers(fx, os.path.join(cores("tree"), "core.13547"))
    assert re.search(r"^\* 1 +.*LWP 13547\)? +0x00007fbe797a7dd0 in \S*pause ",
                     out, re.M), out
    assert re.search(r"^#1  0x[0-9a-f]+ in wait_as \(role=2\) at tree\.c:11$",
                     out, re.M), out
    assert re.search(r"^#2  0x[0-9a-f]+ in main \(\) at tree\.c:16$", out, re.M), out
    assert re.search(r"^\$1 = 2$", out, re.M), out


def test_tree_writes_every_live_process_and_skips_the_zombie(cores):
    out = cores("tree")
    assert sorted(os.listdir(out)) == ["core.13544", "core.13547"]


def test_pid_selects_one_process(fixtures_dir, tmp_path):
    fx = fixtures_dir("tree")
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", tmp_path,
                     "--root", os.path.join(fx, "root"), "--pid", 13547, check=0)
    assert os.listdir(tmp_path) == ["core.13547"]
    assert "core.13547" in p.stdout


def test_zombie_pid_is_a_clear_note(fixtures_dir, tmp_path):
    fx = fixtures_dir("tree")
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", tmp_path,
                     "--pid", 13548, check=0)
    assert os.listdir(tmp_path) == []
    assert "process 13548 (prog) skipped: zombie" in p.stderr
    assert "Traceback" not in p.stderr


def test_unknown_pid_is_an_error(fixtures_dir, tmp_path):
    fx = fixtures_dir("tree")
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", tmp_path,
                     "--pid", 4242, check=2)
    assert p.stderr.strip().endswith("pstree.img: no process 4242 in this checkpoint")
    assert len(p.stderr.strip().splitlines()) == 1


def test_python_m_and_bin_agree(fixtures_dir, tmp_path):
    import subprocess
    import sys
    from .helpers.paths import REPO
    fx = fixtures_dir("stopped_static")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    root = os.path.join(fx, "root")
    run_coredump("-i", os.path.join(fx, "images"), "-o", a, "--root", root, check=0)
    env = dict(os.environ, PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "criu_coredump", "-i",
                    os.path.join(fx, "images"), "-o", str(b), "-q", "--root", root],
                   check=True, env=env)
    assert (a / "core.13508").read_bytes() == (b / "core.13508").read_bytes()
