"""Load a CRIU image directory into small typed records.

This is the only module that touches pycriu.  It reads protobuf messages
directly (pycriu's message classes, without its dict conversion, which is
slow and loses nothing we need), and absorbs the differences between CRIU
and pycriu versions:

* pagemap entries: CRIU 4.2+ keeps the page count in a 64-bit field 5 and
  leaves the old 32-bit field 2 at 0; Debian's pycriu 3.17 does not know
  field 5.  Pagemaps are decoded with our own message class (pagemap.py).
* `files.img` (CRIU 3.x+) versus the older `reg-files.img`.
* aarch64 pointer-authentication keys (thread_info_aarch64 field 5, CRIU
  3.19+), unknown to pycriu 3.17: read with our own message class.
"""
import os
import re
import stat
import struct
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from .errors import BadImage

try:
    import pycriu  # noqa: F401  (the distribution's package, see README)
    from pycriu.images import magic as _magic
    from pycriu.images import pb as _pb
    # protobuf comes with pycriu (the distribution's python3-protobuf)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf.internal import api_implementation as _api_implementation
except ImportError as exc:  # pragma: no cover - exercised by the CLI test
    raise ImportError(
        "pycriu is not importable: install the distribution package that "
        "ships it ('python3-pycriu' on Debian 13+, 'criu' on Debian 12/Ubuntu, "
        "'python3-criu' on Fedora)") from exc

# VMA status bits (criu/include/image.h)
VMA_AREA_REGULAR = 1 << 0
VMA_AREA_STACK = 1 << 1
VMA_AREA_VSYSCALL = 1 << 2
VMA_AREA_VDSO = 1 << 3
VMA_AREA_HEAP = 1 << 5
VMA_FILE_PRIVATE = 1 << 6
VMA_FILE_SHARED = 1 << 7
VMA_ANON_SHARED = 1 << 8
VMA_ANON_PRIVATE = 1 << 9
VMA_AREA_SYSVIPC = 1 << 10
VMA_AREA_SOCKET = 1 << 11
VMA_AREA_VVAR = 1 << 12
VMA_AREA_AIORING = 1 << 13
VMA_AREA_MEMFD = 1 << 14

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_ANON = 1, 2, 0x20
MAP_HUGETLB = 0x40000  # CRIU sets it from smaps' "ht" VmFlag
MADV_DONTDUMP = 16

# task_state (criu/include/pstree.h + images/core.proto)
TASK_ALIVE = 1
TASK_DEAD = 2
TASK_STOPPED = 3
TASK_HELPER = 4
TASK_THREAD = 5

PAGE_SIZE = 4096
MAX_ENTRY = 64 << 20  # no real image entry comes near this
_BLOCK = 1 << 18      # bytes of an image read at a time

# The largest user address space of each arch (x86_64 with 5-level paging,
# aarch64 with 52-bit VAs, 32-bit tasks): a VMA ending above it cannot come
# from a real process, and must not make us write a core of 2^60 bytes.
# x86_64's vsyscall page lies above it and is the one exception.
MAX_FILE_OFFSET = (1 << 63) - 1  # off_t
USER_VA_END = {"x86_64": 1 << 56, "aarch64": 1 << 52, "ia32": 1 << 32,
               "arm": 1 << 32}


@dataclass
class Vma:
    start: int
    end: int
    pgoff: int        # bytes, as CRIU stores it
    shmid: int        # file id for file mappings, shmem id for shared anon
    prot: int
    flags: int
    status: int
    madv: int = 0

    @property
    def size(self):
        return self.end - self.start

    @property
    def is_shared(self):
        return bool(self.flags & MAP_SHARED)

    @property
    def is_hugetlb(self):
        return bool(self.flags & MAP_HUGETLB)

    @property
    def is_file(self):
        return bool(self.status & (VMA_FILE_PRIVATE | VMA_FILE_SHARED))

    def has(self, bit):
        return bool(self.status & bit)


