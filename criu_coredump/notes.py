"""The notes of a process's core: their order, their names, and the
structures common to every arch.

The kernel (fs/binfmt_elf.c, fill_note_info/write_note_info) writes, for the
first thread: NT_PRSTATUS, NT_PRPSINFO, NT_SIGINFO, NT_AUXV, NT_FILE and then
that thread's other register sets; for every other thread NT_PRSTATUS and its
register sets; Linux 6.x then adds arch notes such as NT_X86_XSAVE_LAYOUT.
That order is decided here, and so is the name of every note: "CORE" for
the generic ones and NT_PRFPREG, "LINUX" for every other register set
(fill_thread_core_info).  The arch (arch/base.Arch) gives the target's C
types, byte order, elf_gregset_t and its table of register notes.
"""
import ctypes
import functools
import struct

from . import elf
from . import model

# notes named "CORE"; every other one is "LINUX"
CORE_NOTES = frozenset((elf.NT_PRSTATUS, elf.NT_PRFPREG, elf.NT_PRPSINFO,
                        elf.NT_SIGINFO, elf.NT_AUXV, elf.NT_FILE))


def note_name(ntype):
    return "CORE" if ntype in CORE_NOTES else "LINUX"

PRARGSZ = 80
SI_USER = 0      # sent by kill(): how a stopped task reports its SIGSTOP
SI_KERNEL = 128  # the ptrace stop of a task attached while it ran


@functools.lru_cache(maxsize=None)
def prstatus_type(arch):
    """struct elf_prstatus for a target (include/linux/elfcore.h)."""
    base, long_t = arch.struct, arch.long_t

    class ElfSiginfo(base):
        _fields_ = [("si_signo", ctypes.c_int32), ("si_code", ctypes.c_int32),
                    ("si_errno", ctypes.c_int32)]

    class Timeval(base):
        _fields_ = [("tv_sec", long_t), ("tv_usec", long_t)]

    class Prstatus(base):
        _fields_ = [
            ("pr_info", ElfSiginfo),
            ("pr_cursig", ctypes.c_int16),
            ("pr_sigpend", long_t),
            ("pr_sighold", long_t),
            ("pr_pid", ctypes.c_int32),
            ("pr_ppid", ctypes.c_int32),
            ("pr_pgrp", ctypes.c_int32),
            ("pr_sid", ctypes.c_int32),
            ("pr_utime", Timeval),
            ("pr_stime", Timeval),
            ("pr_cutime", Timeval),
            ("pr_cstime", Timeval),
            ("pr_reg", long_t * len(arch.gregs)),
            ("pr_fpvalid", ctypes.c_int32),
        ]
    return Prstatus


@functools.lru_cache(maxsize=None)
def prpsinfo_type(arch):
    """struct elf_prpsinfo for a target (include/linux/elfcore.h)."""
    class Prpsinfo(arch.struct):
        _fields_ = [
            ("pr_state", ctypes.c_int8),
            ("pr_sname", ctypes.c_char),
            ("pr_zomb", ctypes.c_int8),
            ("pr_nice", ctypes.c_int8),
            ("pr_flag", arch.long_t),
            ("pr_uid", arch.uid_t),
            ("pr_gid", arch.uid_t),
            ("pr_pid", ctypes.c_int32),
            ("pr_ppid", ctypes.c_int32),
            ("pr_pgrp", ctypes.c_int32),
            ("pr_sid", ctypes.c_int32),
            ("pr_fname", ctypes.c_char * 16),
            ("pr_psargs", ctypes.c_char * PRARGSZ),
        ]
    return Prpsinfo


