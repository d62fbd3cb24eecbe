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

A core waiting here is a registered temporary (lifecycle), removed on
SIGINT/SIGTERM/SIGHUP like any other; after SIGKILL or a crash it is a
stale temporary that the next run removes; and if a --jobs worker dies
with cores waiting here, the parent commits them for it (`adopt`).
"""
from __future__ import annotations

import errno
import os
import time

from .errors import OutputError

# a batch is committed when it holds this many cores, this much data, or
# its first core has waited this long (a core's rename is not delayed long
# by a slow process converted after it)
MAX_CORES = 32
MAX_BYTES = 64 << 20
MAX_WAIT = 0.25


class Pending:
    """The written, not yet committed cores of one converting process, in
    the order they were written."""

    def __init__(self):
        self.items = []   # (CoreWriter, CoreResult, inode of its temporary)
        self.bytes = 0
        self.since = 0.0
        self.settled = []  # results final since the last take_settled()

    def add(self, writer, result, nbytes):
        """A core written with CoreWriter(defer=True), and its result."""
        if not self.items:
            self.since = time.monotonic()
        self.items.append((writer, result, os.fstat(writer.fd).st_ino))
        self.bytes += nbytes

    def tmp_of(self, result):
        """(temporary path, its inode) of the core of `result` waiting
        here, or None."""
        for w, r, ino in reversed(self.items):
            if r is result:
                return w.tmp, ino
        return None

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
            self.commit()

    def take_settled(self):
        """The results made final by the commits since the last call."""
        done, self.settled = self.settled, []
        return done

    def commit(self):
        """fsync and rename every waiting core, in order; a core that could
        not be written has its result turned into that error.  The results,
        final, are added to `settled`."""
        items, self.items, self.bytes = self.items, [], 0
        # first every core's data, its writes overlapping the others' (and
        # its error, if any, reported here: it would not be again to fsync)
        for w, res, _ in items:
            err = _wait_written(w.fd)
            if err:
                w.discard()
                _failed(res, OutputError(res.path, "cannot write: %s"
                                         % os.strerror(err)))
        # then each fsync has only the core's inode and a cache flush left
        for w, res, _ in items:
            if w.fd is None:
                continue  # failed above
            try:
                w.commit()
            except OutputError as err:
                _failed(res, err)
        self.settled.extend(res for _, res, _ in items)

    def discard(self):
        """Remove every waiting core (the run stops with an exception)."""
        items, self.items, self.bytes = self.items, [], 0
        for w, _, _ in items:
            w.discard()


_SYNC_FILE_RANGE_ALL = 1 | 2 | 4  # WAIT_BEFORE | WRITE | WAIT_AFTER
_sync_file_range = None


def _wait_written(fd):
    """Write fd's dirty pages and wait for them (sync_file_range: data
    only, no metadata, no cache flush); returns 0 or the errno of a write
    that failed.  0 where the call does not exist: fsync does it all."""
    global _sync_file_range
    if _sync_file_range is None:
        import ctypes  # already loaded by writer.py
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_uint]
        except (OSError, AttributeError):
            fn = False
        _sync_file_range = fn
    if not _sync_file_range:
        return 0
    if _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_ALL) == 0:
        return 0
    import ctypes
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ESPIPE, errno.EOPNOTSUPP):
        return 0  # not for this file: fsync does it all
    return err


def _failed(res, err):
    res.path = None
    res.error = err


def adopt(result, tmp, ino):
    """Commit a core that a --jobs worker wrote completely but died before
    committing: fsync its temporary and rename it into place.  If the
    worker had already renamed it (killed between its renames), the core
    in place is that file.  Returns the result, final."""
    from .lifecycle import discard
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            try:
                if os.stat(result.path).st_ino == ino:
                    return result  # renamed after its fsync
            except OSError:
                pass
        _failed(result, OutputError(result.path, "the conversion's process "
                                    "ended before the core was committed; "
                                    "no core was written"))
        return result
    try:
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        discard(tmp)
        _failed(result, OutputError(result.path, "cannot write: %s" % e.strerror))
        return result
    os.close(fd)
    try:
        os.replace(tmp, result.path)
    except OSError as e:
        discard(tmp)
        _failed(result, OutputError(result.path, "cannot replace it: %s" % e.strerror))
    return result