# Names the kernel gives the files of its internal shmem mount that are not
# memfds (mm/shmem.c shmem_zero_setup, ipc/shm.c newseg).
_SHMEM_INTERNAL = re.compile(r"^/(dev/zero|SYSV[0-9a-f]{8})$")


@dataclass
class MappedFile:
    """What a VMA's shmid names in files.img (regular file or memfd)."""
    id: int
    path: str                 # path in the process's mount namespace
    kind: str = "reg"         # "reg" or "memfd"
    size: Optional[int] = None
    mode: int = 0
    deleted: bool = False
    shmem_id: Optional[int] = None  # memfd: id of its pagemap-shmem image

    @property
    def kernel_name(self):
        """The name the kernel shows in /proc/PID/maps and NT_FILE.

        CRIU dumps every file of the kernel's internal shmem mount as a
        memfd, naming it by its link with "/memfd:" and " (deleted)"
        stripped: a memfd_create() file becomes its bare name, but shared
        anonymous memory (a shmem file the kernel calls "dev/zero") and
        SysV segments ("SYSV<key>") keep their leading "/".
        """
        if self.kind == "memfd":
            if _SHMEM_INTERNAL.match(self.path):
                return self.path + " (deleted)"
            return "/memfd:%s (deleted)" % self.path
        if self.deleted:
            return self.path + " (deleted)"
        return self.path


@dataclass
class Thread:
    tid: int
    arch: str
    regs: object               # the arch's thread_info protobuf message
    comm: str = ""
    blk_sigset: int = 0
    pending: List[bytes] = field(default_factory=list)  # raw siginfo
    sched_nice: int = 0
    uid: int = 0
    gid: int = 0
    pac: Optional["PacKeys"] = None   # aarch64 only, when the images have them


@dataclass
class PacKeys:
    """aarch64 pointer-authentication state CRIU saved (images/
    core-aarch64.proto pac_keys): 128-bit keys as (lo, hi) word pairs."""
    address: Optional[tuple] = None   # apia, apib, apda, apdb: 8 words
    enabled: int = 0                  # PR_PAC_AP*KEY bits of enabled keys
    generic: Optional[tuple] = None   # apga: 2 words


@dataclass
class Mm:
    vmas: List[Vma]
    auxv: List[int]
    arg_start: int = 0
    arg_end: int = 0
    exe_file_id: int = 0


@dataclass
class Process:
    pid: int
    ppid: int
    pgid: int
    sid: int
    arch: str
    comm: str
    task_state: int
    exit_code: int = 0
    flags: int = 0
    threads: List[Thread] = field(default_factory=list)
    shared_pending: List[bytes] = field(default_factory=list)
    mm: Optional[Mm] = None

    @property
    def is_zombie(self):
        return self.task_state == TASK_DEAD


@dataclass
class Checkpoint:
    """An image directory: its process tree and files; processes are loaded
    one at a time with load_process() so that a tree converts in bounded
    memory and one broken process does not stop the others."""
    dir: str
    entries: list          # pstree entries (protobuf), in pstree order
    files: Dict[int, MappedFile]


def _path(d, name):
    return os.path.join(d, name)


def read_entries(path, expect):
    """Yield the raw protobuf payloads of an image, after checking its magic.

    A generator: the file is opened when it is first consumed and closed
    when it is exhausted, fails or is dropped.
    """
    try:
        # non-blocking: a FIFO planted in an image directory must not hang us
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BadImage(path, "missing") from None
    except OSError as e:
        raise BadImage(path, "cannot open: %s" % e.strerror) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadImage(path, "not a regular file")
        try:
            yield from _frames(f, path, expect)
        except OSError as e:
            raise BadImage(path, "cannot read: %s" % (e.strerror or e)) from None