def prstatus(arch, proc, th, cursig, fpvalid):
    """fill_prstatus() + the general registers, pr_reg[i] being the value
    the arch's decode() gave its i-th elf_gregset_t name.  The CPU times
    (pr_utime, pr_stime, pr_cutime, pr_cstime) stay 0: CRIU images carry
    none.

    Packed with one struct.Struct laid out from prstatus_type() (the fields'
    offsets and sizes; what lies between them, and si_code, si_errno and
    the times, zeros): the same bytes as filling the ctypes structure,
    which cost a tenth of a 100,000-thread conversion.  Every value is
    cut to its field's width, as ctypes stores it."""
    packer, mask = _prstatus_packer(arch)
    gp = th.regs.gp
    get = gp.get
    m32 = 0xFFFFFFFF
    return packer.pack(
        cursig & m32, cursig & 0xFFFF,
        pending_mask(th.pending, arch.endian) & mask, th.blk_sigset & mask,
        th.tid & m32, proc.ppid & m32, proc.pgid & m32, proc.sid & m32,
        *[get(name, 0) & mask for name in arch.gregs], int(fpvalid) & m32)


@functools.lru_cache(maxsize=None)
def _prstatus_packer(arch):
    """(struct.Struct, long mask) writing prstatus_type(arch) from the
    values prstatus() gives, in the order of its fields that are set."""
    t = prstatus_type(arch)
    info = t.pr_info.offset
    long_code = {4: "I", 8: "Q"}[ctypes.sizeof(arch.long_t)]
    fields = [(info + type(t().pr_info).si_signo.offset, "I"),
              (t.pr_cursig.offset, "H"),
              (t.pr_sigpend.offset, long_code), (t.pr_sighold.offset, long_code),
              (t.pr_pid.offset, "I"), (t.pr_ppid.offset, "I"),
              (t.pr_pgrp.offset, "I"), (t.pr_sid.offset, "I"),
              (t.pr_reg.offset, "%d%s" % (len(arch.gregs), long_code)),
              (t.pr_fpvalid.offset, "I")]
    return _packer(fields, ctypes.sizeof(t), arch.endian), \
        (1 << (8 * arch.word_bytes)) - 1


def _packer(fields, size, endian):
    """A struct.Struct of `size` bytes putting each (offset, format) of
    `fields` (ascending) at its offset, zero bytes between and after."""
    fmt = [">" if endian == "big" else "<"]
    pos = 0
    for off, code in fields:
        if off > pos:
            fmt.append("%dx" % (off - pos))
        fmt.append(code)
        pos = off + struct.calcsize("<" + code)
    if size > pos:
        fmt.append("%dx" % (size - pos))
    packer = struct.Struct("".join(fmt))
    assert packer.size == size
    return packer


def sigmask_word(mask, long_t):
    """The first word of a sigset, as the kernel copies sig[0]."""
    return mask & ((1 << (8 * ctypes.sizeof(long_t))) - 1)


def pending_mask(sigs, endian="little"):
    """Bit mask (signal n at bit n-1) of a list of raw siginfo records.

    Given a thread's private queue only: fill_prstatus() copies
    p->pending, never the process-wide signal->shared_pending, so a signal
    sent to the whole process (kill, sigqueue) and still pending is in no
    note of a kernel core, and is in none of ours either.
    """
    m = 0
    for raw in sigs:
        signo = int.from_bytes(raw[:4], endian, signed=True)
        if 0 < signo <= 64:
            m |= 1 << (signo - 1)
    return m


def current_signal(proc, arch):
    """(pr_cursig, NT_SIGINFO si_signo, si_code) of a process's core.

    The kernel reports the fatal signal; a checkpoint has none.  What a
    core of a live process holds instead is gdb's gcore's answer for the
    same moment (checked on the fixtures' reference cores):
    - a task CRIU froze while it ran: pr_cursig 0 (no signal was being
      delivered: gdb prints no "terminated with signal" line), and an
      NT_SIGINFO of SIGSTOP with si_code SI_KERNEL, the ptrace stop.  A
      reader needs that stop reason: lldb 21 never finishes loading a core
      whose NT_SIGINFO is empty;
    - a task stopped by a signal: SIGSTOP in both, si_code SI_USER and no
      sender, as CRIU does not record who stopped it.
    A pending signal is not 'current': it shows in pr_sigpend.  SIGSTOP's
    number is the arch's (23 on mips).
    """
    if proc.task_state == model.TASK_STOPPED:
        return arch.sigstop, arch.sigstop, SI_USER
    return 0, arch.sigstop, SI_KERNEL


