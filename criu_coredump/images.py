"""Load a CRIU image directory into small typed records.

This is the only module that touches pycriu.  It reads protobuf messages
directly (pycriu's message classes, without its dict conversion, which is
slow and loses nothing we need), and absorbs the differences between CRIU
and pycriu versions:

* pagemap entries: CRIU 4.2+ keeps the page count in a 64-bit field 5 and
  leaves the old 32-bit field 2 at 0; Debian's pycriu 3.17 does not know
  field 5.  Pagemaps are decoded with our own message class (pagemap.py).
* `files.img` (CRIU 3.x+) versus the older `reg-files.img`.
* the architectures: core_entry's mtype picks an Arch (arch/), whose
  decode() is the one reader of that arch's thread_info; an mtype or a
  thread_info field pycriu does not know (riscv64, loongarch64, aarch64 PAC
  keys) is read with the arch's own declaration of CRIU's message.
"""
import os
import struct
import sys
import warnings
from bisect import bisect_right

from . import arch as arches
from . import protodecl
from .errors import PYCRIU_MISSING, BadImage
from .imagedir import ImageDir, ImageReader, as_imagedir
from .rootfs import NotRegular

# pycriu (the distribution's package, see README), one module at a time
from .criupb import magic as _magic
from .criupb import pb as _pb

try:
    # protobuf comes with pycriu (the distribution's python3-protobuf)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: F401
    from google.protobuf.internal import api_implementation as _api_implementation
except ImportError as exc:  # pragma: no cover - exercised by the CLI test
    raise ImportError(PYCRIU_MISSING) from exc

from .model import (  # noqa: F401  (the records and constants, re-exported)
    KNOWN_VMA_STATUS, MADV_DONTDUMP, MAP_ANON, MAP_HUGETLB, MAP_PRIVATE,
    MAP_SHARED, MAX_FILE_OFFSET, PAGE_SIZE, PROT_EXEC, PROT_READ,
    PROT_WRITE, TASK_ALIVE, TASK_DEAD, TASK_HELPER, TASK_STOPPED, TASK_THREAD,
    VMA_ANON_PRIVATE, VMA_ANON_SHARED, VMA_AREA_AIORING, VMA_AREA_GUARD,
    VMA_AREA_HEAP, VMA_AREA_MEMFD, VMA_AREA_NOT_ACCOUNTABLE, VMA_AREA_REGULAR,
    VMA_AREA_SHSTK, VMA_AREA_SOCKET, VMA_AREA_STACK, VMA_AREA_SYSVIPC,
    VMA_AREA_UPROBES, VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
    VMA_EXT_PLUGIN, VMA_FILE_PRIVATE, VMA_FILE_SHARED, VMA_RESTORE_ONLY,
    VMA_UNSUPP, Checkpoint, MappedFile, Mm, Process, Thread, Vma)

AT_PAGESZ = 6
MAX_ENTRY = 64 << 20  # no real image entry comes near this
_BLOCK = 1 << 18      # bytes of an image read at a time
# ... but the first read asks for less: a bytes object of 128 KiB or more
# is allocated by mmap, then shrunk, which costs twenty times the read of
# a thread's core image of a few KiB
_FIRST_BLOCK = 1 << 16


def message(name):
    """pycriu's class of a CRIU message (pagemap_head, core_entry, ...)."""
    return getattr(_pb, name)


def read_entries(d: ImageDir, name, expect):
    """Yield the raw protobuf payloads of image `name` of d, after checking
    its magic.

    A generator: the file is opened when it is first consumed and closed
    when it is exhausted, fails or is dropped.
    """
    path = d.join(name)
    with ImageReader(open_image(d, name)) as f:
        try:
            yield from _frames(f, path, expect)
        except OSError as e:
            raise BadImage(path, "cannot read: %s" % (e.strerror or e)) from None


def open_image(d: ImageDir, name):
    """An image file of d (ImageDir.open: a regular file, non-blocking,
    checked on the descriptor), or BadImage naming it."""
    path = d.join(name)
    try:
        return d.open(name)
    except FileNotFoundError:
        raise BadImage(path, "missing") from None
    except NotRegular:
        raise BadImage(path, "not a regular file") from None
    except OSError as e:
        raise BadImage(path, "cannot open: %s" % e.strerror) from None


_COMMON_MAGICS = (_magic.by_name["IMG_COMMON"], _magic.by_name["IMG_SERVICE"])