def _frames(f, path, expect):
    """The payloads of an image's entries, after its magic."""
    head = f.read(4)
    if len(head) < 4:
        raise BadImage(path, "truncated image (no magic)" if head else "empty image")
    m, = struct.unpack("<I", head)
    if m in (_magic.by_name["IMG_COMMON"], _magic.by_name["IMG_SERVICE"]):
        head = f.read(4)
        if len(head) < 4:
            raise BadImage(path, "truncated image (no second magic)")
        m, = struct.unpack("<I", head)
    name = _magic.by_val.get(m)
    if name != expect:
        raise BadImage(path, "wrong magic 0x%08x (%s), expected a %s image"
                       % (m, name or "unknown", expect))
    # read in blocks: for a pagemap of a million small entries, two read
    # calls per entry cost more than decoding them
    buf = b""
    pos = 0
    unpack = struct.unpack_from
    while True:
        if len(buf) - pos < 4:
            more = f.read(_BLOCK)
            if not more:
                if pos < len(buf):
                    raise BadImage(path, "truncated entry header")
                return
            buf = buf[pos:] + more
            pos = 0
            continue
        size, = unpack("<I", buf, pos)
        if size > MAX_ENTRY:
            raise BadImage(path, "entry of %d bytes is absurd" % size)
        end = pos + 4 + size
        if end > len(buf):
            more = f.read(max(_BLOCK, end - len(buf)))
            if not more:
                raise BadImage(path, "truncated entry (%d of %d bytes)"
                               % (len(buf) - pos - 4, size))
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

    def __enter__(self):
        self._cw = warnings.catch_warnings(record=True)
        self.log = self._cw.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        return self._cw.__exit__(*exc)

    def check(self, path, what):
        if self.log:
            msg = self.log[0].message
            del self.log[:]
            raise BadImage(path, "cannot decode %s: %s" % (what, msg))


def parse(path, cls, buf):
    msg = cls()
    with strict_decoding() as strict:
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


def load_messages(path, expect, cls):
    with quiet_protobuf_log():
        return [parse(path, cls, b) for b in read_entries(path, expect)]


def _text(value):
    """A string field as str.  CRIU stores file names and comms as they are
    (any bytes); protobuf's C++ implementation hands a field that is not
    UTF-8 back as bytes (and parse() reads it as bytes with the Python one),
    decoded here the way os functions take them back."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


@contextmanager
def quiet_protobuf_log():
    """Keep protobuf's C++ implementation from writing its own log lines
    ("[libprotobuf ERROR ...] String field ... contains invalid UTF-8") to
    file descriptor 2 while images are decoded: our stderr carries our
    messages only.  Nothing else writes to fd 2 meanwhile."""
    if _api_implementation.Type() != "cpp":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(null, 2)
        os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_one(path, expect, cls):
    msgs = load_messages(path, expect, cls)
    if not msgs:
        raise BadImage(path, "no entry")
    return msgs[0]


_MTYPES = {1: "x86_64", 2: "arm", 3: "aarch64", 4: "ppc64", 5: "s390",
           6: "mips"}


def _arch_of(path, core):
    if not core.HasField("mtype"):  # absent, or a value pycriu does not know
        raise BadImage(path, "machine type missing or unknown")
    name = _MTYPES.get(core.mtype)
    if name is None:
        raise BadImage(path, "unknown machine type %d" % core.mtype)
    if name == "x86_64":
        if not core.HasField("thread_info"):
            return name, None
        ti = core.thread_info
        # user_x86_regs_mode: NATIVE 1, COMPAT 2
        if ti.gpregs.HasField("mode") and ti.gpregs.mode == 2:
            return "ia32", ti
        return name, ti
    field_name = {"arm": "ti_arm", "aarch64": "ti_aarch64"}.get(name)
    if field_name is None:
        raise BadImage(path, "machine type %s is not supported" % name)
    return name, (getattr(core, field_name) if core.HasField(field_name) else None)


def message_class(fdp, name):
    """The class of message `name` of a FileDescriptorProto (package
    criu_coredump): our own declarations of CRIU messages or fields that the
    installed pycriu may not know."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("criu_coredump." + name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


_PAC_ADDRESS = ("apiakey_lo", "apiakey_hi", "apibkey_lo", "apibkey_hi",
                "apdakey_lo", "apdakey_hi", "apdbkey_lo", "apdbkey_hi")


