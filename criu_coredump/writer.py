"""Stream one ELF core file.

The notes are written first, at their fixed offset; their size then fixes
every other offset (elf.compute_layout); the headers (elf.headers) go in
front, and each segment's extents (memory.Segment.extents) are copied in
place straight from their source file with os.copy_file_range (sendfile or
a bounded buffered copy where that is not possible); what no extent covers
stays a hole, so the core is sparse and memory use does not grow with the
size of the process.  A segment that is only runs of its process's pages
image comes as arrays (sources.Batch) and is copied by _copy_batch, the
same way, without a Python object per run.

The core is written to a temporary file in the output directory, fsynced
and renamed into place once complete, so a `core.<pid>` is either complete or
absent, even after a machine crash.  Writeback of what is copied is started
as the copy goes (sync_file_range), so the final fsync overlaps the copy
instead of waiting for the whole core at the end.

A caller writing many small cores defers that last step (`defer`): the core
is written, its writeback started, and commit() later fsyncs it and renames
it into place, one batch of cores after the other.  The guarantee is the
same (no core is renamed before its own fsync returned), but the cores'
writes overlap one another instead of each core waiting for its own round
trip to the disk: a thousand small cores fsynced in turn cost a device
flush and a wait each, serialized by the disk even with two writers.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
from collections.abc import Sequence

from . import elf, imagedir, libc, lifecycle
from .errors import BadImage, OutputError
from .lifecycle import TMP_SUFFIX, tmp_prefix

COPY_CHUNK = 1 << 20
DST_ALIGN = 64 << 10
CFR_CHUNK = 64 << 20  # per copy_file_range call: signals are handled between


# errnos of a copy that are the destination's fault (the source is only read)
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# errnos meaning "this call cannot copy between these two files", not "I/O
# failed": the next method is tried
_CANNOT = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
           errno.EBADF)
_methods = {"copy_file_range": hasattr(os, "copy_file_range"),
            "sendfile": hasattr(os, "sendfile")}


def _write_all(fd, data, off, dst_name, src_name=None):
    """pwrite all of data at off (a short write is continued); an error is
    OutputError naming the core, or BadImage naming `src_name` when data is
    a mapped view of it that could not be read (_source_view)."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            done += os.pwrite(fd, view[done:], off + done)
    except OSError as e:
        raise _write_error(e, dst_name, src_name) from None


def _write_error(e, dst_name, src_name):
    """The error for a failed write: EFAULT is the kernel failing to read
    a mapped source (_source_view: the file shrank, or an I/O error)."""
    if e.errno == errno.EFAULT and src_name is not None:
        return BadImage(src_name, "cannot read: %s (it changed during the "
                        "conversion?)" % e.strerror)
    return OutputError(dst_name, "cannot write: %s" % e.strerror)


# A pages image is mapped rather than read where many small runs of it are
# gathered (_Gather, _copy_batch_holes): the kernel then copies each run
# straight from the image's page cache into the core's, instead of a read
# copying the whole span into a buffer first (a sparsely touched heap of
# 1 GiB on tmpfs: the read was a seventh of the conversion).  Only system
# calls ever touch a mapped view, never Python: a mapped file that shrinks
# or fails to read then makes the write fail with EFAULT (a BadImage),
# where a load would kill the process with SIGBUS.
MAP_MIN = 256 << 10


def _source_view(source, src, n, off):
    """Up to n bytes at `off` of an opened image, fewer at its end: a view
    of a mapping of it (a pages image, n at least MAP_MIN), else bytes
    read."""
    if n < MAP_MIN or src.fd is None or not getattr(source, "mappable", False):
        return imagedir.pread(src, n, off)
    n = min(n, imagedir.length(src) - off)
    if n <= 0:
        return b""
    start = src.base + off
    lead = start % mmap.ALLOCATIONGRANULARITY
    try:
        m = mmap.mmap(src.fd, lead + n, prot=mmap.PROT_READ,
                      offset=start - lead)
    except (OSError, ValueError):
        return imagedir.pread(src, n, off)
    return memoryview(m)[lead:lead + n]