def _read_magic(f, path, expect):
    """Consume an image's magic (after the common one, if any)."""
    head = f.read(4)
    if len(head) == 4 and struct.unpack("<I", head)[0] in _COMMON_MAGICS:
        head += f.read(4)
    _magic_end(head, path, expect)


def _magic_end(buf, path, expect):
    """Where an image's entries begin in `buf`, its first bytes (all of
    them when it is shorter than a block), after its magic (and the
    common one, if any); BadImage when the magic is not `expect`'s.  A
    reader that reads a block at once finds the magic there, rather than
    reading it four bytes at a time."""
    if len(buf) < 4:
        raise BadImage(path, "truncated image (no magic)" if buf else "empty image")
    m, = struct.unpack_from("<I", buf)
    pos = 4
    if m in _COMMON_MAGICS:
        if len(buf) < 8:
            raise BadImage(path, "truncated image (no second magic)")
        m, = struct.unpack_from("<I", buf, 4)
        pos = 8
    name = _magic.by_val.get(m)
    if name != expect:
        raise BadImage(path, "wrong magic 0x%08x (%s), expected a %s image"
                       % (m, name or "unknown", expect))
    return pos


def _frames(f, path, expect):
    """The payloads of an image's entries, after its magic."""
    # read in blocks: for a pagemap of a million small entries, two read
    # calls per entry cost more than decoding them; the magic comes with
    # the first block, and a block that comes short was the image's end
    # (ImageReader.read reads on to its size or the end): an image of a
    # few KiB, such as a thread's core, is read by one call
    buf = f.read(_FIRST_BLOCK)
    eof = len(buf) < _FIRST_BLOCK
    pos = _magic_end(buf, path, expect)
    unpack = struct.unpack_from
    while True:
        if len(buf) - pos < 4:
            more = b"" if eof else f.read(_BLOCK)
            if not more:
                if pos < len(buf):
                    raise BadImage(path, "truncated entry header")
                return
            eof = len(more) < _BLOCK
            buf = buf[pos:] + more
            pos = 0
            continue
        size, = unpack("<I", buf, pos)
        if size > MAX_ENTRY:
            raise BadImage(path, "entry of %d bytes is absurd" % size)
        end = pos + 4 + size
        if end > len(buf):
            want = max(_BLOCK, end - len(buf))
            more = b"" if eof else f.read(want)
            if not more:
                raise BadImage(path, "truncated entry (%d of %d bytes)"
                               % (len(buf) - pos - 4, size))
            eof = len(more) < want
            buf = buf[pos:] + more
            pos = 0
            continue
        yield buf[pos + 4:end]
        pos = end


class strict_decoding:
    """Protobuf warnings are decoding errors.  Some protobuf versions only
    warn ("Unexpected end-group tag: Not all data was converted") on a
    corrupt message and return what they could parse; turning the warning
    into an exception is not safe with the C++ implementation (it leaves
    the exception pending), so warnings are recorded and check() raises."""

    _outer = None  # the log of the one entered first, while it is

    def __enter__(self):
        outer = strict_decoding._outer
        if outer is not None:
            # inside another (a batch of thread images): its record serves,
            # from what is warned from now on
            self._cw = None
            self.log = outer
            del outer[:]
            return self
        self._cw = warnings.catch_warnings(record=True)
        self.log = self._cw.__enter__()
        warnings.simplefilter("always")
        strict_decoding._outer = self.log
        return self

    def __exit__(self, *exc):
        if self._cw is None:
            return False
        strict_decoding._outer = None
        return self._cw.__exit__(*exc)

    def check(self, path, what):
        if self.log:
            msg = self.log[0].message
            del self.log[:]
            raise BadImage(path, "cannot decode %s: %s" % (what, msg))


def parse(path, cls, buf, strict=None):
    """One message of class cls decoded from buf, or BadImage naming path.
    `strict`: the strict_decoding a caller decoding many messages entered
    once for all of them (else one is entered for this message)."""
    if strict is None:
        with strict_decoding() as strict:
            return parse(path, cls, buf, strict)
    msg = cls()
    try:
        try:
            msg.ParseFromString(buf)
        except UnicodeDecodeError:
            # the pure-Python protobuf refuses a string field that is
            # not UTF-8 (see _bytes_class)
            msg = _bytes_class(cls)()
            msg.ParseFromString(buf)
    except Exception as e:  # DecodeError or RuntimeError
        raise BadImage(path, "cannot decode %s entry: %s"
                       % (cls.DESCRIPTOR.name, e)) from None
    if strict.log:
        strict.check(path, "%s entry" % cls.DESCRIPTOR.name)
    return msg


