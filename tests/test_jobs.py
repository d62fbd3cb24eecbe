"""--jobs N: processes convert in parallel, one child process per core, with
the same cores, the same output in the same order and the same exit code as
one at a time; an interrupted or killed child leaves no partial core."""
import os
import signal
import subprocess
import sys
import time

import pytest

from criu_coredump.convert import generate
from criu_coredump.writer import GATHER_GAP

from .helpers import synth
from .helpers.paths import COREDUMP
from .helpers.tools import convert, signals_at_default

pytestmark = pytest.mark.slow

P = synth.PAGE
BASE = 0x70000000


def tree(path, root, slow_pages=20000):
    """Five processes: a slow one with lazy pages (a warning), a fast one
    with lazy pages, one whose pages image is truncated (an error), a zombie
    (a note) and one whose mapped file is missing (a warning)."""
    ck = synth.Checkpoint(path)
    slow = ck.process(10, comm="slow")
    slow.vma(BASE, BASE + 2 * slow_pages * P)
    for i in range(slow_pages):
        slow.pages(BASE + 2 * i * P, nr_pages=1)
    slow.lazy(BASE + P, 1)
    ck.process(11, ppid=10, comm="fast").vma(BASE, BASE + 2 * P) \
        .pages(BASE, nr_pages=1).lazy(BASE + P, 1)
    ck.process(12, ppid=10, comm="broken").vma(BASE, BASE + 2 * P) \
        .pages(BASE, nr_pages=2)
    ck.process(13, ppid=10, comm="zombie", state=2)
    ck.reg_file(99, "/missing/lib.so", size=P)
    ck.process(14, ppid=10, comm="nofile").vma(BASE, BASE + P, kind="file",
                                                shmid=99)
    images = ck.write()
    broken = os.path.join(images, "pages-%d.img" % ck.procs[2].pages_id)
    os.truncate(broken, P)
    return images


def test_parallel_output_matches_sequential(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    images = tree(tmp_path / "img", root)
    runs = {}
    for jobs in ("1", "3"):
        cwd = tmp_path / ("j" + jobs)
        (cwd / "out").mkdir(parents=True)
        runs[jobs] = convert(images, "out", "--root", root, "--jobs", jobs,
                             cwd=str(cwd), check=3)[0]
    one, three = runs["1"], runs["3"]
    assert three.stdout == one.stdout
    assert three.stderr == one.stderr
    assert [ln.split(":")[0] for ln in one.stdout.splitlines()] == [
        "out/core.10", "out/core.11", "out/core.14"]
    err = one.stderr.splitlines()
    # warnings as they happen (in pstree order), then errors and notes
    assert [e.split(": ")[1] for e in err] == [
        "warning", "warning", "warning", "error", "note"]
    assert "pagemap-10.img: 1 pages were left" in err[0]
    assert "pagemap-11.img: 1 pages were left" in err[1]
    assert "/missing/lib.so: cannot read mapped file" in err[2]
    assert "pages-3.img: pages image has 4096 bytes" in err[3]
    assert "process 13 (zombie) skipped" in err[4]
    for pid in (10, 11, 14):
        a = (tmp_path / "j1" / "out" / ("core.%d" % pid)).read_bytes()
        b = (tmp_path / "j3" / "out" / ("core.%d" % pid)).read_bytes()
        assert a == b
    assert sorted(os.listdir(str(tmp_path / "j3" / "out"))) == [
        "core.10", "core.11", "core.14"]


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, proc, total):
        self.events.append(("start", proc.pid, proc.comm, total))

    def advance(self, n):
        self.events.append(("advance", n))

    def finish(self, proc):
        self.events.append(("finish", proc.pid))


def test_library_jobs_forward_progress_and_warnings(tmp_path):
    ck = synth.Checkpoint(tmp_path / "img")
    for pid in (20, 21, 22):
        ck.process(pid, comm="p%d" % pid).vma(BASE, BASE + 4 * P) \
            .pages(BASE, nr_pages=3).lazy(BASE + 3 * P, 1)
    images = ck.write()
    rec, warnings = Recorder(), []
    results = generate(images, str(tmp_path), jobs=2, progress=rec,
                       warn=lambda path, what: warnings.append(path))
    assert [r.pid for r in results] == [20, 21, 22]
    assert [(r.error, r.dumped, r.holes, r.lazy_pages) for r in results] == \
        [(None, 4 * P, P, 1)] * 3
    assert warnings == [os.path.join(images, "pagemap-%d.img" % pid)
                        for pid in (20, 21, 22)]
    starts = sorted(e[1:] for e in rec.events if e[0] == "start")
    # the total is the bytes to copy: the lazy page is a hole
    assert starts == [(pid, "p%d" % pid, 3 * P) for pid in (20, 21, 22)]
    assert sorted(e[1] for e in rec.events if e[0] == "finish") == [20, 21, 22]
    assert sum(e[1] for e in rec.events if e[0] == "advance") == 3 * 3 * P