def state_fields(proc):
    """(pr_state, pr_sname, pr_zomb) as fill_psinfo() derives them from the
    leader's __state: i = index of its lowest set bit + 1 (0 when running),
    letter "RSDTZW"[i], zombie flag when that letter is Z.  A task writing
    its own core is running (R); __TASK_STOPPED (4) gives 3, T."""
    if proc.task_state == model.TASK_STOPPED:
        return 3, b"T", 0   # __TASK_STOPPED
    if proc.task_state == model.TASK_DEAD:
        return 4, b"Z", 1   # EXIT_ZOMBIE
    return 0, b"R", 0       # a task writing its own core is running


def fill_prpsinfo(arch, proc, plan):
    main = proc.threads[0] if proc.threads else None
    ps = prpsinfo_type(arch)()
    ps.pr_state, ps.pr_sname, ps.pr_zomb = state_fields(proc)
    ps.pr_nice = main.sched_nice if main else 0
    ps.pr_flag = proc.flags
    uid_max = (1 << (8 * type(ps).pr_uid.size)) - 1
    ps.pr_uid = (main.uid if main else 0) & uid_max
    ps.pr_gid = (main.gid if main else 0) & uid_max
    ps.pr_pid, ps.pr_ppid, ps.pr_pgrp, ps.pr_sid = (proc.pid, proc.ppid,
                                                    proc.pgid, proc.sid)
    # the comm's own bytes, as the kernel copies them: CRIU keeps them as
    # they are, and they come back as a file name's do (nt_file_name: a
    # byte that is not UTF-8 is a surrogate escape, not a '?')
    ps.pr_fname = nt_file_name(proc.comm)[0][:16]
    ps.pr_psargs = psargs(proc, plan)
    return bytes(ps)


def psargs(proc, plan):
    """The command line from the process's own memory, as the kernel reads
    it: at most 79 bytes from arg_start, NULs turned into spaces."""
    mm = proc.mm
    if mm is None or plan is None or mm.arg_end <= mm.arg_start:
        return b""
    n = min(mm.arg_end - mm.arg_start, PRARGSZ - 1)
    try:
        raw = plan.read(mm.arg_start, n)
    except OSError:
        return b""
    return raw.replace(b"\0", b" ")


def siginfo_bytes(arch, signo, code):
    """NT_SIGINFO contents: the arch's siginfo_t with si_signo, si_code,
    si_errno 0 and no sender or other field (CRIU records none).  si_code
    is the third int, but the second on mips (its siginfo swaps si_code
    and si_errno): the arch's si_code_offset."""
    out = bytearray(arch.siginfo_size)
    out[0:4] = signo.to_bytes(4, arch.endian, signed=True)
    off = arch.si_code_offset
    out[off:off + 4] = code.to_bytes(4, arch.endian, signed=True)
    return bytes(out)


def auxv_bytes(auxv, long_t):
    """NT_AUXV: the saved vector up to and including AT_NULL, in target longs."""
    words = list(auxv)
    out = []
    for i in range(0, len(words) - 1, 2):
        if words[i] == 0:
            break
        out += [words[i], words[i + 1]]
    out += [0, 0]
    arr = (long_t * len(out))(*[w & ((1 << (8 * ctypes.sizeof(long_t))) - 1)
                               for w in out])
    return bytes(arr)