_BYTES_CLASSES = {}


def _bytes_class(cls):
    """cls with every string field (its own, its sub-messages') declared as
    bytes.  CRIU stores names as the bytes they are; protobuf's C++
    implementation hands a string field that is not UTF-8 back as bytes,
    the pure-Python one (Debian sid's python3-protobuf under Python 3.14)
    raises instead.  Used only for the messages that hold such a field;
    _text() decodes the bytes."""
    name = cls.DESCRIPTOR.full_name
    if name not in _BYTES_CLASSES:
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def bytes_fields(messages):
            for m in messages:
                for f in m.field:
                    if f.type == f.TYPE_STRING:
                        f.type = f.TYPE_BYTES
                bytes_fields(m.nested_type)

        def add(fd):
            if fd.name in added:
                return
            added.add(fd.name)
            for dep in fd.dependencies:
                add(dep)
            fdp = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(fdp)
            if fd.package != "google.protobuf":
                bytes_fields(fdp.message_type)
            pool.Add(fdp)

        add(cls.DESCRIPTOR.file)
        desc = pool.FindMessageTypeByName(name)
        if hasattr(message_factory, "GetMessageClass"):
            _BYTES_CLASSES[name] = message_factory.GetMessageClass(desc)
        else:
            _BYTES_CLASSES[name] = message_factory.MessageFactory(pool).GetPrototype(desc)
    return _BYTES_CLASSES[name]


def load_messages(d: ImageDir, name, expect, cls):
    """Every entry of image `name` of d, decoded as cls."""
    path = d.join(name)
    with quiet_protobuf_log(), strict_decoding() as strict:
        return [parse(path, cls, b, strict)
                for b in read_entries(d, name, expect)]


def _text(value):
    """A string field as str.  CRIU stores file names and comms as they are
    (any bytes); protobuf's C++ implementation hands a field that is not
    UTF-8 back as bytes (and parse() reads it as bytes with the Python one),
    decoded here the way os functions take them back."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


class quiet_protobuf_log:
    """Keep protobuf's C++ implementation from writing its own log lines
    ("[libprotobuf ERROR ...] String field ... contains invalid UTF-8") to
    file descriptor 2 while images are decoded: our stderr carries our
    messages only.  Nothing else writes to fd 2 meanwhile.  Inside another
    (a batch of thread images) it does nothing."""

    def __enter__(self):
        global _devnull, _quiet
        self._saved = None
        if not _QUIET_NEEDED or _quiet:
            return self
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            # opened once (an open per thread's core image is a cost); a
            # forked worker opens its own (_forget_devnull)
            if _devnull is None:
                _devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            os.dup2(_devnull, 2)
        except BaseException:
            os.close(saved)
            raise
        self._saved = saved
        _quiet = True
        return self

    def __exit__(self, *exc):
        global _quiet
        saved = self._saved
        if saved is not None:
            self._saved = None
            _quiet = False
            try:
                os.dup2(saved, 2)
            finally:
                os.close(saved)
        return False


_QUIET_NEEDED = _api_implementation.Type() == "cpp"
_devnull = None  # a descriptor of /dev/null, this process's own
_quiet = False   # fd 2 is /dev/null now


def _forget_devnull():
    global _devnull
    _devnull = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_devnull)


def load_one(d: ImageDir, name, expect, cls):
    msgs = load_messages(d, name, expect, cls)
    if not msgs:
        raise BadImage(d.join(name), "no entry")
    return msgs[0]


def message_class(fdp, name):
    """Our own declaration of a CRIU message (protodecl.message_class)."""
    return protodecl.message_class(fdp, name)


# core_entry's field 1, for an mtype pycriu's enum does not know (CRIU 4.x
# added LOONGARCH64 7 and RISCV64 8; pycriu 3.17 stops at MIPS 6)
_CoreMarch = protodecl.declare("criu_coredump_march.proto", [
    ("core_entry_march", [("mtype", 1, "uint32")])], "core_entry_march")


def _mtype(path, core):
    if core.HasField("mtype"):
        return core.mtype
    own = parse(path, _CoreMarch, core.SerializePartialToString())
    return own.mtype if own.HasField("mtype") else None


def _thread_info(path, core, arch):
    """The core entry's thread_info for `arch`, or None when absent; read
    with the arch's own declaration when pycriu does not know the field."""
    field = arch.ti_field
    if protodecl.declares(core, field):
        return getattr(core, field) if core.HasField(field) else None
    own = parse(path, arch.ti_class, core.SerializePartialToString())
    return getattr(own, field) if own.HasField(field) else None


