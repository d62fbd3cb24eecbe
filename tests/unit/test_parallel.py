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
    assert slept and set(slept) == {parallel.COALESCE}


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
