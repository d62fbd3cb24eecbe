"""Run independent jobs (one core file each) in forked worker processes.

A checkpoint of many processes converts faster with several cores busy, and
each core is still written by one streaming writer in one process, so memory
stays bounded per worker.  `jobs` workers are forked once, from this
single-threaded process by os.fork (they inherit the opened checkpoint;
nothing is pickled on the way in), and are handed one job index after
another through a pipe, the next one always waiting there (DEPTH; more for
a worker whose jobs are short, whose messages this process then reads a
few at a time: SHORT_JOB); a tree of a thousand small processes costs
`jobs` forks, not a thousand, and a worker never waits for this process
between two jobs.  The message modules every job reads are loaded before
forking (convert.generate), not once per worker.  Before forking, the
collector's objects are frozen (gc.freeze): a worker's collections then
never walk, and so never copy, the pages of the objects it inherited.
Workers report back through a pipe:

* warnings and progress, in job order: those of the lowest unfinished job
  as they happen, those of later jobs kept until its turn comes, so what a
  user sees (lines, a progress bar per core) comes in the same order as
  with one job; advances are batched every 0.1 s;
* the job's result when it is converted, with its core written and its
  writeback started but not committed, or the exception it raised,
  re-raised here after the workers are stopped (as the sequential loop
  would stop).

This process commits (fsyncs and renames) every worker's cores, by one
thread, a batch at a time (batch.py says why one committer); a result is
final once its core is committed.  A worker is told its jobs are over once
its cores are committed: until then, its cleanup removes them if the run
is stopped.

A worker killed by a signal (the OOM killer) gives `lost(i, signum)`'s
result for the job it was in; the one waiting in its pipe, and the jobs
left, go to a new worker; the cores it handed over are committed all the
same.
"""
import collections
import gc
import os
import pickle
import signal
import struct
import sys
import time
import types

from . import lifecycle

_BATCH_SECONDS = 0.1

# The pipes carry messages of our own framing, not multiprocessing's
# Connection (nor its import: 8 ms of a run's serial start): a worker's
# messages are each a length and a pickle, written at once, and this
# process reads all a worker has written in one read (a Connection is one
# read for the length, one for the message, and one poll, which makes a
# selector, to learn whether another is there: 50 us of this process a
# job, taken from the workers on a machine of two CPUs); job indexes go
# the other way as 32-bit integers, as many in one write as are handed.
_LENGTH = struct.Struct("<I")
_NO_MORE_JOBS = 0xFFFFFFFF


def _send(fd, message):
    """Write one message, whole (the reader waits for all of it)."""
    data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


class _Messages:
    """The reading end of a worker's message pipe (non-blocking)."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()
        os.set_blocking(fd, False)

    def read(self):
        """(the messages complete in the pipe now, whether the worker has
        closed its end and all it wrote is read)."""
        ended = False
        while True:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                ended = True
                break
            self.buf += chunk
        messages, pos, buf = [], 0, self.buf
        while len(buf) - pos >= 4:
            size, = _LENGTH.unpack_from(buf, pos)
            if len(buf) - pos - 4 < size:
                break
            messages.append(pickle.loads(buf[pos + 4:pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
        return messages, ended


class _Child:
    """A forked worker process: what multiprocessing.Process gave us, for a
    process forked here (os.fork)."""

    def __init__(self, pid):
        self.pid = pid
        self.exitcode = None  # once reaped: its status, -signal if killed

    def _reaped(self, status):
        self.exitcode = os.waitstatus_to_exitcode(status)

    def join(self):
        if self.exitcode is None:
            self._reaped(os.waitpid(self.pid, 0)[1])

    def is_alive(self):
        if self.exitcode is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return True
        self._reaped(status)
        return False

    def terminate(self):
        if self.exitcode is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def default_jobs():
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class _ProgressProxy:
    """Stands for the parent's progress object in a child."""

    def __init__(self, send):
        self.send = send
        self.pending = 0
        self.last = time.monotonic()

    def start(self, proc, total):
        self.send(("start", proc.pid, proc.comm, total))

    def advance(self, n):
        self.pending += n
        now = time.monotonic()
        if now - self.last >= _BATCH_SECONDS:
            self.flush()
            self.last = now

    def flush(self):
        if self.pending:
            self.send(("advance", self.pending))
            self.pending = 0

    def finish(self, proc):
        self.flush()
        self.send(("finish", proc.pid, proc.comm))