def _arch_of(path, core):
    """(Arch, decoded registers or None) of a core entry."""
    found = {}  # arch name -> its registers' message: identify() asks too

    def info_of(a):
        if a.name not in found:
            found[a.name] = _thread_info(path, core, a)
        return found[a.name]
    arch = arches.identify(path, _mtype(path, core), info_of)
    ti = info_of(arch)
    if ti is None:
        return arch, None

    def reparse(cls, msg):
        return parse(path, cls, msg.SerializePartialToString())
    return arch, arch.decode(ti, reparse)


def _signals(queue):
    return [bytes(s.siginfo) for s in queue.signals]


def _load_thread(d: ImageDir, tid):
    check_pid(d.join(d.PSTREE), "thread id", tid)
    name = d.core(tid)
    path = d.join(name)
    core = load_one(d, name, "CORE", _pb.core_entry)
    arch, regs = _arch_of(path, core)
    th = Thread(tid=tid, arch=arch.name, regs=regs)
    if core.HasField("thread_core"):
        tc = core.thread_core
        th.comm = _text(tc.comm)
        th.blk_sigset = tc.blk_sigset
        th.sched_nice = tc.sched_nice
        if tc.HasField("signals_p"):
            th.pending = _signals(tc.signals_p)
        if tc.HasField("creds"):
            th.uid, th.gid = tc.creds.uid, tc.creds.gid
    return core, th


def _load_mm(d: ImageDir, pid, arch):
    path = d.join(d.mm(pid))
    mm = load_one(d, d.mm(pid), "MM", _pb.mm_entry)
    # the arch's largest user address space: a VMA ending above it cannot
    # come from a real process, and must not make us write a core of 2^60
    # bytes; x86_64's vsyscall page lies above it and is the one exception
    desc = arches.by_name(arch)
    limit = desc.user_va_end
    auxv = desc.auxv_words(mm.mm_saved_auxv)
    pagesz = dict(zip(auxv[0::2], auxv[1::2])).get(AT_PAGESZ, desc.page_size)
    if pagesz != desc.page_size:
        # the pagemaps count pages of that size (a ppc64 or aarch64 kernel
        # with 64 KiB pages): read as 4 KiB ones they would misplace memory
        raise BadImage(path, "the process ran with %d-byte pages; only %d-byte "
                       "pages are supported" % (pagesz, desc.page_size))
    vmas, guards, notices = [], [], []
    unknown = 0
    for v in mm.vmas:
        if v.end <= v.start:
            raise BadImage(path, "VMA 0x%x-0x%x is empty or reversed"
                           % (v.start, v.end))
        if v.start % PAGE_SIZE or v.end % PAGE_SIZE:
            raise BadImage(path, "VMA 0x%x-0x%x is not page aligned"
                           % (v.start, v.end))
        if v.end > limit and not v.status & VMA_AREA_VSYSCALL:
            raise BadImage(path, "VMA 0x%x-0x%x (%d bytes) lies beyond the "
                           "%s address space (0x%x)"
                           % (v.start, v.end, v.end - v.start, arch, limit))
        unknown |= v.status & ~KNOWN_VMA_STATUS
        if v.status & VMA_AREA_GUARD:
            guards.append((v.start, v.end))
            continue
        if v.pgoff % PAGE_SIZE or v.pgoff + (v.end - v.start) > MAX_FILE_OFFSET:
            raise BadImage(path, "VMA 0x%x-0x%x has a file offset 0x%x that is "
                           "not page aligned or beyond any file"
                           % (v.start, v.end, v.pgoff))
        vmas.append(Vma(v.start, v.end, v.pgoff, v.shmid, v.prot, v.flags,
                        v.status, v.madv))
    vmas.sort(key=lambda x: x.start)
    for a, b in zip(vmas, vmas[1:]):
        if b.start < a.end:
            raise BadImage(path, "VMAs 0x%x-0x%x and 0x%x-0x%x overlap"
                           % (a.start, a.end, b.start, b.end))
    if unknown:
        notices.append("VMA status bits 0x%x are unknown to this version; "
                       "those VMAs are read as ordinary mappings" % unknown)
    return Mm(vmas=vmas, auxv=list(mm.mm_saved_auxv),
              arg_start=mm.mm_arg_start, arg_end=mm.mm_arg_end,
              exe_file_id=mm.exe_file_id,
              guards=_inside_vmas(guards, vmas, notices), notices=notices)