def file_note_entries(proc, files):
    """(start, end, page offset, name) of every file-backed VMA, as the
    kernel lists vmas with a vm_file, named as /proc/PID/maps names them."""
    out = []
    if proc.mm is None:
        return out
    for v in proc.mm.vmas:
        name = None
        if v.is_file or v.has(model.VMA_AREA_MEMFD):
            f = files.get(v.shmid)
            if f is not None:
                name = f.kernel_name
        elif v.is_hugetlb and not v.has(model.VMA_AREA_SYSVIPC):
            # anonymous hugetlb memory is a file of the kernel's internal
            # hugetlbfs mount (hugetlb_file_setup(), "anon_hugepage"), a
            # private mapping of it too: CRIU keeps that one as anonymous
            name = "/anon_hugepage (deleted)"
        elif v.has(model.VMA_ANON_SHARED):
            name = "/dev/zero (deleted)"
        elif v.has(model.VMA_AREA_SYSVIPC):
            name = "/SYSV%08x (deleted)" % 0
        elif v.has(model.VMA_AREA_AIORING):
            # the ring's file on the kernel's internal aio mount (fs/aio.c)
            name = "/[aio] (deleted)"
        elif v.has(model.VMA_AREA_SOCKET):
            # a packet socket's ring (sockfs_dname: "socket:[<inode>]");
            # CRIU's images do not keep the socket's inode number
            name = "socket:[0]"
        if name:
            out.append((v.start, v.end, v.pgoff // model.PAGE_SIZE, name))
    return out


def nt_file_name(name):
    """(bytes, escaped) of a name for NT_FILE.  Names are NUL-terminated one
    after the other: a NUL inside one would end it early and give every
    later mapping the name of the one before.  A NUL (no Linux path holds
    one) and a character that is no byte of a path (a lone surrogate) are
    written as backslash escapes; `escaped` says a name was changed."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "backslashreplace")
        return raw.replace(b"\0", b"\\x00"), True
    if b"\0" in raw:
        return raw.replace(b"\0", b"\\x00"), True
    return raw, False


def file_note_bytes(entries, long_t):
    """NT_FILE: count, page size, (start, end, pgoff) triples, then names."""
    words = [len(entries), model.PAGE_SIZE]
    for s, e, off, _ in entries:
        words += [s, e, off]
    arr = (long_t * len(words))(*words)
    names = b"".join(nt_file_name(n)[0] + b"\0" for *_, n in entries)
    return bytes(arr) + names


def thread_regsets(arch, proc, th):
    """(type, desc) of a thread's register notes after NT_PRSTATUS, in the
    arch's table order; an encoder's None means the kernel would not write
    that note for this thread (its regset is not active)."""
    out = []
    for ntype, encode in arch.thread_notes:
        desc = encode(proc, th)
        if desc is not None:
            out.append((ntype, desc))
    return out


def build_notes(proc, plan, files, arch, threads=None):
    """All notes of one process, in the kernel's order, as (name, type, desc),
    one at a time (a generator): a process of 100,000 threads has hundreds
    of MiB of notes, which are written as they come, never held together.
    `threads`: what to iterate for the threads (default proc.threads), the
    main one first; each is read as its notes are made."""
    cursig, signo, code = current_signal(proc, arch)
    if threads is None:
        threads = proc.threads
    i = -1
    for i, th in enumerate(threads):
        regsets = thread_regsets(arch, proc, th)
        fpvalid = any(t == elf.NT_PRFPREG for t, _ in regsets)
        yield _named(elf.NT_PRSTATUS, prstatus(arch, proc, th, cursig, fpvalid))
        if i == 0:
            yield _named(elf.NT_PRPSINFO, fill_prpsinfo(arch, proc, plan))
            yield _named(elf.NT_SIGINFO, siginfo_bytes(arch, signo, code))
            if proc.mm is not None:
                yield _named(elf.NT_AUXV, auxv_bytes(
                    arch.auxv_words(proc.mm.auxv), arch.long_t))
                yield _named(elf.NT_FILE, file_note_bytes(
                    file_note_entries(proc, files), arch.long_t))
        for t, d in regsets:
            yield _named(t, d)
    if i >= 0:  # any thread
        for ntype, encode in arch.process_notes:
            desc = encode(proc)
            if desc is not None:
                yield _named(ntype, desc)


def _named(ntype, desc):
    return (note_name(ntype), ntype, desc)
