"""The records the loader fills and the CRIU constants they are read with.

A leaf module: images.py (the loader) fills these records from the images,
the arch modules and the rest of the package read them; neither pycriu nor
protobuf is imported here.
"""
from __future__ import annotations

import re

from .record import Record

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
# CRIU 4.x
VMA_AREA_SHSTK = 1 << 15           # x86 shadow stack: a real VMA, anonymous
VMA_AREA_GUARD = 1 << 16           # MADV_GUARD_INSTALL range: not a VMA
VMA_AREA_UPROBES = 1 << 17         # the kernel's "[uprobes]" XOL area
VMA_AREA_NOT_ACCOUNTABLE = 1 << 18 # memory-accounting hint, for restore
VMA_EXT_PLUGIN = 1 << 27           # a device mapping a CRIU plugin restores
# Bits CRIU uses only while restoring; an image should not carry them, and
# they say nothing about what the process had mapped.
VMA_RESTORE_ONLY = (1 << 28) | (1 << 29) | (1 << 30)
VMA_UNSUPP = 1 << 31
KNOWN_VMA_STATUS = ((1 << 19) - 1) & ~(1 << 4) | VMA_EXT_PLUGIN \
    | VMA_RESTORE_ONLY | VMA_UNSUPP

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
MAX_FILE_OFFSET = (1 << 63) - 1  # off_t

class Vma(Record):
    def __init__(self, start: int,
                 end: int,
                 pgoff: int,
                 shmid: int,
                 prot: int,
                 flags: int,
                 status: int,
                 madv: int = 0):
        self.start = start
        self.end = end
        self.pgoff = pgoff                # bytes, as CRIU stores it
        self.shmid = shmid                # file id for file mappings, shmem id for shared anon
        self.prot = prot
        self.flags = flags
        self.status = status
        self.madv = madv

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
_SHMEM_INTERNAL = re.compile(r"^/(dev/zero|anon_hugepage|SYSV[0-9a-f]{8})$")


class MappedFile(Record):
    """What a VMA's shmid names in files.img (regular file or memfd)."""
    def __init__(self, id: int,
                 path: str,
                 kind: str = "reg",
                 size: int | None = None,
                 mode: int = 0,
                 deleted: bool = False,
                 shmem_id: int | None = None,
                 build_id: bytes | None = None,
                 ghost: tuple | None = None,
                 linked_path: str | None = None):
        self.id = id
        self.path = path                  # path in the process's mount namespace
        self.kind = kind                  # "reg" or "memfd"
        self.size = size
        self.mode = mode
        self.deleted = deleted
        self.shmem_id = shmem_id          # memfd: id of its pagemap-shmem image
        self.build_id = build_id          # NT_GNU_BUILD_ID CRIU read (padded to 4)
        # Contents of a file deleted while mapped, as CRIU saved them: a ghost
        # image (its name, [(file offset, length, image offset)]) or, for a LINKED
        # remap, the path CRIU linked the file to (in the process's view).
        self.ghost = ghost
        self.linked_path = linked_path

    @property
    def kernel_name(self):
        """The name the kernel shows in /proc/PID/maps and NT_FILE.

        CRIU dumps every file of the kernel's internal shmem mount as a
        memfd, naming it by its link with "/memfd:" and " (deleted)"
        stripped: a memfd_create() file becomes its bare name, but shared
        anonymous memory (a shmem file the kernel calls "dev/zero", or
        "anon_hugepage" on hugetlbfs) and SysV segments ("SYSV<key>") keep
        their leading "/".
        """
        if self.kind == "memfd":
            if _SHMEM_INTERNAL.match(self.path):
                return self.path + " (deleted)"
            return "/memfd:%s (deleted)" % self.path
        if self.deleted:
            return self.path + " (deleted)"
        return self.path


class Thread(Record):
    def __init__(self, tid: int,
                 arch: str,
                 regs: object,
                 comm: str = "",
                 blk_sigset: int = 0,
                 pending: list[bytes] | None = None,
                 sched_nice: int = 0,
                 uid: int = 0,
                 gid: int = 0):
        self.tid = tid
        self.arch = arch
        self.regs = regs                  # the arch's decoded registers (arch/<name>.decode)
        self.comm = comm
        self.blk_sigset = blk_sigset
        self.pending = [] if pending is None else pending  # raw siginfo
        self.sched_nice = sched_nice
        self.uid = uid
        self.gid = gid


class Mm(Record):
    def __init__(self, vmas: list[Vma],
                 auxv: list[int],
                 arg_start: int = 0,
                 arg_end: int = 0,
                 exe_file_id: int = 0,
                 guards: list[tuple] | None = None,
                 notices: list[str] | None = None):
        self.vmas = vmas
        self.auxv = auxv
        self.arg_start = arg_start
        self.arg_end = arg_end
        self.exe_file_id = exe_file_id
        # MADV_GUARD_INSTALL ranges (CRIU 4.2+ VMA_AREA_GUARD entries), sorted:
        # (start, end) inside a VMA; their pages read as zeros, as the kernel's
        # core has them (get_dump_page() finds no page behind a guard marker)
        self.guards = [] if guards is None else guards
        # what the loader saw but could not use: one warning each
        self.notices = [] if notices is None else notices


class Process(Record):
    def __init__(self, pid: int,
                 ppid: int,
                 pgid: int,
                 sid: int,
                 arch: str,
                 comm: str,
                 task_state: int,
                 exit_code: int = 0,
                 flags: int = 0,
                 threads: list[Thread] | None = None,
                 shared_pending: list[bytes] | None = None,
                 mm: Mm | None = None):
        self.pid = pid
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        self.arch = arch
        self.comm = comm
        self.task_state = task_state
        self.exit_code = exit_code
        self.flags = flags
        self.threads = [] if threads is None else threads
        self.shared_pending = [] if shared_pending is None else shared_pending
        self.mm = mm

    @property
    def is_zombie(self):
        return self.task_state == TASK_DEAD


class Checkpoint(Record):
    """An image directory: its process tree and files; processes are loaded
    one at a time with load_process() so that a tree converts in bounded
    memory and one broken process does not stop the others."""
    def __init__(self, dir: str,
                 entries: list,
                 files: dict[int, MappedFile],
                 images: object = None):
        self.dir = dir
        self.entries = entries            # pstree entries (protobuf), in pstree order
        self.files = files
        self.images = images              # the imagedir.ImageDir the records were read from
        self.wanted = None                # the entries converted (None: all)