def _inside_vmas(guards, vmas, notices):
    """The guard ranges, sorted and merged, each cut to the VMAs it lies
    in: a guard is a property of pages of a VMA, never a mapping of its own.
    A range outside every VMA guards nothing and is reported."""
    starts = [v.start for v in vmas]
    out = []
    for a, b in sorted(guards):
        pos = a
        while pos < b:
            i = bisect_right(starts, pos) - 1
            if i < 0 or pos >= vmas[i].end:
                nxt = starts[i + 1] if i + 1 < len(starts) else b
                notices.append("guard region 0x%x-0x%x lies outside every VMA; "
                               "ignored" % (pos, min(b, nxt)))
                pos = min(b, nxt)
                continue
            end = min(b, vmas[i].end)
            if out and out[-1][1] >= pos:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((pos, end))
            pos = end
    return out


def _need_regs(d: ImageDir, th):
    """A live thread's core image must hold its registers."""
    if th.regs is None:
        raise BadImage(d.join(d.core(th.tid)),
                       "no %s thread info (registers)" % th.arch)


def load_process(images_dir, entry, stream_threads=False) -> Process:
    """One pstree entry with its threads' core images and its mm
    (images_dir: an ImageDir or its path).  stream_threads: the threads
    other than the main one are read when proc.threads is iterated
    (Threads), not now; their errors come then."""
    d = as_imagedir(images_dir)
    pid = entry.pid
    tids = thread_ids(entry)
    core, main = _load_thread(d, pid)
    if not core.HasField("tc"):
        raise BadImage(d.join(d.core(pid)),
                       "main thread has no task core (tc)")
    tc = core.tc
    if tc.task_state not in (TASK_ALIVE, TASK_DEAD, TASK_STOPPED):
        raise BadImage(d.join(d.core(pid)),
                       "task state %d is not one of a process" % tc.task_state)
    proc = Process(pid=pid, ppid=entry.ppid, pgid=entry.pgid, sid=entry.sid,
                   arch=main.arch, comm=_text(tc.comm), task_state=tc.task_state,
                   exit_code=tc.exit_code, flags=tc.flags)
    if tc.HasField("signals_s"):
        proc.shared_pending = _signals(tc.signals_s)
    if not main.comm:
        main.comm = _text(tc.comm)
    if not main.blk_sigset:
        main.blk_sigset = tc.blk_sigset
    if proc.is_zombie:
        # A zombie has one core image and no threads, mm or registers; its
        # pstree entry's thread list means nothing (CRIU 4.2 leaves [0] or
        # an uninitialised id there).
        return proc
    if pid not in tids:
        raise BadImage(d.join(d.PSTREE), "process %d is not "
                       "among its own threads %s" % (pid, tids))
    _need_regs(d, main)
    others = [t for t in tids if t != pid]
    if stream_threads:
        proc.threads = Threads(d, main, others)
    else:
        proc.threads.append(main)
        proc.threads.extend(_other_thread(d, tid, main.arch) for tid in others)
    proc.mm = _load_mm(d, pid, proc.arch)
    return proc


def _other_thread(d: ImageDir, tid, arch):
    """A thread other than the main one, which must be of its arch and
    hold registers."""
    _, th = _load_thread(d, tid)
    if th.arch != arch:
        raise BadImage(d.join(d.core(tid)),
                       "thread architecture %s differs from the main "
                       "thread's %s" % (th.arch, arch))
    _need_regs(d, th)
    return th


