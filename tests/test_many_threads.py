"""A process of many threads, each unlike the others: its core as readers
see it, and a broken thread image among them.

The threads are read one at a time while their notes are written, so that
memory does not grow with them (images.Threads).  What a reader must still
find: the kernel's order of notes, each thread's own registers with CRIU's
system-call rewind undone in each, and gdb listing every thread; and a bad
thread image anywhere is one error naming it, nothing else, no core.
"""
import json
import os
import re
import subprocess

import pytest

from .helpers import synth
from .helpers.readers import eu_readelf_notes, to_u64
from .helpers.tools import convert, gdb, need, run_coredump

pytestmark = pytest.mark.slow

PID = 1000
COUNT = 300
STACK = 0x7ff000000000
MASK = (1 << 64) - 1


def expected_registers(i):
    """What the core must show for thread i of synth.varied_threads: the
    futex waits back after their `syscall` with -ERESTARTSYS, the
    nanosleeps with -ERESTART_RESTARTBLOCK, the others as saved."""
    regs = {"rsp": STACK + i * 4096 + 0x800, "rbx": i}
    if i % 3 == 0:
        regs.update(rip=0x400102, rax=-512 & MASK, orig_rax=202)
    elif i % 3 == 1:
        regs.update(rip=0x400202, rax=-516 & MASK, orig_rax=35)
    else:
        regs.update(rip=0x400300 + i % 64, rax=i, orig_rax=MASK)
    return regs


def _varied(path, count=COUNT, **kw):
    ck = synth.Checkpoint(path)
    p = ck.varied_threads(PID, count, **kw)
    return ck, p


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    d = tmp_path_factory.mktemp("many-threads")
    ck, _ = _varied(d / "images")
    ck.write()
    p, cores = convert(d / "images", d / "out", "-q")
    assert p.stderr == "", p.stderr
    return cores[PID]


def test_each_thread_has_its_notes_in_the_kernels_order(core):
    need("eu-readelf")
    out = subprocess.run(["eu-readelf", "-n", core], check=True,
                         capture_output=True, text=True).stdout
    kinds = [m.group(1) for m in re.finditer(r"^\s+(?:CORE|LINUX)\s+\d+\s+(.+)$",
                                             out, re.M)]
    per_thread = ["PRSTATUS", "FPREGSET", "X86_XSTATE"]
    # the first thread's PRSTATUS, then the process's notes, then its
    # register sets; every other thread's in turn; the XSAVE layout once
    assert kinds == (["PRSTATUS", "PRPSINFO", "SIGINFO", "AUXV", "FILE"]
                     + per_thread[1:] + per_thread * (COUNT - 1)
                     + ["<unknown>: 517"])


def _signal_set(text):
    """eu-readelf's "<1,5-6,8>" as a mask (signal n at bit n - 1)."""
    mask = 0
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        for n in range(int(lo), int(hi or lo) + 1):
            mask |= 1 << (n - 1)
    return mask


def test_each_thread_has_its_own_registers(core):
    threads, psinfo = eu_readelf_notes(core)
    assert len(threads) == COUNT
    assert psinfo["pid"] == str(PID)
    for i, th in enumerate(threads):
        regs = th["regs"]
        assert int(regs["pid"]) == PID + i
        want = expected_registers(i)
        got = {k: to_u64(regs[k]) for k in want}
        assert got == want, (i, got, want)
    out = subprocess.run(["eu-readelf", "-n", core], check=True,
                         capture_output=True, text=True).stdout
    held = [_signal_set(m) for m in re.findall(r"^\s+sighold: <([0-9,-]*)>$", out, re.M)]
    assert held == [(i * 2654435761) & 0xFFFFFFFF for i in range(COUNT)]


def test_gdb_lists_every_thread_where_it_stopped(core):
    out = gdb(core, "info threads", check=True)
    rows = re.findall(r"^\*?\s+(\d+)\s+LWP (\d+)\s+(0x[0-9a-f]+) in", out, re.M)
    assert [(int(n), int(lwp)) for n, lwp, _ in rows] == \
        [(i + 1, PID + i) for i in range(COUNT)], out[:2000]
    assert [int(pc, 16) for _, _, pc in rows] == \
        [expected_registers(i)["rip"] for i in range(COUNT)]


# -- a broken thread among many ------------------------------------------------