def _pac_message_class():
    """thread_info_aarch64 reduced to its field 5 (pac_keys), as CRIU's
    images/core-aarch64.proto declares it; the other fields stay unknown."""
    fdp = descriptor_pb2.FileDescriptorProto(name="criu_coredump_pac.proto",
                                             package="criu_coredump")
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for fname, num, typ in fields:
            f = m.field.add(name=fname, number=num, label=F.LABEL_OPTIONAL)
            if isinstance(typ, str):
                f.type, f.type_name = F.TYPE_MESSAGE, ".criu_coredump." + typ
            else:
                f.type = typ

    u64 = F.TYPE_UINT64
    message("pac_address_keys", [(n, i, u64) for i, n in enumerate(
        _PAC_ADDRESS + ("pac_enabled_key",), 1)])
    message("pac_generic_keys", [("apgakey_lo", 1, u64), ("apgakey_hi", 2, u64)])
    message("pac_keys", [("pac_address_keys", 6, "pac_address_keys"),
                         ("pac_generic_keys", 7, "pac_generic_keys")])
    message("thread_info_aarch64_pac", [("pac_keys", 5, "pac_keys")])
    return message_class(fdp, "thread_info_aarch64_pac")


PacThreadInfo = _pac_message_class()


def _pac_keys(path, ti):
    """The PAC keys of an aarch64 thread_info, or None (no PAC hardware, or
    a CRIU older than 3.19)."""
    msg = parse(path, PacThreadInfo, ti.SerializePartialToString())
    if not msg.HasField("pac_keys"):
        return None
    keys, pac = msg.pac_keys, PacKeys()
    if keys.HasField("pac_address_keys"):
        a = keys.pac_address_keys
        pac.address = tuple(getattr(a, n) for n in _PAC_ADDRESS)
        pac.enabled = a.pac_enabled_key
    if keys.HasField("pac_generic_keys"):
        g = keys.pac_generic_keys
        pac.generic = (g.apgakey_lo, g.apgakey_hi)
    return pac


def _signals(queue):
    return [bytes(s.siginfo) for s in queue.signals]


def _load_thread(images_dir, tid):
    path = _path(images_dir, "core-%d.img" % tid)
    core = load_one(path, "CORE", _pb.core_entry)
    arch, regs = _arch_of(path, core)
    th = Thread(tid=tid, arch=arch, regs=regs)
    if arch == "aarch64" and regs is not None:
        th.pac = _pac_keys(path, regs)
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


def _load_mm(images_dir, pid, arch):
    path = _path(images_dir, "mm-%d.img" % pid)
    mm = load_one(path, "MM", _pb.mm_entry)
    limit = USER_VA_END.get(arch, 1 << 64)
    vmas = []
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
    return Mm(vmas=vmas, auxv=list(mm.mm_saved_auxv),
              arg_start=mm.mm_arg_start, arg_end=mm.mm_arg_end,
              exe_file_id=mm.exe_file_id)


def _need_regs(images_dir, th):
    """A live thread's core image must hold its registers."""
    if th.regs is None:
        raise BadImage(_path(images_dir, "core-%d.img" % th.tid),
                       "no %s thread info (registers)" % th.arch)