class _Wakeup:
    """A pipe the signal module writes a byte to whenever a signal arrives
    (signal.set_wakeup_fd), waited on beside the pipes we read.

    Python runs a signal's handler between bytecodes; the C handler only
    notes the signal.  One that lands after the last check and before a
    blocking read's system call would not interrupt the read, and its
    handler would wait for the read to end: a worker waiting for its next
    job would never remove its temporaries and exit, and the parent,
    waiting for it (lifecycle.stop_workers), would hang.  Waiting on this
    pipe too, the wait ends at once and the handler runs."""

    def __init__(self):
        self.fd = None
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: its handlers run elsewhere
            old = None
        if old is None or old != -1:  # or the caller's own (asyncio): kept
            if old is not None:
                signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return
        self.fd, self._w = r, w

    def drain(self):
        try:
            os.read(self.fd, 512)
        except BlockingIOError:
            pass

    def wait_readable(self, fd):
        """Wait until fd has something (or its end) to read, the
        handler of any signal that arrives meanwhile run."""
        if self.fd is None:
            return
        import select
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        poll.register(self.fd, select.POLLIN)
        while True:
            ready = poll.poll()
            # a signal's handler has run by now (checked after each call)
            if any(fd != self.fd for fd, _ in ready):
                return
            self.drain()

    def close(self):
        if self.fd is None:
            return
        signal.set_wakeup_fd(-1)
        os.close(self.fd)
        os.close(self._w)
        self.fd = None