class Threads:
    """The threads of a process, the main one first, each other one read
    from its core image when it is reached.

    A process of 100,000 threads has hundreds of MiB of decoded registers;
    its core's notes are written one thread after the other, so the
    conversion reads each thread as its notes are made and keeps only the
    main thread and the ids: memory does not grow with the threads.
    Iterating again reads them again.  A thread's errors (BadImage naming
    its core image) are raised when it is reached."""

    __slots__ = ("_d", "main", "tids")

    def __init__(self, d: ImageDir, main, tids):
        self._d = d
        self.main = main
        self.tids = tids          # the other threads' ids, in pstree order

    def __len__(self):
        return 1 + len(self.tids)

    def __getitem__(self, i):
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("thread index out of range")
        if i == 0:
            return self.main
        return _other_thread(self._d, self.tids[i - 1], self.main.arch)

    def __iter__(self):
        yield self.main
        d, arch, tids = self._d, self.main.arch, self.tids
        for start in range(0, len(tids), THREAD_BATCH):
            # a batch read under one quiet protobuf log and one record of
            # warnings: entering them is system calls and warnings-module
            # work that would otherwise be paid per thread
            with quiet_protobuf_log(), strict_decoding():
                batch = [_other_thread(d, tid, arch)
                         for tid in tids[start:start + THREAD_BATCH]]
            yield from batch


THREAD_BATCH = 64  # threads read at a time (a few hundred KiB of registers)


def _load_files(d: ImageDir):
    files = {}
    if d.exists(d.FILES):
        entries = load_messages(d, d.FILES, "FILES", _pb.file_entry)
        regs = [e.reg for e in entries if e.HasField("reg")]
        memfds = [e.memfd for e in entries if e.HasField("memfd")]
    else:
        regs, memfds = [], []
        if d.exists(d.REG_FILES):
            regs = load_messages(d, d.REG_FILES, "REG_FILES", _pb.reg_file_entry)
    for r in regs:
        files[r.id] = MappedFile(id=r.id, path=_text(r.name),
                                 size=r.size if r.HasField("size") else None,
                                 mode=r.mode, build_id=_build_id(r))
    if memfds:
        inodes = {}
        if d.exists(d.MEMFD):
            for ino in load_messages(d, d.MEMFD, "MEMFD_INODE",
                                     _pb.memfd_inode_entry):
                inodes[ino.inode_id] = ino
        for m in memfds:
            ino = inodes.get(m.inode_id)
            files[m.id] = MappedFile(
                id=m.id, path=_text(ino.name) if ino else "memfd-%d" % m.inode_id,
                kind="memfd", size=ino.size if ino else None,
                shmem_id=ino.shmid if ino else None)
    if d.exists(d.REMAP_FPATH):
        for r in load_messages(d, d.REMAP_FPATH, "REMAP_FPATH",
                               _pb.remap_file_path_entry):
            f = files.get(r.orig_id)
            if f is None:
                continue
            if r.HasField("remap_type"):
                kind = r.remap_type
            else:  # images older than remap_type: the id's top bit tells
                kind = REMAP_GHOST if r.remap_id & REMAP_GHOST_BIT else REMAP_LINKED
            # LINKED and GHOST remaps are files unlinked while mapped; their
            # contents are where CRIU put them: a hard link it made, or a
            # ghost image (remap_id with REMAP_GHOST_BIT is CRIU's own mark)
            if kind == REMAP_LINKED:
                f.deleted = True
                link = files.get(r.remap_id)
                if link is not None:
                    f.linked_path = link.path
            elif kind == REMAP_GHOST:
                f.deleted = True
                gid = r.remap_id & ~REMAP_GHOST_BIT
                f.ghost = load_ghost(d, d.ghost(gid))
    return files


REMAP_LINKED, REMAP_GHOST = 0, 1
REMAP_GHOST_BIT = 1 << 31


def _build_id(reg):
    """The build-id CRIU recorded for a regular file (CRIU 3.16+: the ELF
    note's bytes, copied into 32-bit words), or None."""
    words = list(reg.build_id)
    if not words:
        return None
    return struct.pack("<%dI" % len(words), *words)