def _copy_once(src_fd, dst_fd, n, src_off, dst_off, src_name, dst_name):
    """Copy up to n bytes at the given offsets; returns the count (0 at the
    source's EOF).  os.copy_file_range keeps the data in the kernel (and may
    share blocks); sendfile does too where copy_file_range refuses (another
    file system on kernels before 5.3, /proc files); else a buffered copy of
    at most COPY_CHUNK bytes.  An error reading the source is BadImage naming
    it, one writing the core is OutputError naming the core."""
    for method in ("copy_file_range", "sendfile"):
        if not _methods[method]:
            continue
        try:
            if method == "copy_file_range":
                return os.copy_file_range(src_fd, dst_fd, min(n, CFR_CHUNK),
                                          src_off, dst_off)
            os.lseek(dst_fd, dst_off, os.SEEK_SET)
            return os.sendfile(dst_fd, src_fd, src_off, min(n, CFR_CHUNK))
        except OSError as e:
            if e.errno in _OUTPUT_ERRNOS:
                raise OutputError(dst_name, "cannot write: %s" % e.strerror) from None
            if e.errno not in _CANNOT:
                raise BadImage(src_name, "cannot read: %s" % e.strerror) from None
            if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
                _methods[method] = False  # never works here
    try:
        buf = os.pread(src_fd, min(n, COPY_CHUNK), src_off)
    except OSError as e:
        raise BadImage(src_name, "cannot read: %s" % e.strerror) from None
    _write_all(dst_fd, buf, dst_off, dst_name)
    return len(buf)


def copy_range(src_fd, dst_fd, length, src_off, dst_off, src_name, dst_name):
    """Copy length bytes; returns bytes copied (less at the source's EOF,
    the rest staying a hole).

    A long copy starts with the part up to the next DST_ALIGN boundary of the
    core: the kernel copies through a 64 KiB pipe and gives the page cache
    large folios only to writes that start aligned, so a copy that starts
    one page past a boundary costs 40% more system time (measured on ext4,
    Linux 6.18: 0.48 s against 0.35 s a GiB)."""
    done = 0
    head = -dst_off % DST_ALIGN
    step = head if head and length > head + DST_ALIGN else length
    while done < length:
        got = _copy_once(src_fd, dst_fd, step - done, src_off + done,
                         dst_off + done, src_name, dst_name)
        if got == 0:
            break
        done += got
        if done == step:
            step = length
    return done


WRITEBACK_STEP = 32 << 20
_SYNC_FILE_RANGE_WRITE = 2


def libc_sync_file_range():
    """libc's sync_file_range (None when there is none).  batch.py waits
    with it too."""
    return libc.function("sync_file_range", (ctypes.c_int, ctypes.c_int64,
                                             ctypes.c_int64, ctypes.c_uint))