def _worker(tasks, out, work, with_progress, pending):
    """A worker's life: job indexes read from the pipe `tasks` until
    _NO_MORE_JOBS comes, each job's messages and result written to the
    pipe `out`, with the core it wrote in `pending` handed over for this
    process's parent to commit."""
    lifecycle.forget_workers()
    lifecycle.install_signal_cleanup()
    # the parent's wakeup pipe is its own; this one is this worker's
    signal.set_wakeup_fd(-1)
    wakeup = _Wakeup()
    # forked while the parent held them (see run_ordered)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, lifecycle.CLEANUP_SIGNALS)

    def send(message):
        _send(out, message)
    proxy = _ProgressProxy(send) if with_progress else None

    def warn(path, what):
        send(("warn", path, what))

    def attempt(fn):
        try:
            fn()
        except BaseException as exc:  # reported to the parent, re-raised there
            try:
                send(("raise", exc))
            except Exception:
                send(("raise", RuntimeError("%s: %s" % (type(exc).__name__, exc))))

    def convert(i):
        began = time.monotonic()
        res = work(i, warn, proxy)
        # its core, written, for the parent to commit
        send(("converted", res,
              pending.hand_over(res) if pending is not None else None,
              time.monotonic() - began))

    held = collections.deque()  # indexes read, not begun
    partial = b""
    while True:
        if not held:
            wakeup.wait_readable(tasks)
            chunk = os.read(tasks, 4096)
            # its end: the parent is gone (an end may not come when it is
            # not: the workers forked later hold this pipe's other end too)
            if not chunk:
                break
            chunk = partial + chunk
            whole = len(chunk) - len(chunk) % 4
            held.extend(struct.unpack("<%dI" % (whole // 4), chunk[:whole]))
            partial = chunk[whole:]
        i = held.popleft()
        # no jobs left, and every core handed over committed
        if i == _NO_MORE_JOBS:
            break
        attempt(lambda: convert(i))
    os.close(out)


def _start_child(target, args, close_in_child):
    """Fork a process that runs target(*args) and exits: 0 when it
    returns, 1 when it raises (its traceback on stderr), the code of a
    SystemExit.  It first closes the descriptors in `close_in_child`
    (the ends of its pipes that only this process uses)."""
    pid = os.fork()
    if pid:
        return _Child(pid)
    code = 1
    try:
        for fd in close_in_child:
            os.close(fd)
        target(*args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


class _Job:
    """One job: what its worker said, until its turn comes, and its end."""

    def __init__(self, i):
        self.i = i
        self.events = []      # warnings and progress, until its turn comes
        self.done = False


class _Worker:
    """One forked worker: its process, the pipe that hands it jobs, the
    pipe it answers on, the jobs it holds (the first is the one it works
    on, the next one waits in its pipe), and how many of the cores it
    handed over are not committed yet."""

    def __init__(self, proc, tasks, messages):
        self.proc = proc
        self.tasks = tasks        # the write end of its job pipe
        self.messages = messages  # its message pipe (_Messages)
        self.jobs = collections.deque()
        self.unsettled = 0
        self.pace = None   # seconds a job, smoothed

    def converted(self, seconds):
        """One of its jobs is done, in `seconds` of the worker's own
        clock: its pace follows (measured there, not here: the results
        of a short job come a few at a time, after a nap)."""
        self.pace = (seconds if self.pace is None
                     else 0.7 * self.pace + 0.3 * seconds)

    def ahead(self):
        """About how many seconds of jobs it holds (0 unless short)."""
        return len(self.jobs) * self.pace if self.short_jobs() else 0.0

    def short_jobs(self):
        return self.pace is not None and self.pace < SHORT_JOB

    def close_tasks(self):
        """Close this process's end of its job pipe (no more jobs)."""
        if self.tasks is not None:
            os.close(self.tasks)
            self.tasks = None

    def close(self):
        """Close this process's ends of both its pipes (it has exited)."""
        os.close(self.messages.fd)
        self.close_tasks()

    def depth(self):
        """How many jobs it is to hold: DEPTH, or for a worker of short
        jobs about HOLD seconds of them (SHORT_DEPTH at most)."""
        if not self.short_jobs():
            return DEPTH
        return max(DEPTH, min(SHORT_DEPTH, int(HOLD / max(self.pace, 1e-6)) + 1))


# jobs a worker holds: the next one waits in its pipe while it works, so it
# never waits for this process (busy, or not scheduled) between two jobs
DEPTH = 2
# A worker whose jobs take less than SHORT_JOB seconds each (a tree of
# small processes) holds HOLD seconds of them (SHORT_DEPTH at most), and
# this process, instead of waking for each result, naps while every worker
# has jobs in hand (nap_for): one wake-up then reads the results of
# several jobs, commits their cores and tops the workers up.  A wake-up
# is dear when it takes a CPU from a worker: on a virtual machine of two
# CPUs, where a context switch is slow, each cost the worker it preempted
# 50-100 us of CPU besides this process's own (a thousand 0.4-ms jobs, one
# wake-up for each result: the run took 1.3x the CPU of two processes
# that converted half the tree each and never heard from this one).
# Holding 10 ms of jobs and napping 2 ms at a time until the last jobs
# were handed out, then woken for each of the last 64 results, this
# process woke 120 times and the tree took 1.26x one job's CPU (1.43x its
# throughput on tmpfs); holding 30 ms and napping 10 ms, down to half what
# the least busy worker holds as the last jobs run out, 35 times, 1.17x
# (1.50x).  The pace is the worker's own measure of its jobs: the time
# between two results read here after a nap says nothing.  A long job
# keeps DEPTH: a worker never holds many jobs behind one that takes a
# while; a short job that turns out long holds at most HOLD behind it.
SHORT_JOB = 0.005
SHORT_DEPTH = 256
HOLD = 0.03
COALESCE = 0.01
MIN_NAP = 0.001


def nap_for(workers):
    """How long this process may sleep before reading the workers'
    results: half what the least busy of them holds, COALESCE at most;
    0 (wait for their next message) when one holds less than two
    MIN_NAPs of jobs, or its jobs are not short."""
    ahead = min((w.ahead() for w in workers), default=0.0)
    return min(COALESCE, ahead / 2) if ahead >= 2 * MIN_NAP else 0.0


def run_ordered(count, work, jobs, warn=None, progress=None, lost=None,
                pending=None):
    """Results of work(i, warn, progress) for i in range(count), in order,
    computed by at most `jobs` forked workers.  `pending` (a batch.Pending,
    empty) is where work() leaves the core it wrote: the worker hands it
    over, and this process commits every worker's cores, one task at a
    time (batch.py says why), a batch at a time."""
    # imported here: one job, the common case, does not pay for it
    import selectors
    from .batch import MAX_WAIT

    results = [None] * count
    jobs_by_index = {}    # handed out, and their warnings not all reported yet
    active = {}           # message pipe -> worker that has not exited
    todo = collections.deque(range(count))  # not handed out (or to hand again)
    next_report = 0       # lowest job whose warnings are not all out yet
    selector = selectors.DefaultSelector()
    wakeup = None
    committer = owners = None
    if pending is not None:
        from .batch import Pending
        committer = Pending()  # the cores the workers handed over
        owners = {}            # id(result) -> the worker that wrote its core
        done_r, done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

        def batch_done():  # in the committer's thread: wakes the select
            try:
                os.write(done_w, b".")
            except OSError:
                pass
        committer.on_done = batch_done
        selector.register(done_r, selectors.EVENT_READ, "batch done")

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
            if not job.done:
                return
            del jobs_by_index[next_report]
            next_report += 1

    def hand_out(worker, depth=None):
        """Jobs to this worker until it holds `depth` (its depth());
        when none is left
        and it has converted those it held and its cores are committed,
        the end of its jobs (until then, it removes them if stopped)."""
        if depth is None:
            depth = worker.depth()
        if worker.tasks is None:
            return
        if not todo:
            if worker.jobs or worker.unsettled:
                return
            try:
                os.write(worker.tasks, struct.pack("<I", _NO_MORE_JOBS))
            except OSError:
                pass
            worker.close_tasks()
            return
        handed = [todo[k] for k in range(min(len(todo), depth - len(worker.jobs)))]
        if not handed:
            return
        try:
            # at most SHORT_DEPTH indexes (1 KiB, under PIPE_BUF): one
            # atomic write, never blocked
            os.write(worker.tasks, struct.pack("<%dI" % len(handed), *handed))
        except OSError:  # it has died: reap() starts another
            return
        for i in handed:
            todo.popleft()
            job = jobs_by_index[i] = _Job(i)
            worker.jobs.append(job)

    def start_worker():
        sys.stdout.flush()  # a worker must not write our buffers again
        sys.stderr.flush()
        task_r, task_w = os.pipe2(os.O_CLOEXEC)
        r, w = os.pipe2(os.O_CLOEXEC)
        gc.freeze()  # see the module's docstring
        try:
            with lifecycle.signals_held():  # started and known, or neither
                # the worker keeps none of this process's ends of the
                # pipes, its own or the other workers': once this process
                # is gone, it reads the end of its jobs
                ours = [task_w, r]
                for other in active.values():
                    ours.append(other.messages.fd)
                    if other.tasks is not None:
                        ours.append(other.tasks)
                p = _start_child(_worker, (task_r, w, work, progress is not None,
                                           pending), ours)
                lifecycle.add_worker(p.pid)
        finally:
            gc.unfreeze()
            os.close(task_r)
            os.close(w)
        worker = _Worker(p, task_w, _Messages(r))
        active[r] = worker
        selector.register(r, selectors.EVENT_READ, worker)
        return worker

    def commit():
        """Once the batch committed in the background is done: its results
        are final (turned into errors where a core could not be written),
        and a worker whose cores are all committed may end; the next batch
        begins when it is due (batch.py), or at once when every job is
        handed out (the workers then wait for their cores' commit)."""
        if committer.busy():
            return
        if committer.due() or not todo:
            # (after waiting for the last)
            committer.commit(background=committer.worth_a_thread())
        else:
            committer.wait()
        for res in committer.take_settled():
            worker = owners.pop(id(res))
            worker.unsettled -= 1
            if not worker.unsettled:
                hand_out(worker)

    def handle(worker, msg):
        kind = msg[0]
        if kind == "raise":
            raise msg[1]
        job = worker.jobs[0]
        if kind == "converted":
            worker.converted(msg[3])
            results[job.i] = msg[1]
            job.done = True  # all it says is said; its result may change
            worker.jobs.popleft()
            if msg[2] is not None:  # its core, to commit
                committer.add_handed(msg[1], *msg[2])
                owners[id(msg[1])] = worker
                worker.unsettled += 1
        elif job.i == next_report:
            deliver(msg)  # the job whose output comes now: live
        elif kind == "advance" and job.events and job.events[-1][0] == "advance":
            job.events[-1] = ("advance", job.events[-1][1] + msg[1])
        else:
            job.events.append(msg)

    def reap(worker):
        """The worker has exited: after its last job, or killed in one."""
        selector.unregister(worker.messages.fd)
        del active[worker.messages.fd]
        worker.proc.join()
        lifecycle.remove_worker(worker.proc.pid)
        worker.close()
        if worker.jobs:
            job = worker.jobs.popleft()  # the one it was killed in
            code = worker.proc.exitcode or 0
            if lost is not None:
                results[job.i] = lost(job.i, -code if code < 0 else 0)
            job.done = True
            # the ones it had not begun go to the others
            todo.extendleft(sorted((j.i for j in worker.jobs), reverse=True))
        if todo:
            hand_out(start_worker())  # the jobs left need a worker

    try:
        workers = [start_worker() for _ in range(min(jobs, count))]
        for depth in range(1, DEPTH + 1):  # one each first, then the next
            for worker in workers:
                hand_out(worker, depth)
        wakeup = _Wakeup()  # a signal's handler runs at once (see there)
        if wakeup.fd is not None:
            selector.register(wakeup.fd, selectors.EVENT_READ, None)
        while active:
            timeout = None  # until a message, or the batch is old enough
            if committer is not None and committer.items and not committer.busy():
                timeout = max(0.0, committer.since + MAX_WAIT - time.monotonic())
            for key, _ in selector.select(timeout):
                worker = key.data
                if worker is None:
                    wakeup.drain()
                    continue
                if worker == "batch done":
                    os.read(done_r, 512)
                    continue
                # all it said meanwhile (several jobs' worth after a
                # nap: nap_for), not one message a select
                messages, ended = worker.messages.read()
                for msg in messages:
                    handle(worker, msg)
                if ended:  # the worker has exited
                    reap(worker)
                elif messages:
                    # its next jobs, in one write for all the results read
                    hand_out(worker)
            if committer is not None:
                commit()
            report()
            nap = nap_for(active.values())
            if nap:
                time.sleep(nap)  # see SHORT_JOB
        if committer is not None:  # those of workers killed meanwhile
            committer.commit()
            committer.wait()
            committer.take_settled()
    except BaseException:
        for worker in active.values():
            if worker.proc.is_alive():
                worker.proc.terminate()  # SIGTERM: it removes its temporary core
        for worker in active.values():
            worker.proc.join()
            lifecycle.remove_worker(worker.proc.pid)
            worker.close()
        if committer is not None:
            committer.discard()  # the cores handed over, not committed
        raise
    finally:
        selector.close()
        if wakeup is not None:
            wakeup.close()
        if committer is not None:
            os.close(done_r)
            os.close(done_w)
    return results


def child_signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return "signal %d" % signum
