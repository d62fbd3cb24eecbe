"""parallel.run_ordered with short jobs: a worker then holds more of them
and this process reads their messages a few at a time (SHORT_JOB); the
results, warnings and progress must still come exactly in job order, a
killed worker's jobs still go to the others, and long jobs keep the
shallow queue."""
import os
import signal
import time

from criu_coredump import parallel


def _sleeps(monkeypatch):
    """The COALESCE waits of this process (the workers are forked)."""
    slept = []
    real = time.sleep

    def sleep(s):
        slept.append(s)
        real(s)
    monkeypatch.setattr(parallel.time, "sleep", sleep)
    return slept


class Progress:
    def __init__(self):
        self.events = []

    def start(self, proc, total):
        self.events.append(("start", proc.pid))

    def advance(self, n):
        self.events.append(("advance", n))

    def finish(self, proc):
        self.events.append(("finish", proc.pid))


def test_short_jobs_come_in_order(monkeypatch):
    slept = _sleeps(monkeypatch)
    progress, warnings = Progress(), []

    def work(i, warn, prog):
        prog.start(type("P", (), {"pid": i, "comm": "c"})(), 1)
        if i % 7 == 0:
            warn("path%d" % i, "what")
        prog.finish(type("P", (), {"pid": i, "comm": "c"})())
        return i * 10

    n = 600
    results = parallel.run_ordered(n, work, 2, progress=progress,
                                   warn=lambda p, w: warnings.append(p))
    assert results == [i * 10 for i in range(n)]
    assert warnings == ["path%d" % i for i in range(0, n, 7)]
    assert progress.events == [e for i in range(n)
                               for e in (("start", i), ("finish", i))]
    assert slept and all(parallel.MIN_NAP <= s <= parallel.COALESCE for s in slept)


def test_long_jobs_are_not_held_deeper(monkeypatch):
    slept = _sleeps(monkeypatch)
    held = []

    def work(i, warn, prog):
        time.sleep(parallel.SHORT_JOB * 2)
        return i

    real_hand = parallel._Worker.short_jobs

    def short_jobs(self):
        held.append(real_hand(self))
        return held[-1]
    monkeypatch.setattr(parallel._Worker, "short_jobs", short_jobs)
    assert parallel.run_ordered(12, work, 2) == list(range(12))
    assert slept == [] and not any(held)


def test_a_worker_killed_amid_short_jobs(monkeypatch):
    """Killed with several jobs waiting in its pipe: the one it was in is
    lost, every other is done by the others, in order."""
    def work(i, warn, prog):
        if i == 300:
            os.kill(os.getpid(), signal.SIGKILL)
        return i

    results = parallel.run_ordered(500, work, 2,
                                   lost=lambda i, sig: ("lost", i, sig))
    assert results[300] == ("lost", 300, signal.SIGKILL)
    assert results[:300] + results[301:] == list(range(300)) + list(range(301, 500))


def test_messages_larger_than_a_pipe_arrive_whole():
    """A result, a warning and an exception each larger than a pipe's
    buffer (64 KiB) cross it in many reads, whole and in order."""
    def work(i, warn, prog):
        warn("w%d" % i, "x" * (100_000 + i))
        if i == 5:
            raise ValueError("y" * 200_000)
        return bytes([i]) * (300_000 + i)

    warned = []
    results = parallel.run_ordered(5, work, 2, warn=lambda p, w: warned.append((p, len(w))))
    assert results == [bytes([i]) * (300_000 + i) for i in range(5)]
    assert warned == [("w%d" % i, 100_000 + i) for i in range(5)]
    try:
        parallel.run_ordered(7, work, 2)
    except ValueError as exc:
        assert str(exc) == "y" * 200_000
    else:
        raise AssertionError("the worker's exception was not raised here")


_ORPHANS = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from criu_coredump import parallel

def work(i, warn, prog):
    with open(os.path.join(sys.argv[2], "%d" % os.getpid()), "w"):
        pass
    time.sleep(0.2)
    return i

parallel.run_ordered(100, work, 2)
"""


def test_workers_end_when_their_parent_is_killed(tmp_path):
    """SIGKILL leaves no handler to stop the workers: each must see its
    parent gone (a pipe's end) and exit, not wait for jobs forever."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    parent = subprocess.Popen([sys.executable, "-c", _ORPHANS, repo, str(tmp_path)])
    deadline = time.monotonic() + 30
    while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p) for p in os.listdir(tmp_path)]
    assert len(workers) == 2
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in workers if _running(pid)]
    assert not alive


def _running(pid):
    """Whether pid is a process that has not exited (a zombie has: its
    parent, killed, left it to init to reap)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_of_short_jobs_holds_about_hold_seconds_of_them():
    """DEPTH until its pace is known or when its jobs are long; for short
    jobs, HOLD seconds of them, between DEPTH and SHORT_DEPTH."""
    w = parallel._Worker(None, None, None)
    assert w.depth() == parallel.DEPTH
    w.pace = parallel.SHORT_JOB * 2
    assert w.depth() == parallel.DEPTH
    w.pace = parallel.HOLD / 20.5
    assert w.depth() == 21
    w.pace = parallel.HOLD / 1000
    assert w.depth() == parallel.SHORT_DEPTH
    w.pace = parallel.SHORT_JOB * 0.99  # 30 ms of jobs just under 5 ms
    assert w.depth() == int(parallel.HOLD / w.pace) + 1 == 7


def test_the_pace_is_the_workers_own_measure():
    """A job's seconds as its worker measured them, smoothed: not the
    time between two results here (read a few at a time after a nap)."""
    w = parallel._Worker(None, None, None)
    w.converted(0.004)
    assert w.pace == 0.004 and w.short_jobs()
    w.converted(0.05)  # a long one: no longer short
    assert abs(w.pace - (0.7 * 0.004 + 0.3 * 0.05)) < 1e-12
    assert not w.short_jobs() and w.ahead() == 0.0


def test_naps_follow_what_the_least_busy_worker_holds():
    """This process naps half of what the least busy worker holds,
    COALESCE at most, and not at all once one holds less than two
    MIN_NAPs of jobs or has jobs that are not short."""
    def worker(held, pace):
        w = parallel._Worker(None, None, None)
        w.jobs.extend(range(held))
        w.pace = pace
        return w
    short = parallel.SHORT_JOB / 10
    busy = worker(200, short)
    assert parallel.nap_for([busy]) == parallel.COALESCE
    assert parallel.nap_for([busy, worker(8, short)]) == 8 * short / 2
    assert parallel.nap_for([busy, worker(1, short)]) == 0.0  # below 2 MIN_NAPs
    assert parallel.nap_for([busy, worker(50, parallel.SHORT_JOB)]) == 0.0
    assert parallel.nap_for([]) == 0.0