class _Writeback:
    """Starts writeback of every WRITEBACK_STEP bytes written (without
    waiting), so dirty pages never pile up and fsync has little left to do.

    sync_file_range runs in a thread of its own: on a file system that
    allocates blocks at writeback (ext4, XFS), the call itself maps the
    blocks and submits the I/O, and it sleeps while the device's queue is
    full.  In the copying thread that stalled the copy as often as the disk
    was busy, and the disk idled while the next step was copied; in its
    own thread the disk is kept busy while the copy goes on.  close()
    waits for it: before the core's fsync, and before its descriptor is
    closed."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = 0
        self.start = None  # lowest core offset written since the last kick
        self._fn = libc_sync_file_range()
        self._queue = self._thread = None

    def wrote(self, offset, n):
        """n bytes were written at offset (the core is written front to back)."""
        if self.start is None:
            self.start = offset
        self.pending += n
        if self.pending >= WRITEBACK_STEP and self._fn is not None:
            end = offset + n
            self._kick(self.start, end - self.start)
            self.pending = 0
            self.start = None

    def _kick(self, start, n):
        if self._thread is None:
            import queue
            import threading
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="writeback")
            self._thread.start()
        self._queue.put((start, n))

    def _run(self):
        fn, fd, get = self._fn, self.fd, self._queue.get
        while True:
            item = get()
            if item is None:
                return
            fn(fd, item[0], item[1], _SYNC_FILE_RANGE_WRITE)

    def close(self):
        """Wait until every writeback asked for has been started."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def start_all(self):
        """Start writeback of the whole file (without waiting)."""
        self.close()
        if self._fn is not None:
            self._fn(self.fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def mkstemp(d, prefix, suffix=""):
    """(descriptor, path) of a new file in directory d, made as
    tempfile.mkstemp makes it (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, a
    random name, another on a clash): nothing planted there is followed.
    Here rather than tempfile, whose imports (shutil, random, ...) every
    run would pay at start.

    By name, in one system call.  The file was made unnamed (O_TMPFILE)
    and linked under its name, eight system calls, so that its inode was
    allocated without the directory's lock; by name, a tree of 1,000
    small processes converts 2-7% faster on tmpfs, XFS, btrfs and ext4
    (with --jobs 2 too).  Only one job on an ext4 without a journal, into
    a directory just emptied of a tree's cores, is 10% slower: such an
    ext4 skips the inodes freed in the last minute one by one."""
    for _ in range(100):
        path = os.path.join(d, "%s%s%s" % (prefix, os.urandom(6).hex(), suffix))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, os.path.abspath(path)
    raise FileExistsError(errno.EEXIST, "no unused temporary name", d)


def _copy_extent(source, src, fd, addr, length, src_off, dst, dst_name,
                 writeback):
    """Copy one extent (kernel copy, holes kept); returns the bytes copied."""
    n = length
    if src.size is not None:
        n = min(n, max(0, src.size - src_off))
    if src.fd is None:  # a StreamedImage (a compressed archive's pages)
        got = _copy_streamed(src, fd, n, src_off, dst, dst_name)
    else:
        got = copy_range(src.fd, fd, n, src.base + src_off, dst, source.path,
                    dst_name) if n else 0
    if got < length:
        # the source ends early: the rest stays a hole (the source decides
        # whether that is an error)
        source.short(addr + got, length - got)
    writeback.wrote(dst, got)
    return got


STREAM_CHUNK = 4 << 20


def _copy_streamed(src, fd, n, src_off, dst, dst_name):
    """Copy n bytes of an image that has no descriptor (imagedir.
    StreamedImage): read in order from its stream, written with pwrite;
    returns the bytes copied (less at its end)."""
    done = 0
    while done < n:
        data = src.pread_some(min(n - done, STREAM_CHUNK), src_off + done)
        if not data:
            break
        _write_all(fd, data, dst + done, dst_name)
        done += len(data)
    return done


# Small extents that follow each other in their source are gathered: one
# read of the source, then one write of the span they cover in the core,
# the holes between them written as the zeros they read as.  A process
# whose memory is a million scattered pages (a sparsely touched heap)
# otherwise costs a million kernel copies, and as many extents for the
# file system to write back and for fsync to wait for.  The core's bytes
# are the same; only holes shorter than GATHER_GAP, between extents shorter
# than GATHER_CHUNK, are allocated.  On a file system in memory (tmpfs),
# where allocated zeros cost memory and fragments cost nothing, the extents
# are written one by one from the one read instead, holes kept.
GATHER_CHUNK = 64 << 10
GATHER_GAP = 64 << 10
GATHER_SPAN = 1 << 20
_IN_MEMORY = {"tmpfs", "ramfs"}
_fs_types = {}  # st_dev -> file system type


def _fs_type(fd):
    """The type of the file system holding fd (/proc/self/mountinfo), or
    None when it cannot be told."""
    dev = os.fstat(fd).st_dev
    if dev not in _fs_types:
        want = "%d:%d" % (os.major(dev), os.minor(dev))
        kind = None
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 2 and fields[2] == want and " - " in line:
                        kind = line.split(" - ", 1)[1].split()[0]
                        break
        except OSError:
            pass
        _fs_types[dev] = kind
    return _fs_types[dev]


_HAVE_PWRITEV = hasattr(os, "pwritev")
_IOV_MAX = 1024
_ZEROS = memoryview(bytes(GATHER_GAP))


def _joins(end_src, end_dst, first_dst, src_off, dst, length):
    """Whether an extent (at src_off in its source, dst in the core) joins
    the gathered ones, which end at end_src and end_dst and begin at
    first_dst in the core: it continues them in the source, follows them
    in the core after a hole of GATHER_GAP at most, and the span stays
    within GATHER_SPAN.  _copy_batch's loop has the same test written out."""
    return (src_off == end_src and 0 <= dst - end_dst <= GATHER_GAP
            and dst + length - first_dst <= GATHER_SPAN)


def _pwritev_all(fd, iov, off, dst_name, src_name=None):
    """Write buffers one after the other from `off`, _IOV_MAX at a time; a
    short write is continued from where it stopped (by slicing views, so a
    mapped source is still touched by the kernel only).  Only a short write
    walks the buffers in Python: a scattered heap's span is a thousand."""
    for i in range(0, len(iov), _IOV_MAX):
        part = iov[i:i + _IOV_MAX]
        left = sum(map(len, part))
        k = 0
        while left:
            try:
                done = os.pwritev(fd, part[k:] if k else part, off)
            except OSError as e:
                raise _write_error(e, dst_name, src_name) from None
            if done == 0:
                raise OutputError(dst_name, "cannot write: no byte written")
            off += done
            left -= done
            if not left:
                break
            while done >= len(part[k]):
                done -= len(part[k])
                k += 1
            if done:
                part[k] = part[k][done:]


class _Gather:
    """The small extents gathered so far, all of one source, contiguous in
    it, ascending in the core."""

    def __init__(self, fd, dst_name, writeback):
        self.fd = fd
        self.dst_name = dst_name
        self.writeback = writeback
        self.items = []   # (addr, length, src_off, dst)
        self.source = self.src = None
        self.fill = _fs_type(fd) not in _IN_MEMORY

    def follows(self, src_off, dst, length):
        """Whether an extent of the same source can join."""
        if not self.items:
            return True
        _, last_len, last_src_off, last_dst = self.items[-1]
        return _joins(last_src_off + last_len, last_dst + last_len,
                      self.items[0][3], src_off, dst, length)

    def add(self, source, src, addr, length, src_off, dst):
        self.source, self.src = source, src
        self.items.append((addr, length, src_off, dst))

    def flush_items(self, source, src, items):
        """Write extents (addr, length, src_off, dst) of one source that
        follow each other (follows()); returns the bytes copied."""
        self.flush()
        self.source, self.src, self.items = source, src, items
        return self.flush()

    def flush(self):
        """Write what is gathered; returns the bytes of data copied."""
        items, self.items = self.items, []
        if not items:
            return 0
        source, src = self.source, self.src
        if len(items) == 1:
            addr, length, src_off, dst = items[0]
            return _copy_extent(source, src, self.fd, addr, length, src_off,
                                dst, self.dst_name, self.writeback)
        src_start, dst_start = items[0][2], items[0][3]
        last = items[-1]
        want = last[2] + last[1] - src_start
        if src.size is not None:
            want = min(want, max(0, src.size - src_start))
        try:
            data = _source_view(source, src, want, src_start) if want else b""
        except OSError as e:
            raise BadImage(source.path, "cannot read: %s" % e.strerror) from None
        if not self.fill:
            return self._write_each(items, data, source, src_start)
        if len(data) == last[2] + last[1] - src_start and _HAVE_PWRITEV:
            return self._write_span(items, data, src_start, source.path)
        span = bytearray(last[3] + last[1] - dst_start)
        copied = 0
        for addr, length, src_off, dst in items:
            at = src_off - src_start
            got = max(0, min(length, len(data) - at))
            span[dst - dst_start:dst - dst_start + got] = data[at:at + got]
            copied += got
            if got < length:
                source.short(addr + got, length - got)
        _write_all(self.fd, span, dst_start, self.dst_name)
        self.writeback.wrote(dst_start, len(span))
        return copied

    def _write_span(self, items, data, src_start, src_name):
        """The span the extents cover, all their bytes read: written as one
        pwritev of their data with the zeros between (no copy of either
        into a buffer of the span)."""
        view = memoryview(data)
        iov = []
        add = iov.append
        dst_start = pos = items[0][3]
        for _, length, src_off, dst in items:
            if dst > pos:
                add(_ZEROS[:dst - pos])
            at = src_off - src_start
            add(view[at:at + length])
            pos = dst + length
        _pwritev_all(self.fd, iov, dst_start, self.dst_name, src_name)
        self.writeback.wrote(dst_start, pos - dst_start)
        return len(data)

    def _write_each(self, items, data, source, src_start):
        """The extents written one by one from one read (holes kept)."""
        view = memoryview(data)
        copied = 0
        for addr, length, src_off, dst in items:
            at = src_off - src_start
            got = max(0, min(length, len(data) - at))
            _write_all(self.fd, view[at:at + got], dst, self.dst_name,
                       source.path)
            copied += got
            if got < length:
                source.short(addr + got, length - got)
        self.writeback.wrote(items[0][3], items[-1][3] + items[-1][1] - items[0][3])
        return copied


def _copy_batch(batch, base, floor, gather, progress):
    """Copy a sources.Batch (a segment's runs, in arrays) as write() copies
    its extents one by one: the same gathering of small extents, without
    an Extent and a generator step per run.  `floor`: the end of the
    highest extent copied so far.  Returns (bytes copied, new floor)."""
    source = batch.source
    try:
        src = source.open()
    except OSError as e:
        raise BadImage(source.path, "cannot open: %s" % e.strerror) from None
    if not gather.fill:
        return _copy_batch_holes(batch, source, src, base, floor, gather,
                                 progress)
    P = batch.page
    chunk, gap, span = GATHER_CHUNK, GATHER_GAP, GATHER_SPAN
    flush = gather.flush_items
    items = []
    add = items.append
    written = pending = 0
    first = end_src = end_dst = 0
    for columns in batch.chunks():
        for addr, npages, off, where in zip(*columns):
            if where:
                continue  # lazy pages: a hole
            length = npages * P
            src_off = off * P
            dst = base + addr
            pending += length
            if src is None:
                continue  # the source is gone (warned): a hole
            if length < chunk and dst >= floor:
                # _joins(), written out: this loop runs once per pagemap
                # run, and the call was a quarter of its Python time
                # (250,000 runs: user 0.55 s with it, 0.41 s without)
                if items and not (src_off == end_src
                                  and 0 <= dst - end_dst <= gap
                                  and dst + length - first <= span):
                    written += flush(source, src, items)
                    items = []
                    add = items.append
                    if progress:
                        progress(pending - length)
                        pending = length
                if not items:
                    first = dst
                add((addr, length, src_off, dst))
                end_src = src_off + length
                end_dst = dst + length
            else:
                if items:
                    written += flush(source, src, items)
                    items = []
                    add = items.append
                if progress:
                    progress(pending)
                    pending = 0
                written += _copy_extent(source, src, gather.fd, addr, length,
                                        src_off, dst, gather.dst_name,
                                        gather.writeback)
            if dst + length > floor:
                floor = dst + length
    if items:
        written += flush(source, src, items)
    if progress and pending:
        progress(pending)
    return written, floor


# A batch of fewer runs is written run by run: an AIO context costs its
# process a wait for an RCU grace period when it exits (10-30 ms: a tree
# of a thousand small processes took 30% longer by --jobs workers)
AIO_MIN_RUNS = 256


def _copy_batch_holes(batch, source, src, base, floor, gather, progress):
    """_copy_batch on a file system in memory: each small run written on
    its own (holes kept, as _Gather._write_each), by AIO batches where
    the kernel has them (aio_runs), else one pwrite each from reads of up
    to GATHER_SPAN of the source, which the runs of a batch read in order."""
    if src is not None and src.fd is not None and batch.hi - batch.lo >= \
            AIO_MIN_RUNS and getattr(source, "mappable", False):
        from . import aio
        writes = aio.get()
        if writes is not None:
            from . import aio_runs
            return aio_runs.copy(writes, batch, source, src, base, floor,
                                 gather, progress)
    P = batch.page
    chunk, span = GATHER_CHUNK, GATHER_SPAN
    fd, writeback, pwrite = gather.fd, gather.writeback, os.pwrite
    src_end = batch.src_end()
    view = None
    buf_start = buf_len = 0
    first = last = None  # core range written since the last read
    written = pending = 0
    for starts, npages, offsets, wheres in batch.chunks():
        for addr, n, off, where in zip(starts, npages, offsets, wheres):
            if where:
                continue  # lazy pages: a hole
            length = n * P
            dst = base + addr
            pending += length
            if src is None:
                continue  # the source is gone (warned): a hole
            if length >= chunk or dst < floor:
                written += _copy_extent(source, src, fd, addr, length, off * P,
                                        dst, gather.dst_name, writeback)
                if dst + length > floor:
                    floor = dst + length
                continue
            at = off * P - buf_start
            if at < 0 or at + length > buf_len:
                if first is not None:
                    writeback.wrote(first, last - first)
                    first = None
                if progress:
                    progress(pending - length)
                    pending = length
                src_off = off * P
                want = max(min(span, src_end - src_off), length)
                if src.size is not None:
                    want = min(want, max(0, src.size - src_off))
                try:
                    data = _source_view(source, src, want, src_off)
                except OSError as e:
                    raise BadImage(source.path, "cannot read: %s"
                                   % e.strerror) from None
                view = memoryview(data)
                buf_start, buf_len, at = src_off, len(data), 0
                if length > buf_len:  # the source ends early: as the
                    # general path says it
                    written += gather.flush_items(
                        source, src, [(addr, length, src_off, dst)])
                    floor = max(floor, dst + length)
                    continue
            try:
                done = pwrite(fd, view[at:at + length], dst)
                while done < length:
                    done += pwrite(fd, view[at + done:at + length], dst + done)
            except OSError as e:
                raise _write_error(e, gather.dst_name, source.path) from None
            written += length
            if first is None:
                first = dst
            last = floor = dst + length
    if first is not None:
        writeback.wrote(first, last - first)
    if progress and pending:
        progress(pending)
    return written, floor


class CoreWriter:
    """Writes one core at `path` through a temporary file beside it.

    The temporary name is made by mkstemp() (O_EXCL: nothing planted there is
    followed); the finished file replaces `path` by rename, which replaces
    a symlink planted at `path` rather than writing through it, and leaves
    an older core untouched until the new one is complete."""

    def __init__(self, path, progress=None, sync_dir=True, defer=False):
        self.path = path
        self.progress = progress
        # False: the caller fsyncs the directory once after its last core
        # (fsync_dir), rather than one directory fsync per core
        self.sync_dir = sync_dir
        # True: write() leaves the fsync and the rename to commit() (see
        # the module's docstring); the temporary stays open until then
        self.defer = defer
        self.written = False
        self.tmp = None
        self.fd = None

    def __enter__(self):
        d = os.path.dirname(os.path.abspath(self.path))
        with lifecycle.signals_held():
            try:
                self.fd, self.tmp = mkstemp(
                    d, "%s%d." % (tmp_prefix(self.path), os.getpid()), TMP_SUFFIX)
            except OSError as e:
                raise OutputError(d, "cannot create a file: %s" % e.strerror) from None
            lifecycle.register_tmp(self.tmp)
            try:
                # held until the fd is closed: remove_stale_temps() of
                # another run leaves the file alone meanwhile
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a filesystem without locks: the pid still protects it
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and self.written:
            return False  # deferred: commit() or discard() comes later
        self.discard()
        return False

    def discard(self):
        """Close and remove the temporary core (a deferred one not wanted)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp:
            lifecycle.discard(self.tmp)
            self.tmp = None

    def write(self, cls: elf.ElfClass, arch, notes,
              segments: Sequence) -> int:
        """Stream the whole core, then rename it into place; returns the
        bytes of memory copied (the rest of the dumped ranges are holes).

        `notes`: their bytes, or an iterable of byte strings (one a note)
        that is consumed once: the notes are written first, at their offset
        (which does not depend on their size), so memory does not grow with
        them; the size they turn out to have then places the segments.
        `segments`: memory.Segment, whose extents() are copied."""
        fd = self.fd
        written = 0
        writeback = None
        try:
            # writeback starts as the notes are written too: a process of
            # 100,000 threads has 170 MiB of them, which the final fsync
            # would otherwise write all at once
            writeback = _Writeback(fd)
            chunks, size = _notes_ahead(notes)
            start = elf.notes_offset(cls, segments)
            if size is not None:
                # the whole size before any byte: XFS, growing a file
                # whose size in memory is past its size on disk, first
                # writes back what is written and waits for the disk
                # (a round trip a core, which a tree of small processes
                # paid in every --jobs worker)
                layout = elf.compute_layout(cls, size, segments)
                os.ftruncate(fd, layout.file_size)
                _write_stream(fd, chunks, start, writeback, self.path)
            else:
                size = _write_stream(fd, chunks, start, writeback, self.path)
                layout = elf.compute_layout(cls, size, segments)
                os.ftruncate(fd, layout.file_size)
            # either way the whole size comes before the memory: every
            # copy lands inside the file, so no file system preallocates
            # past a growing end (XFS would leave unwritten extents in
            # what must stay holes)
            head, shdr = elf.headers(cls, arch, layout, segments)
            os.pwrite(fd, head, 0)
            progress = self.progress
            gather = _Gather(fd, self.path, writeback)
            last_src = src = None
            floor = 0  # the end of the highest extent so far
            for seg, off in zip(segments, layout.seg_offsets):
                base = off - seg.vaddr
                batch = getattr(seg, "batch", None)
                batch = batch() if batch is not None else None
                if batch is not None:
                    written += gather.flush()
                    last_src = None
                    got, floor = _copy_batch(batch, base, floor, gather,
                                             progress)
                    written += got
                    continue
                for (addr, length, source, src_off) in seg.extents():
                    if source is not last_src:
                        written += gather.flush()  # before its source may close
                        try:
                            src = source.open()
                        except OSError as e:
                            raise BadImage(source.path, "cannot open: %s"
                                           % e.strerror) from None
                        last_src = source
                    if progress:
                        progress(length)
                    if src is None:
                        continue  # the source is gone (warned): a hole
                    dst = base + addr
                    if length < GATHER_CHUNK and dst >= floor:
                        if not gather.follows(src_off, dst, length):
                            written += gather.flush()
                        gather.add(source, src, addr, length, src_off, dst)
                    else:
                        written += gather.flush()
                        written += _copy_extent(source, src, fd, addr, length,
                                                src_off, dst, self.path, writeback)
                    floor = max(floor, dst + length)
            written += gather.flush()
            if shdr:
                os.pwrite(fd, shdr, layout.shoff)
            if self.defer:
                writeback.start_all()
        except OSError as e:
            raise OutputError(self.path, "cannot write: %s" % e.strerror) from None
        finally:
            if writeback is not None:
                writeback.close()  # before the fsync, or the fd's close
        self.layout = layout
        if self.defer:
            self.written = True
        else:
            self.commit()
        return written

    def sync(self):
        """fsync the temporary core.  OutputError (the temporary removed)
        if the file system reports that it could not be written."""
        try:
            os.fsync(self.fd)
        except OSError as e:
            self.discard()
            raise OutputError(self.path, "cannot write: %s" % e.strerror) from None

    def commit(self, synced=False, held=False):
        """fsync the temporary core (unless `synced`) and rename it into
        place (write() does it unless deferred).  OutputError (the
        temporary removed) if the file system reports that the core could
        not be written.  `held`: the caller holds the cleanup signals
        already (lifecycle.signals_held, once for a batch of cores' renames:
        two system calls a core fewer)."""
        if not synced:
            self.sync()
        os.close(self.fd)
        self.fd = None
        if held:
            self._rename()
        else:
            with lifecycle.signals_held():
                self._rename()
        self.written = False
        if self.sync_dir:
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def _rename(self):
        """The temporary core to its name, and forgotten as a temporary
        (with the cleanup signals held: both, or neither)."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as e:
            self.discard()
            raise OutputError(self.path, "cannot replace it: %s" % e.strerror) from None
        lifecycle.unregister_tmp(self.tmp)
        self.tmp = None


NOTES_BUFFER = 1 << 20


def _notes_ahead(notes):
    """(the notes as a list of byte strings, their size) when they come to
    NOTES_BUFFER bytes at most (all but processes of thousands of
    threads); else (an iterator over them all, None): they are then
    written as they come, memory not growing with them."""
    if isinstance(notes, (bytes, bytearray)):
        return [notes], len(notes)
    it = iter(notes)
    head, size = [], 0
    for chunk in it:
        head.append(chunk)
        size += len(chunk)
        if size > NOTES_BUFFER:
            import itertools
            return itertools.chain(head, it), None
    return head, size


def _write_stream(fd, chunks, offset, writeback, dst_name):
    """Write byte strings one after the other from offset, gathered in
    writes of about NOTES_BUFFER bytes (a short write is continued);
    returns the bytes written.  writeback: the _Writeback told of each
    write."""
    buf = []
    pending = 0
    pos = offset
    for chunk in chunks:
        buf.append(chunk)
        pending += len(chunk)
        if pending >= NOTES_BUFFER:
            _write_all(fd, b"".join(buf), pos, dst_name)
            writeback.wrote(pos, pending)
            pos += pending
            buf, pending = [], 0
    if buf:
        _write_all(fd, b"".join(buf), pos, dst_name)
        writeback.wrote(pos, pending)
        pos += pending
    return pos - offset


def fsync_dir(d):
    """Make the renames into directory d durable (best effort: some
    filesystems refuse).  A crash before it may lose a core's name, never
    its contents: each core is fsynced before it is renamed."""
    try:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def check_out_dir(d):
    """OutputError unless cores can be created in directory d: checked once,
    before any work, so that an unusable OUTDIR is one clear error rather
    than one per process."""
    if not os.path.exists(d):
        raise OutputError(d, "output directory does not exist")
    if not os.path.isdir(d):
        raise OutputError(d, "output directory is not a directory")
    try:
        fd, probe = mkstemp(d, ".coredump-probe.")
    except OSError as e:
        raise OutputError(d, "cannot create a file in the output directory: %s"
                          % e.strerror) from None
    os.close(fd)
    os.unlink(probe)
    lifecycle.remove_stale_temps(d)