def _two_big(tmp_path, pages=40000):
    """Two processes slow to convert: single pages farther apart than the
    writer gathers across (writer.GATHER_GAP), one kernel copy each."""
    stride = GATHER_GAP // P + 2
    ck = synth.Checkpoint(tmp_path / "img")
    for pid in (30, 31):
        p = ck.process(pid)
        p.vma(BASE, BASE + stride * pages * P)
        for i in range(pages):
            p.pages(BASE + stride * i * P, nr_pages=1)
    return ck.write()


def _start(images, out):
    os.makedirs(str(out))
    return subprocess.Popen([sys.executable, COREDUMP, "-i", images, "-o",
                             str(out), "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=signals_at_default)


def _wait_for_tmp(out, count, proc):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmps = [f for f in os.listdir(str(out)) if f.endswith(".tmp")]
        if len(tmps) >= count:
            return tmps
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    raise AssertionError("no temporary core appeared")


def test_interrupt_leaves_no_partial_core(tmp_path):
    images = _two_big(tmp_path)
    out = tmp_path / "out"
    p = _start(images, out)
    _wait_for_tmp(out, 2, p)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole group
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGINT, err  # dies of the signal
    assert "Traceback" not in err
    assert os.listdir(str(out)) == []


def test_sigterm_to_the_parent_stops_the_workers(tmp_path):
    images = _two_big(tmp_path)
    out = tmp_path / "out"
    p = _start(images, out)
    _wait_for_tmp(out, 2, p)
    with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
        children = [int(x) for x in f.read().split()]
    os.kill(p.pid, signal.SIGTERM)  # the parent only, as `kill PID` does
    _, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGTERM, err
    assert "Traceback" not in err
    assert os.listdir(str(out)) == []
    for c in children:  # stopped and reaped before the parent died
        assert not os.path.exists("/proc/%d" % c)


def test_killed_worker_is_an_error_and_the_others_are_written(tmp_path):
    images = _two_big(tmp_path)
    out = tmp_path / "out"
    p = _start(images, out)
    tmps = _wait_for_tmp(out, 2, p)
    with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
        children = [int(x) for x in f.read().split()]
    assert len(children) == 2, children
    os.kill(children[0], signal.SIGKILL)  # as the OOM killer would
    so, err = p.communicate(timeout=120)
    assert p.returncode == 3, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("coredump: error: ")
    assert lines[0].endswith("the conversion was killed by SIGKILL; no core "
                             "was written"), lines
    written = os.listdir(str(out))
    assert len(written) == 1 and not written[0].endswith(".tmp"), (written, tmps)
    dead = lines[0].split(": ")[2]
    assert os.path.basename(dead) not in written


def _small_tree_and_cores(tmp_path, count=300):
    """A tree of `count` small processes (enough for several batches), and
    the cores one plain run makes of it, in tmp_path/ref."""
    ck = synth.Checkpoint(tmp_path / "img")
    for k in range(count):
        ck.process(200 + k, ppid=0 if k == 0 else 200).vma(BASE, BASE + 4 * P) \
            .pages(BASE, nr_pages=2)
    images = ck.write()
    ref = tmp_path / "ref"
    ref.mkdir()
    generate(images, str(ref))
    return images, ref


def test_a_run_killed_outright_leaves_only_complete_cores(tmp_path):
    """SIGKILL to the whole run while cores wait in the workers' batches:
    every core.<pid> there is complete (a temporary is all that is left of
    the others, and the next run removes it)."""
    images, ref = _small_tree_and_cores(tmp_path)
    out = tmp_path / "out"
    p = _start(images, out)
    deadline = time.monotonic() + 60
    while not any(f.startswith("core.") for f in os.listdir(str(out))):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.001)
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=60)
    left = os.listdir(str(out))
    done = [f for f in left if f.startswith("core.")]
    assert 0 < len(done) < 300
    for f in done:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
    assert all(f.startswith(".core.") and f.endswith(".tmp")
               for f in left if f not in done)
    # the next run removes the temporaries and writes every core
    assert convert(images, out, "--jobs", "2")[0].returncode == 0
    assert sorted(os.listdir(str(out))) == sorted(os.listdir(str(ref)))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_amid_batches_leaves_complete_cores_only(tmp_path, jobs):
    """SIGINT while batches of small cores are being committed (in the
    background): the run dies of it, what is in place is complete, and no
    temporary is left."""
    images, ref = _small_tree_and_cores(tmp_path)
    out = tmp_path / "out"
    os.makedirs(str(out))
    p = subprocess.Popen([sys.executable, COREDUMP, "-i", images, "-o",
                          str(out), "--jobs", jobs], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         start_new_session=True, preexec_fn=signals_at_default)
    deadline = time.monotonic() + 60
    while not any(f.startswith("core.") for f in os.listdir(str(out))):
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.001)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGINT, err
    assert "Traceback" not in err
    left = os.listdir(str(out))
    assert 0 < len(left) < 300 and all(f.startswith("core.") for f in left), left
    for f in left:
        assert (out / f).read_bytes() == (ref / f).read_bytes(), f