def load_process(images_dir, entry):
    """One pstree entry with its threads' core images and its mm."""
    pid = entry.pid
    tids = list(entry.threads) or [pid]
    core, main = _load_thread(images_dir, pid)
    if not core.HasField("tc"):
        raise BadImage(_path(images_dir, "core-%d.img" % pid),
                       "main thread has no task core (tc)")
    tc = core.tc
    if tc.task_state not in (TASK_ALIVE, TASK_DEAD, TASK_STOPPED):
        raise BadImage(_path(images_dir, "core-%d.img" % pid),
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
        # A zombie has one core image and no threads, mm or registers.
        return proc
    _need_regs(images_dir, main)
    proc.threads.append(main)
    for tid in tids:
        if tid == pid:
            continue
        _, th = _load_thread(images_dir, tid)
        if th.arch != main.arch:
            raise BadImage(_path(images_dir, "core-%d.img" % tid),
                           "thread architecture %s differs from the main "
                           "thread's %s" % (th.arch, main.arch))
        _need_regs(images_dir, th)
        proc.threads.append(th)
    proc.mm = _load_mm(images_dir, pid, proc.arch)
    return proc


def _load_files(images_dir):
    files = {}
    path = _path(images_dir, "files.img")
    if os.path.exists(path):
        entries = load_messages(path, "FILES", _pb.file_entry)
        regs = [e.reg for e in entries if e.HasField("reg")]
        memfds = [e.memfd for e in entries if e.HasField("memfd")]
    else:
        regs, memfds = [], []
        old = _path(images_dir, "reg-files.img")
        if os.path.exists(old):
            regs = load_messages(old, "REG_FILES", _pb.reg_file_entry)
    for r in regs:
        files[r.id] = MappedFile(id=r.id, path=_text(r.name),
                                 size=r.size if r.HasField("size") else None,
                                 mode=r.mode)
    if memfds:
        inodes = {}
        ipath = _path(images_dir, "memfd.img")
        if os.path.exists(ipath):
            for ino in load_messages(ipath, "MEMFD_INODE", _pb.memfd_inode_entry):
                inodes[ino.inode_id] = ino
        for m in memfds:
            ino = inodes.get(m.inode_id)
            files[m.id] = MappedFile(
                id=m.id, path=_text(ino.name) if ino else "memfd-%d" % m.inode_id,
                kind="memfd", size=ino.size if ino else None,
                shmem_id=ino.shmid if ino else None)
    rpath = _path(images_dir, "remap-fpath.img")
    if os.path.exists(rpath):
        for r in load_messages(rpath, "REMAP_FPATH", _pb.remap_file_path_entry):
            f = files.get(r.orig_id)
            # LINKED (0) and GHOST (1) remaps are files unlinked while mapped
            if f is not None and (not r.HasField("remap_type") or r.remap_type in (0, 1)):
                f.deleted = True
    return files


def open_checkpoint(images_dir):
    """Read pstree and files: what every process of the tree shares."""
    if not os.path.isdir(images_dir):
        raise BadImage(images_dir, "not a directory" if os.path.exists(images_dir)
                       else "no such image directory")
    tree_path = _path(images_dir, "pstree.img")
    if not os.path.lexists(tree_path):
        try:
            empty = not os.listdir(images_dir)
        except OSError as e:
            raise BadImage(images_dir, "cannot list: %s" % e.strerror) from None
        raise BadImage(images_dir, "empty image directory" if empty else
                       "no pstree.img: not a CRIU image directory")
    entries = load_messages(tree_path, "PSTREE", _pb.pstree_entry)
    if not entries:
        raise BadImage(tree_path, "no process in the tree")
    _check_tree(tree_path, entries)
    return Checkpoint(dir=images_dir, entries=entries,
                      files=_load_files(images_dir))


def _check_tree(path, entries):
    """Every pid and tid is named once: each names image files and a core,
    and a thread must not be dumped twice.  (A zombie's threads are [0].)"""
    seen = set()
    for e in entries:
        if e.pid == 0:
            raise BadImage(path, "process id 0 is not valid")
        tids = [t for t in e.threads if t] or [e.pid]
        if e.pid not in tids:
            raise BadImage(path, "process %d is not among its own threads %s"
                           % (e.pid, tids))
        for t in tids:
            if t in seen:
                raise BadImage(path, "id %d appears twice in the process tree" % t)
            seen.add(t)


def select(ckpt, pids):
    """The pstree entries for `pids` (all when None), or BadImage naming
    the pids the checkpoint does not have."""
    if not pids:
        return list(ckpt.entries)
    known = {e.pid for e in ckpt.entries}
    missing = [p for p in pids if p not in known]
    if missing:
        raise BadImage(_path(ckpt.dir, "pstree.img"), "no process %s in this "
                       "checkpoint" % ", ".join(map(str, missing)))
    return [e for e in ckpt.entries if e.pid in set(pids)]
