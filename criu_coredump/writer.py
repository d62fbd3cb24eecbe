"""Lay out and stream one ELF core file.

Every offset is computed first (headers, notes, then the dumped part of each
segment, page-aligned); then the file is written front to back: headers and
notes from memory, page data copied straight from its source file with
os.copy_file_range (sendfile or a bounded buffered copy where that is not
possible), and holes left as holes, so the core is sparse and memory use does
not grow with the size of the process.

The core is written to a temporary file in the output directory, fsynced
and renamed into place once complete, so a `core.<pid>` is either complete or
absent, even after a machine crash.  Writeback of what is copied is started
as the copy goes (sync_file_range), so the final fsync overlaps the copy
instead of waiting for the whole core at the end.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import signal
import stat

from . import elf
from .errors import BadImage, OutputError
from .record import Record

PAGE = 4096
COPY_CHUNK = 1 << 20
DST_ALIGN = 64 << 10
CFR_CHUNK = 64 << 20  # per copy_file_range call: signals are handled between


def page_up(n):
    return (n + PAGE - 1) & ~(PAGE - 1)


class Layout(Record):
    def __init__(self, phnum: int,
                 notes_offset: int,
                 notes_size: int,
                 data_offset: int,
                 seg_offsets: list,
                 file_size: int,
                 shoff: int):
        self.phnum = phnum
        self.notes_offset = notes_offset
        self.notes_size = notes_size
        self.data_offset = data_offset
        self.seg_offsets = seg_offsets
        self.file_size = file_size
        self.shoff = shoff


def notes_offset(cls, segments):
    """Where the notes start: after the file header and the program headers
    (PT_NOTE, then one PT_LOAD per segment), whatever the notes' size."""
    return ctypes.sizeof(cls.Ehdr) + (len(segments) + 1) * ctypes.sizeof(cls.Phdr)


def compute_layout(cls, notes_blob, segments):
    """notes_blob: the notes' bytes, or their size."""
    nseg = len(segments) + 1  # PT_NOTE first
    notes_size = notes_blob if isinstance(notes_blob, int) else len(notes_blob)
    start = notes_offset(cls, segments)
    data = page_up(start + notes_size)
    offs = []
    pos = data
    for seg in segments:
        offs.append(pos)
        pos += seg.dump_size
    shoff = 0
    end = pos
    if nseg >= elf.PN_XNUM:
        shoff = pos
        end = pos + ctypes.sizeof(cls.Shdr)
    return Layout(nseg, start, notes_size, data, offs, end, shoff)


def headers(cls, arch, layout, segments):
    """File header, program headers and (PN_XNUM) the extra section header."""
    eh = elf.make_ehdr(cls, arch.MACHINE, layout.phnum, arch.OSABI, arch.EFLAGS)
    shdr = b""
    if layout.shoff:
        eh.e_shoff = layout.shoff
        eh.e_shentsize = ctypes.sizeof(cls.Shdr)
        eh.e_shnum = 1
        # fill_extnum_info(): SHT_NULL, sh_size = e_shnum (1), sh_link =
        # e_shstrndx (0), sh_info = the real number of program headers
        sh = cls.Shdr()
        sh.sh_type = elf.SHT_NULL
        sh.sh_size = 1
        sh.sh_info = layout.phnum
        shdr = bytes(sh)
    ph = cls.Phdr()
    ph.p_type = elf.PT_NOTE
    ph.p_offset = layout.notes_offset
    ph.p_filesz = layout.notes_size
    ph.p_align = 4
    out = [bytes(eh), bytes(ph)]
    for seg, off in zip(segments, layout.seg_offsets):
        ph = cls.Phdr()
        ph.p_type = elf.PT_LOAD
        ph.p_flags = seg.flags
        ph.p_offset = off
        ph.p_vaddr = seg.vaddr
        ph.p_filesz = seg.dump_size
        ph.p_memsz = seg.memsz
        ph.p_align = PAGE
        out.append(bytes(ph))
    return b"".join(out), shdr


# errnos of a copy that are the destination's fault (the source is only read)
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# errnos meaning "this call cannot copy between these two files", not "I/O
# failed": the next method is tried
_CANNOT = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
           errno.EBADF)
_methods = {"copy_file_range": hasattr(os, "copy_file_range"),
            "sendfile": hasattr(os, "sendfile")}


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
    if buf:
        try:
            os.pwrite(dst_fd, buf, dst_off)
        except OSError as e:
            raise OutputError(dst_name, "cannot write: %s" % e.strerror) from None
    return len(buf)


