"""Run independent jobs (one core file each) in forked child processes.

A checkpoint of many processes converts faster with several cores busy, and
each core is still written by one streaming writer in one process, so memory
stays bounded per child.  Children are forked (they inherit the opened
checkpoint; nothing is pickled on the way in) from this single-threaded
process, at most `jobs` at a time, and report back through a pipe:

* warnings and progress, in job order: those of the lowest unfinished job
  as they happen, those of later jobs kept until its turn comes, so what a
  user sees (lines, a progress bar per core) comes in the same order as
  with one job; advances are batched every 0.1 s;
* the job's result, or the exception it raised, re-raised here after the
  other children are stopped (as the sequential loop would stop).

A child killed by a signal (the OOM killer) gives `lost(i, signum)`'s result.
"""
import os
import signal
import sys
import time
import types

from . import lifecycle

_BATCH_SECONDS = 0.1


def default_jobs():
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _ProgressProxy:
    """Stands for the parent's progress object in a child."""

    def __init__(self, conn):
        self.conn = conn
        self.pending = 0
        self.last = time.monotonic()

    def start(self, proc, total):
        self.conn.send(("start", proc.pid, proc.comm, total))

    def advance(self, n):
        self.pending += n
        now = time.monotonic()
        if now - self.last >= _BATCH_SECONDS:
            self.flush()
            self.last = now

    def flush(self):
        if self.pending:
            self.conn.send(("advance", self.pending))
            self.pending = 0

    def finish(self, proc):
        self.flush()
        self.conn.send(("finish", proc.pid, proc.comm))


def _child(conn, work, i, with_progress):
    lifecycle.forget_workers()
    lifecycle.install_signal_cleanup()
    # forked while the parent held them (see run_ordered)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, lifecycle.CLEANUP_SIGNALS)
    proxy = _ProgressProxy(conn) if with_progress else None
    try:
        res = work(i, lambda path, what: conn.send(("warn", path, what)), proxy)
        conn.send(("result", res))
    except BaseException as exc:  # reported to the parent, re-raised there
        try:
            conn.send(("raise", exc))
        except Exception:
            conn.send(("raise", RuntimeError("%s: %s" % (type(exc).__name__, exc))))
    finally:
        conn.close()


class _Job:
    """One child: its process, its end of the pipe, what it said."""

    def __init__(self, i, proc, conn):
        self.i = i
        self.proc = proc
        self.conn = conn
        self.events = []      # warnings and progress, until its turn comes
        self.result = None
        self.has_result = False
        self.raised = None


def run_ordered(count, work, jobs, warn=None, progress=None, lost=None):
    """Results of work(i, warn, progress) for i in range(count), in order,
    computed in at most `jobs` forked children at a time."""
    # imported here: one job, the common case, does not pay for it
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("fork")
    results = [None] * count
    jobs_by_index = {}    # started, and their warnings not all reported yet
    active = {}           # connection -> job whose child has not exited
    next_start = 0
    next_report = 0       # lowest job whose warnings are not all out yet

    def deliver(msg):
        kind = msg[0]
        if kind == "warn":
            if warn:
                warn(*msg[1:])
        elif progress is None:
            pass
        elif kind == "start":
            progress.start(types.SimpleNamespace(pid=msg[1], comm=msg[2]), msg[3])
        elif kind == "advance":
            progress.advance(msg[1])
        elif kind == "finish":
            progress.finish(types.SimpleNamespace(pid=msg[1], comm=msg[2]))

    def report():
        """Replay what the lowest unfinished jobs said, in job order."""
        nonlocal next_report
        while next_report < count and next_report in jobs_by_index:
            job = jobs_by_index[next_report]
            for msg in job.events:
                deliver(msg)
            del job.events[:]
            if job.conn in active:
                return
            del jobs_by_index[next_report]
            next_report += 1

    def handle(job, msg):
        kind = msg[0]
        if kind == "result":
            job.result, job.has_result = msg[1], True
        elif kind == "raise":
            job.raised = msg[1]
        elif job.i == next_report:
            deliver(msg)  # the job whose output comes now: live
        elif kind == "advance" and job.events and job.events[-1][0] == "advance":
            job.events[-1] = ("advance", job.events[-1][1] + msg[1])
        else:
            job.events.append(msg)

    def reap(job):
        del active[job.conn]
        job.proc.join()
        lifecycle.remove_worker(job.proc.pid)
        job.conn.close()
        if job.raised is not None:
            raise job.raised
        if job.has_result:
            results[job.i] = job.result
        elif lost is not None:
            code = job.proc.exitcode or 0
            results[job.i] = lost(job.i, -code if code < 0 else 0)

    try:
        while next_start < count or active:
            while next_start < count and len(active) < jobs:
                sys.stdout.flush()  # a child must not write our buffers again
                sys.stderr.flush()
                r, w = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child, args=(w, work, next_start,
                                                     progress is not None),
                                daemon=True)
                with lifecycle.signals_held():  # started and known, or neither
                    p.start()
                    lifecycle.add_worker(p.pid)
                w.close()
                job = _Job(next_start, p, r)
                active[r] = jobs_by_index[next_start] = job
                next_start += 1
            for conn in wait(list(active)):
                job = active[conn]
                try:
                    while conn.poll():
                        handle(job, conn.recv())
                except EOFError:  # the child has exited
                    reap(job)
            report()
    except BaseException:
        for job in active.values():
            if job.proc.is_alive():
                job.proc.terminate()  # SIGTERM: it removes its temporary core
        for job in active.values():
            job.proc.join()
            lifecycle.remove_worker(job.proc.pid)
        raise
    return results


def child_signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum
