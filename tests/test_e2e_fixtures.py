"""End to end: real CRIU images -> our core -> real gdb, compared with what
gdb said on a gcore of the same live process (shared/tools/gdbcheck.py)."""
import os
import re

import pytest

from .conftest import FIRST_PID, gdbcheck, run_coredump


@pytest.mark.parametrize("name", ["threads", "stopped_static", "tree", "shmem"])
def test_gdb_answers_match_gcore(name, fixtures_dir, cores):
    fx = fixtures_dir(name)
    core = os.path.join(cores(name), "core.%d" % FIRST_PID[name])
    r = gdbcheck(fx, core)
    assert r.returncode == 0, r.stdout
    assert re.search(r"^all \d+ expected lines match$", r.stdout, re.M), r.stdout


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
    from .conftest import REPO
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