def _copy(src_fd, dst_fd, length, src_off, dst_off, src_name, dst_name):
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


def _short(fds, src, addr, got, length, src_off):
    """A source that ended `got` bytes into a chunk: the rest stays a hole
    (fds decides whether that is an error)."""
    short = getattr(fds, "short_read", None)
    if short is None:
        raise BadImage(src.path, "ends before the data at offset %d"
                       % (src_off + got))
    short(src, addr + got, length - got)


def _copy_chunk(src, src_fd, fd, addr, length, src_off, dst, dst_name, fds,
                writeback):
    """Copy one chunk (kernel copy, holes kept); returns the bytes copied."""
    got = _copy(src_fd, fd, length, src_off, dst, src.path, dst_name)
    if got < length:
        _short(fds, src, addr, got, length, src_off)
    writeback.wrote(dst, got)
    return got


# Small chunks that follow each other in their source are gathered: one
# read of the source, then one write of the span they cover in the core,
# the holes between them written as the zeros they read as.  A process
# whose memory is a million scattered pages (a sparsely touched heap)
# otherwise costs a million kernel copies, and as many extents for the
# file system to write back and for fsync to wait for.  The core's bytes
# are the same; only holes shorter than GATHER_GAP, between chunks shorter
# than GATHER_CHUNK, are allocated.  On a file system in memory (tmpfs),
# where allocated zeros cost memory and fragments cost nothing, the chunks
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


class _Gather:
    """The small chunks gathered so far, all of one source, contiguous in
    it, ascending in the core."""

    def __init__(self, fd, dst_name, fds, writeback):
        self.fd = fd
        self.dst_name = dst_name
        self.fds = fds
        self.writeback = writeback
        self.items = []   # (addr, length, src_off, dst)
        self.src = self.src_fd = None
        self.fill = _fs_type(fd) not in _IN_MEMORY

    def follows(self, src_off, dst, length):
        """Whether a chunk of the same source can join."""
        if not self.items:
            return True
        _, last_len, last_src_off, last_dst = self.items[-1]
        return (src_off == last_src_off + last_len
                and 0 <= dst - (last_dst + last_len) <= GATHER_GAP
                and dst + length - self.items[0][3] <= GATHER_SPAN)

    def add(self, src, src_fd, addr, length, src_off, dst):
        self.src, self.src_fd = src, src_fd
        self.items.append((addr, length, src_off, dst))

    def flush(self):
        """Write what is gathered; returns the bytes of data copied."""
        items, self.items = self.items, []
        if not items:
            return 0
        src, src_fd = self.src, self.src_fd
        if len(items) == 1:
            addr, length, src_off, dst = items[0]
            return _copy_chunk(src, src_fd, self.fd, addr, length, src_off,
                               dst, self.dst_name, self.fds, self.writeback)
        src_start, dst_start = items[0][2], items[0][3]
        last = items[-1]
        try:
            data = os.pread(src_fd, last[2] + last[1] - src_start, src_start)
        except OSError as e:
            raise BadImage(src.path, "cannot read: %s" % e.strerror) from None
        if not self.fill:
            return self._write_each(items, data, src, src_start)
        span = bytearray(last[3] + last[1] - dst_start)
        copied = 0
        for addr, length, src_off, dst in items:
            at = src_off - src_start
            got = max(0, min(length, len(data) - at))
            span[dst - dst_start:dst - dst_start + got] = data[at:at + got]
            copied += got
            if got < length:
                _short(self.fds, src, addr, got, length, src_off)
        view = memoryview(span)
        done = 0
        try:
            while done < len(span):
                done += os.pwrite(self.fd, view[done:], dst_start + done)
        except OSError as e:
            raise OutputError(self.dst_name, "cannot write: %s" % e.strerror) from None
        self.writeback.wrote(dst_start, len(span))
        return copied

    def _write_each(self, items, data, src, src_start):
        """The chunks written one by one from one read (holes kept)."""
        view = memoryview(data)
        copied = 0
        try:
            for addr, length, src_off, dst in items:
                at = src_off - src_start
                got = max(0, min(length, len(data) - at))
                done = 0
                while done < got:
                    done += os.pwrite(self.fd, view[at + done:at + got], dst + done)
                copied += got
                if got < length:
                    _short(self.fds, src, addr, got, length, src_off)
        except OSError as e:
            raise OutputError(self.dst_name, "cannot write: %s" % e.strerror) from None
        self.writeback.wrote(items[0][3], items[-1][3] + items[-1][1] - items[0][3])
        return copied