def load_ghost(d: ImageDir, name):
    """(name, extents) of a ghost image: where each part of the deleted
    file's contents lies in the image, as (file offset, length, image
    offset).  The image holds a ghost_file_entry and then either the whole
    contents, or (chunks) ghost_chunk_entry records each followed by its
    bytes (criu/files-reg.c, copy_file_to_chunks)."""
    path = d.join(name)
    with ImageReader(open_image(d, name)) as f:
        size = f.end
        _read_magic(f, path, "GHOST_FILE")
        hdr = f.read(4)
        if len(hdr) < 4:
            raise BadImage(path, "no ghost file entry")
        n, = struct.unpack("<I", hdr)
        raw = f.read(min(n, MAX_ENTRY))
        if len(raw) < n:
            raise BadImage(path, "truncated ghost file entry")
        with quiet_protobuf_log():
            entry = parse(path, _pb.ghost_file_entry, raw)
        pos = f.tell()
        if not entry.chunks:
            return (name, [(0, size - pos, pos)] if size > pos else [])
        extents = []
        while pos < size:
            f.seek(pos)
            hdr = f.read(4)
            if len(hdr) < 4:
                raise BadImage(path, "truncated ghost chunk header")
            n, = struct.unpack("<I", hdr)
            if n > MAX_ENTRY:
                raise BadImage(path, "ghost chunk entry of %d bytes is absurd" % n)
            with quiet_protobuf_log():
                ce = parse(path, _pb.ghost_chunk_entry, f.read(n))
            pos += 4 + n
            if pos + ce.len > size:
                raise BadImage(path, "ghost chunk at file offset %d is truncated"
                               % ce.off)
            extents.append((ce.off, ce.len, pos))
            pos += ce.len
        extents.sort()
        return (name, extents)


def open_checkpoint(images_dir) -> Checkpoint:
    """Read pstree and files: what every process of the tree shares
    (images_dir: an ImageDir or its path)."""
    d = as_imagedir(images_dir)
    d.check()
    tree_path = d.join(d.PSTREE)
    entries = load_messages(d, d.PSTREE, "PSTREE", _pb.pstree_entry)
    if not entries:
        raise BadImage(tree_path, "no process in the tree")
    _check_tree(tree_path, entries)
    _check_ids(tree_path, entries)
    return Checkpoint(dir=d.path, entries=entries, files=_load_files(d),
                      images=d)


def thread_ids(entry):
    """The thread ids a pstree entry names (a zombie's [0] names none)."""
    return [t for t in entry.threads if t] or [entry.pid]


def _check_tree(path, entries):
    """Every pid and tid is named once: each names image files and a core,
    and a thread must not be dumped twice.

    A zombie's thread list is not checked here: CRIU 4.2 writes [0] or an
    uninitialised id for it, and only its core image (task_state) tells a
    zombie; so an entry whose pid is not among its threads is judged when
    the process is loaded (load_process), and its tids are not counted."""
    seen = set()
    for e in entries:
        if e.pid == 0:
            raise BadImage(path, "process id 0 is not valid")
        if e.pid in seen:
            raise BadImage(path, "id %d appears twice in the process tree" % e.pid)
        seen.add(e.pid)
    for e in entries:
        tids = thread_ids(e)
        if e.pid not in tids:
            continue
        if tids.count(e.pid) > 1:
            raise BadImage(path, "id %d appears twice in the process tree" % e.pid)
        for t in tids:
            if t != e.pid and t in seen:
                raise BadImage(path, "id %d appears twice in the process tree" % t)
            seen.add(t)


# The largest pid Linux can hand out (PID_MAX_LIMIT, 4 * 1024 * 1024 on 64
# bit; pid_max cannot be set above it).  Anything larger, such as 2^31 or
# 2^32 - 1, did not come from a kernel, and would wrap into a negative
# pr_pid in the core's 32-bit fields.
PID_MAX_LIMIT = 1 << 22


def check_pid(path, what, value, zero_ok=False):
    if not (0 if zero_ok else 1) <= value <= PID_MAX_LIMIT:
        raise BadImage(path, "%s %d is not a possible pid (1 to %d)"
                       % (what, value, PID_MAX_LIMIT))


def _check_ids(path, entries):
    """pids, parents, groups and sessions within what a kernel gives out
    (ppid, pgid and sid are 0 when they lie outside the checkpoint's pid
    namespace); thread ids are checked as their core images are loaded."""
    for e in entries:
        check_pid(path, "process id", e.pid)
        for what, v in (("parent id", e.ppid), ("process group id", e.pgid),
                        ("session id", e.sid)):
            check_pid(path, "process %d: %s" % (e.pid, what), v, zero_ok=True)


def select(ckpt, pids):
    """The pstree entries for `pids` (all when None), or BadImage naming
    the pids the checkpoint does not have."""
    if not pids:
        return list(ckpt.entries)
    known = {e.pid for e in ckpt.entries}
    missing = [p for p in pids if p not in known]
    if missing:
        raise BadImage(ckpt.images.join(ImageDir.PSTREE), "no process %s in this "
                       "checkpoint" % ", ".join(map(str, missing)))
    return [e for e in ckpt.entries if e.pid in set(pids)]
