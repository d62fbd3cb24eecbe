"""Cores written and waiting for their fsync and rename, committed a batch at
a time.

A core is fsynced before it is renamed into place, so that it is complete or
absent even after a machine crash (writer.py).  Fsynced one after the other,
as each is written, a thousand small cores cost a thousand round trips to
the disk, each waiting for its own data, inode and a cache flush; the disk
serializes them, so a second --jobs worker barely helps (on ext4, 1.7 ms a
core: more than the conversion's own CPU time).  Instead each core's
writeback is started when it is written (CoreWriter's `defer`), and the
fsyncs and renames of the cores written since come together, when a batch
is full, holds enough data, is old enough, or when the converter has
nothing else to do: by then the data is on its way or on the disk, each
fsync is short, and the renames still come only after their own fsync.
A batch of THREAD_BYTES or more is committed by a thread of its own while
the next processes convert; a smaller one by the converting thread
(worth_a_thread says why).

With --jobs, the workers only write their cores and start their
writeback; each hands its core over (`hand_over`) and the parent commits
every worker's cores, by one task (`add_handed`), a batch at a time.
On btrfs each fsync is a commit of the log tree, and a log commit joined
by more than one task sleeps a scheduler tick (on a disk not taken for
an SSD) for the others to join: two workers committing their own cores
made --jobs 2 slower than one job there (1,000 small files written by
two processes took 6-10 s to fsync and rename by those two, 1.6-2.4 s
by one).  One committer leaves the log to one task, and on the other
file systems costs nothing measurable: the disk serialized two
committers' fsyncs.

A core waiting here is a registered temporary (lifecycle), removed on
SIGINT/SIGTERM/SIGHUP like any other (a handed one by its worker too,
which lives until the parent has committed its cores); after SIGKILL or a
crash it is a stale temporary that the next run removes; and the cores a
--jobs worker handed over before it was killed are committed all the same.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import time

from . import libc
from .errors import OutputError

# a batch is committed when it holds this many cores, this much data, or
# its first core has waited this long (a core's rename is not delayed long
# by a slow process converted after it)
MAX_CORES = 32
MAX_BYTES = 64 << 20
MAX_WAIT = 0.25
# a batch of this many cores is made durable by one syncfs (_synced)
SYNCFS_MIN = 2
# a batch of less data than this is committed by the converting thread
# itself, not by a thread of its own (worth_a_thread)
THREAD_BYTES = 8 << 20


class Pending:
    """The written, not yet committed cores of one converting process, in
    the order they were written."""

    def __init__(self):
        self.items = []   # (CoreWriter, CoreResult, inode of its temporary)
        self.bytes = 0
        self.since = 0.0
        self.settled = []  # results final since the last take_settled()
        self._thread = None  # the batch being committed in the background
        self._done = None    # its results, or the exception it raised
        # called by the background thread when its batch is committed
        self.on_done = None

    def add(self, writer, result, nbytes):
        """A core written with CoreWriter(defer=True), and its result."""
        if not self.items:
            self.since = time.monotonic()
        self.items.append((writer, result, os.fstat(writer.fd).st_ino))
        self.bytes += nbytes

    def hand_over(self, result):
        """In a --jobs worker: (temporary path, its inode) of the core of
        `result`, taken from here for the parent to commit (add_handed),
        its descriptor closed (its writeback is started); None if it has
        no core waiting.  It stays registered here, so that this worker's
        cleanup removes it, until the worker exits: after the parent has
        committed it."""
        for k, (w, r, ino) in enumerate(self.items):
            if r is result:
                del self.items[k]
                if not self.items:  # (a worker's one core, the usual case)
                    self.bytes = 0
                os.close(w.fd)
                w.fd = None
                return w.tmp, ino
        return None

    def add_handed(self, result, tmp, ino):
        """In the parent of --jobs: the core of `result` that a worker
        wrote at `tmp` (inode `ino`) and handed over, committed here with
        the others (opened by name when its batch is committed: no
        descriptor is held meanwhile)."""
        from .lifecycle import register_tmp
        from .writer import CoreWriter
        w = CoreWriter(result.path, sync_dir=False, defer=True)
        w.tmp = tmp
        register_tmp(tmp)
        if not self.items:
            self.since = time.monotonic()
        self.items.append((w, result, ino))
        # its data (the holes in it are not written)
        self.bytes += (result.dumped or 0) - (result.holes or 0)

    def busy(self):
        """Whether a batch is being committed in the background (not
        once it has called on_done, though its thread may not have
        ended yet)."""
        return self._thread is not None and self._done is None

    def worth_a_thread(self):
        """Whether the waiting cores hold enough data that their commit
        is left to a thread of its own, its wait for the disk overlapping
        the next conversions.  Small cores' data is on its way by then
        (their writeback started as they were written), and their commit
        is short; a thread for it cost more than it saved: the converting
        thread and the commit thread, on two CPUs, handed the
        interpreter's lock to each other at every system call of the
        commit, and a tree of 1,000 small processes took 0.53 s on tmpfs
        (0.42 s committed in line), 0.72 s on ext4 (0.65 s); with --jobs,
        the parent waited for its lock while the workers ran out of
        jobs."""
        return self.bytes >= THREAD_BYTES

    def due(self):
        """Whether the batch is to be committed now."""
        return bool(self.items) and (
            len(self.items) >= MAX_CORES or self.bytes >= MAX_BYTES
            or time.monotonic() - self.since >= MAX_WAIT)

    def before(self, size):
        """A core of about `size` bytes is about to be written: the waiting
        ones are committed first if it is a large one (their renames do
        not wait for it)."""
        if self.items and size >= MAX_BYTES:
            self.commit(background=True)

    def take_settled(self):
        """The results made final by the commits since the last call."""
        if self._thread is not None and self._done is not None:
            self.wait()
        done, self.settled = self.settled, []
        return done

    def commit(self, background=False):
        """Commit every waiting core (see _commit).  In the background: by
        a thread, while the caller converts the next processes (its fsyncs
        wait for the disk, not for the CPU); one batch at a time, and
        wait() waits for it."""
        items, self.items, self.bytes = self.items, [], 0
        self.wait()
        if background and items:
            import threading  # only where there are batches to overlap
            self._thread = threading.Thread(target=self._background,
                                            args=(items,), daemon=True)
            self._thread.start()
        elif items:
            self.settled.extend(self._commit(items))

    def _background(self, items):
        # the cleanup signals are for the main thread (lifecycle)
        from .lifecycle import CLEANUP_SIGNALS
        signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)
        try:
            self._done = self._commit(items)
        except BaseException as exc:  # re-raised by wait()
            self._done = exc
        if self.on_done is not None:
            self.on_done()

    def wait(self):
        """Wait for the batch committed in the background, if any."""
        if self._thread is None:
            return
        if self._done is None:
            self._thread.join()
        # else its batch is committed and the thread only returns: not
        # waited for (a join then waited for it to get the interpreter
        # back from this thread, which --jobs' parent did once a batch)
        self._thread = None
        done, self._done = self._done, None
        if isinstance(done, BaseException):
            raise done
        self.settled.extend(done)

    def _commit(self, items):
        """fsync and rename every core of items, in order; a core that
        could not be written has its result turned into that error.
        Returns the results, final."""
        # first every core's data, its writes overlapping the others' (and
        # its error, if any, reported here: it would not be again to fsync)
        for w, res, ino in items:
            if w.fd is None and not _reopen(w, ino):
                _failed(res, OutputError(res.path, "the conversion's process "
                                         "ended before the core was "
                                         "committed; no core was written"))
                continue
            err = _wait_written(w.fd)
            if err:
                w.discard()
                _failed(res, OutputError(res.path, "cannot write: %s"
                                         % os.strerror(err)))
        # then the cores' inodes and a cache flush: one syncfs for them
        # all, else one fsync each
        synced = _synced([w.fd for w, _, _ in items if w.fd is not None])
        for w, res, _ in items:
            if w.fd is not None and w.fd not in synced:
                try:
                    w.sync()
                except OutputError as err:
                    _failed(res, err)
        # then the renames, with the cleanup signals held once for them
        # all (not through the fsyncs: a signal waits for none of them)
        from .lifecycle import signals_held
        with signals_held():
            for w, res, _ in items:
                if w.fd is None:
                    continue  # failed above
                try:
                    w.commit(synced=True, held=True)
                except OutputError as err:
                    _failed(res, err)
        return [res for _, res, _ in items]

    def discard(self):
        """Remove every waiting core (the run stops with an exception)."""
        try:
            self.wait()
        except Exception:
            pass  # the run already stops with an exception
        items, self.items, self.bytes = self.items, [], 0
        for w, _, _ in items:
            w.discard()


_SYNC_FILE_RANGE_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER


def _wait_written(fd):
    """Write fd's dirty pages and wait for them (sync_file_range: data
    only, no metadata, no cache flush); returns 0 or the errno of a write
    that failed.  0 where the call does not exist: fsync does it all."""
    from .writer import libc_sync_file_range  # loaded: it wrote the core
    fn = libc_sync_file_range()
    if fn is None or fn(fd, 0, 0, _SYNC_FILE_RANGE_ALL) == 0:
        return 0
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP):
        return 0  # not for this file: fsync does it all
    return err


def _synced(fds):
    """Those of fds made durable, data and inode, by one syncfs() of their
    file system (all of them, or none: each is then fsynced).

    A batch's cores are small and many: fsynced one by one, each costs a
    cache flush of the device (XFS flushes even when its log has nothing
    to write) or a commit of the log tree (btrfs), serialized by the disk,
    and a tree converted by two --jobs workers waited for them, not for
    the CPU.  One syncfs writes and flushes them all at once.  Its cost is
    that it also writes what other programs left dirty on that file
    system; and it reports an error of the whole file system only, so on
    an error each core is fsynced, to find which could not be written."""
    if len(fds) < SYNCFS_MIN:
        return ()
    dev = os.fstat(fds[0]).st_dev
    if any(os.fstat(fd).st_dev != dev for fd in fds[1:]):
        return ()
    fn = _libc_syncfs()
    if fn is None or fn(fds[0]) != 0:
        return ()
    return set(fds)


def _libc_syncfs():
    return libc.function("syncfs", (ctypes.c_int,))


def _failed(res, err):
    res.path = None
    res.error = err


def _reopen(w, ino):
    """Open the temporary core a worker handed over (add_handed); False,
    and its name forgotten, if it is not there any more (removed by the
    worker's cleanup)."""
    from .lifecycle import discard
    try:
        fd = os.open(w.tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        discard(w.tmp)
        w.tmp = None
        return False
    if os.fstat(fd).st_ino != ino:  # not the file it wrote: not ours
        os.close(fd)
        from .lifecycle import unregister_tmp
        unregister_tmp(w.tmp)
        w.tmp = None
        return False
    w.fd = fd
    return True