TMP_SUFFIX = ".tmp"
WRITEBACK_STEP = 32 << 20
_SYNC_FILE_RANGE_WRITE = 2


class _Writeback:
    """Starts writeback of every WRITEBACK_STEP bytes written (without
    waiting), so dirty pages never pile up and fsync has little left to do."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = 0
        self.start = None  # lowest core offset written since the last kick
        self._fn = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_uint]
            self._fn = fn
        except (OSError, AttributeError):
            pass

    def wrote(self, offset, n):
        """n bytes were written at offset (the core is written front to back)."""
        if self.start is None:
            self.start = offset
        self.pending += n
        if self.pending >= WRITEBACK_STEP and self._fn is not None:
            end = offset + n
            self._fn(self.fd, self.start, end - self.start, _SYNC_FILE_RANGE_WRITE)
            self.pending = 0
            self.start = None


def mkstemp(d, prefix, suffix=""):
    """(descriptor, path) of a new file in directory d, made as
    tempfile.mkstemp makes it (O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600, a
    random name, another on a clash): nothing planted there is followed.
    Here rather than tempfile, whose imports (shutil, random, ...) every
    run would pay at start."""
    for _ in range(100):
        path = os.path.join(d, "%s%s%s" % (prefix, os.urandom(6).hex(), suffix))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, os.path.abspath(path)
    raise FileExistsError(errno.EEXIST, "no unused temporary name", d)


def tmp_prefix(path):
    """Temporary cores for `path` are named <dir>/.<name>.<writer pid>.XXXXXXXX.tmp
    (this prefix, then the pid of the process writing it)."""
    return ".%s." % os.path.basename(path)


# .core.<pid>.<writer pid>.<mkstemp's random hex>.tmp
_TMP_NAME = re.compile(r"\.core\.\d+\.(\d+)\.[A-Za-z0-9_]+\.tmp\Z")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists
    return True


def remove_stale_temps(d):
    """Remove the temporary cores that runs killed outright (SIGKILL, a
    machine crash) left in directory d, and only those: the name carries
    the writer's pid, and a temporary is removed when that process is gone
    and no one holds the lock every writer keeps on its temporary (another
    PID namespace writing into the same directory keeps its files).
    Returns the names removed."""
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue  # locked: its writer lives
        finally:
            os.close(fd)
    return removed


class CoreWriter:
    """Writes one core at `path` through a temporary file beside it.

    The temporary name is made by mkstemp() (O_EXCL: nothing planted there is
    followed); the finished file replaces `path` by rename, which replaces
    a symlink planted at `path` rather than writing through it, and leaves
    an older core untouched until the new one is complete."""

    def __init__(self, path, progress=None, sync_dir=True):
        self.path = path
        self.progress = progress
        # False: the caller fsyncs the directory once after its last core
        # (fsync_dir), rather than one directory fsync per core
        self.sync_dir = sync_dir
        self.tmp = None
        self.fd = None

    def __enter__(self):
        d = os.path.dirname(os.path.abspath(self.path))
        with _signals_held():
            try:
                self.fd, self.tmp = mkstemp(
                    d, "%s%d." % (tmp_prefix(self.path), os.getpid()), TMP_SUFFIX)
            except OSError as e:
                raise OutputError(d, "cannot create a file: %s" % e.strerror) from None
            _register_tmp(self.tmp)
            try:
                # held until the fd is closed: remove_stale_temps() of
                # another run leaves the file alone meanwhile
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a filesystem without locks: the pid still protects it
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if exc_type is not None and self.tmp:
            _discard(self.tmp)
            self.tmp = None
        return False

    def write(self, cls, arch, notes, segments, fds):
        """Stream the whole core, then rename it into place; returns the
        bytes of memory copied (the rest of the dumped ranges are holes).

        `notes`: their bytes, or an iterable of byte strings (one a note)
        that is consumed once: the notes are written first, at their offset
        (which does not depend on their size), so memory does not grow with
        them; the size they turn out to have then places the segments."""
        fd = self.fd
        written = 0
        try:
            size = _write_stream(fd, [notes] if isinstance(notes, (bytes, bytearray))
                                 else notes, notes_offset(cls, segments))
            layout = compute_layout(cls, size, segments)
            head, shdr = headers(cls, arch, layout, segments)
            os.pwrite(fd, head, 0)
            # the whole size first: every copy lands inside the file, so no
            # file system preallocates past a growing end (XFS would leave
            # unwritten extents in what must stay holes)
            os.ftruncate(fd, layout.file_size)
            progress = self.progress
            writeback = _Writeback(fd)
            gather = _Gather(fd, self.path, fds, writeback)
            last_src = src_fd = None
            floor = 0  # the end of the highest chunk so far
            for seg, off in zip(segments, layout.seg_offsets):
                base = off - seg.vaddr
                for (addr, length, src, src_off) in seg.chunks():
                    if src is not last_src:
                        written += gather.flush()  # before fds may close its source
                        try:
                            src_fd = fds.fd(src)
                        except OSError as e:
                            raise BadImage(src.path, "cannot open: %s"
                                           % e.strerror) from None
                        last_src = src
                    if progress:
                        progress(length)
                    if src_fd is None:
                        continue  # the source is gone (warned): a hole
                    dst = base + addr
                    if length < GATHER_CHUNK and dst >= floor:
                        if not gather.follows(src_off, dst, length):
                            written += gather.flush()
                        gather.add(src, src_fd, addr, length, src_off, dst)
                    else:
                        written += gather.flush()
                        written += _copy_chunk(src, src_fd, fd, addr, length,
                                               src_off, dst, self.path, fds,
                                               writeback)
                    floor = max(floor, dst + length)
            written += gather.flush()
            if shdr:
                os.pwrite(fd, shdr, layout.shoff)
            os.fsync(fd)
        except OSError as e:
            raise OutputError(self.path, "cannot write: %s" % e.strerror) from None
        os.close(fd)
        self.fd = None
        with _signals_held():
            try:
                os.replace(self.tmp, self.path)
            except OSError as e:
                raise OutputError(self.path, "cannot replace it: %s" % e.strerror) from None
            _unregister_tmp(self.tmp)
            self.tmp = None
        if self.sync_dir:
            fsync_dir(os.path.dirname(os.path.abspath(self.path)))
        self.layout = layout
        return written


NOTES_BUFFER = 1 << 20


def _write_stream(fd, chunks, offset):
    """Write byte strings one after the other from offset, gathered in
    writes of about NOTES_BUFFER bytes; returns the bytes written."""
    buf = []
    pending = 0
    pos = offset
    for chunk in chunks:
        buf.append(chunk)
        pending += len(chunk)
        if pending >= NOTES_BUFFER:
            os.pwrite(fd, b"".join(buf), pos)
            pos += pending
            buf, pending = [], 0
    if buf:
        os.pwrite(fd, b"".join(buf), pos)
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
    remove_stale_temps(d)


# -- temporary files removed on SIGINT/SIGTERM/SIGHUP ------------------------

# SIGHUP: the terminal went away (the workers of --jobs, in the same
# process group, get it too, and clean up the same way)
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_pending = set()


class _signals_held:
    """Hold SIGINT/SIGTERM while a temporary file is created and registered
    (or renamed and unregistered), so the handler never misses one."""

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        return False


def _register_tmp(path):
    _pending.add(path)


def _unregister_tmp(path):
    _pending.discard(path)


def _discard(path):
    _pending.discard(path)
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_pending():
    for p in list(_pending):
        _discard(p)


# -- worker processes (--jobs) stopped before dying of a signal ---------------

_workers = set()


def add_worker(pid):
    """A child writing cores: on SIGINT/SIGTERM it is stopped (SIGTERM, its
    own handler removes its temporary core) and waited for before we die."""
    _workers.add(pid)


def remove_worker(pid):
    _workers.discard(pid)


def forget_workers():
    """In a new worker: its siblings are not its children."""
    _workers.clear()


def stop_workers():
    for pid in list(_workers):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in list(_workers):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    _workers.clear()


def install_signal_cleanup():
    """SIGINT/SIGTERM: remove unfinished cores, then die of the signal (so
    the caller sees the signal in the exit status).  A signal the process
    was started with ignored stays ignored."""
    def handler(signum, frame):
        remove_pending()
        stop_workers()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    for s in CLEANUP_SIGNALS:
        if signal.getsignal(s) != signal.SIG_IGN:
            signal.signal(s, handler)