def _broken(tmp_path, breaker):
    """Convert the varied process whose thread 200 was broken by
    breaker(path of its core image), with a mapping whose pages were left
    for lazy restore (a warning, had the conversion gone on)."""
    ck, p = _varied(tmp_path / "images")
    p.vma(0x20000000, 0x20004000).lazy(0x20000000, 4)
    ck.write()
    bad = os.path.join(str(tmp_path / "images"), "core-%d.img" % (PID + 200))
    breaker(bad)
    out = tmp_path / "out"
    out.mkdir()
    return run_coredump("-i", tmp_path / "images", "-o", out), bad, out


def _assert_one_error(p, out, path, what):
    assert "Traceback" not in p.stderr, p.stderr
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr  # the error alone: no warning before it
    assert re.fullmatch(re.escape("coredump: error: %s: " % path) + what, lines[0]), \
        lines[0]
    assert os.listdir(out) == []       # nothing half-written left


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 20)


def test_truncated_thread_among_many(tmp_path):
    p, bad, out = _broken(tmp_path, _truncate)
    _assert_one_error(p, out, bad, r"truncated entry \(\d+ of \d+ bytes\)")


def test_missing_thread_among_many(tmp_path):
    p, bad, out = _broken(tmp_path, os.unlink)
    _assert_one_error(p, out, bad, "missing")


def test_warnings_still_come_when_the_threads_are_sound(tmp_path):
    p, _, out = _broken(tmp_path, lambda path: None)
    assert p.returncode == 3, p.stderr
    assert p.stderr.splitlines()[0].startswith("coredump: warning: "), p.stderr
    assert "lazy restore" in p.stderr
    assert os.listdir(out) == ["core.%d" % PID]


def test_broken_thread_of_one_process_leaves_the_others(tmp_path):
    ck = synth.Checkpoint(tmp_path / "images")
    ck.varied_threads(PID, 120)
    ck.varied_threads(2000, 120, ppid=PID)
    ck.write()
    bad = os.path.join(str(tmp_path / "images"), "core-%d.img" % (PID + 77))
    _truncate(bad)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", tmp_path / "images", "-o", out)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("coredump: error")]
    assert len(errors) == 1 and bad in errors[0], p.stderr
    assert p.returncode == 3, p.stderr  # some cores written, not all
    assert os.listdir(out) == ["core.2000"]
    threads, _ = eu_readelf_notes(str(out / "core.2000"))
    assert [int(t["regs"]["pid"]) for t in threads] == list(range(2000, 2120))


# -- memory ----------------------------------------------------------------------

def _peak_rss(images, out, *args):
    """Peak resident memory (bytes) of a conversion (or, with args, of
    that command on the images), from its rusage; and its output."""
    import sys
    from .helpers.paths import COREDUMP
    if not args:
        out.mkdir()
        args = ("-q", "-o", str(out))
    child = subprocess.Popen([sys.executable, COREDUMP, "-i", str(images)]
                             + list(args), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    text = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0
    return usage.ru_maxrss * 1024, text


def test_memory_does_not_grow_with_the_threads(tmp_path):
    """Ten times the threads, about the same peak memory: each thread is
    read as its notes are written, never all held (their registers were
    4.4 KiB a thread: 80 MiB more for the 18,000 threads added here)."""
    rss = {}
    for n in (2000, 20000):
        ck = synth.Checkpoint(tmp_path / ("images-%d" % n))
        ck.many_threads(PID, n)
        ck.write()
        rss[n], _ = _peak_rss(tmp_path / ("images-%d" % n),
                              tmp_path / ("out-%d" % n))
    assert rss[20000] - rss[2000] < 16 << 20, rss


def test_list_counts_the_threads_in_bounded_memory(tmp_path):
    """--list reads every thread (a broken one is its process's error)
    but keeps none: the same peak memory for ten times the threads."""
    rss = {}
    for n in (2000, 20000):
        ck = synth.Checkpoint(tmp_path / ("images-%d" % n))
        ck.many_threads(PID, n)
        ck.write()
        rss[n], text = _peak_rss(tmp_path / ("images-%d" % n), None,
                                 "--list", "--json")
        [row] = json.loads(text)["processes"]
        assert (row["pid"], row["threads"], row["error"]) == (PID, n, None)
    assert rss[20000] - rss[2000] < 16 << 20, rss


def test_list_names_a_broken_thread_among_many(tmp_path):
    ck, _ = _varied(tmp_path / "images")
    ck.write()
    bad = os.path.join(str(tmp_path / "images"), "core-%d.img" % (PID + 200))
    _truncate(bad)
    p = run_coredump("-i", tmp_path / "images", "--list")
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert bad in p.stdout + p.stderr and "truncated entry" in p.stdout + p.stderr
