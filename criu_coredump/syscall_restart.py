"""Threads caught in a system call: show them as the kernel's core would.

A thread blocked in a system call that a signal interrupts leaves the call
with one of the kernel's internal codes in its return register:
-ERESTARTSYS (512), -ERESTARTNOINTR (513), -ERESTARTNOHAND (514) or
-ERESTART_RESTARTBLOCK (516).  The architecture's signal code later either
turns the code into -EINTR (a handler runs) or restarts the call.  CRIU
stops every thread with ptrace, inside get_signal(), and what ptrace shows
there depends on when the architecture rewinds:

x86_64 and ia32 -- arch/x86/kernel/signal.c arch_do_signal_or_restart()
    calls get_signal() first and only then, when no handler runs, rewinds:
    ax = orig_ax and ip -= 2 for the first three codes, ax =
    __NR_restart_syscall and ip -= 2 for -ERESTART_RESTARTBLOCK.  So a
    ptrace stop, gdb's gcore and the kernel's own core (written from
    get_signal() -> do_coredump()) all show ip AFTER the `syscall` (or
    `int $0x80`) instruction and ax = the -ERESTART* code.  compel (CRIU's
    compel/arch/x86/src/lib/infect.c compel_get_task_regs()) then rewinds
    the registers it saves, for restore: when orig_ax >= 0 (signed, 32 bits
    for a compat task), ax = orig_ax and ip -= 2 for -ERESTARTNOHAND,
    -ERESTARTSYS and -ERESTARTNOINTR; ax = -EINTR (ip unchanged) for
    -ERESTART_RESTARTBLOCK.  We undo that here:

    - orig_ax >= 0, ax == orig_ax and the bytes at ip are the entry
      instruction (0f 05 `syscall`; cd 80 `int $0x80`): ip += 2, ax = the
      code the call returns (the table below);
    - orig_ax >= 0, ax == -EINTR, the bytes at ip - 2 are the entry
      instruction and the call is one that returns -ERESTART_RESTARTBLOCK
      for these arguments: ax = -516.  Many calls return a genuine -EINTR
      (epoll_wait, rt_sigtimedwait, semop, io_getevents, a socket with a
      timeout...): compel leaves those alone, and so do we.

    A 32-bit task entering through the vDSO's __kernel_vsyscall (sysenter
    or syscall) is returned by the kernel to the landing pad after the
    `int $0x80` that follows them (do_fast_syscall_32() sets regs->ip to
    int80_landing_pad), so its ip, rewound, is on `cd 80` too.  A 64-bit
    task making a 32-bit call with `int $0x80` uses the i386 numbers.

aarch64 and arm -- arch/arm64/kernel/signal.c and arch/arm/kernel/signal.c
    do_signal() rewind BEFORE get_signal(), "so that a debugger will see the
    already changed PSW": for all four codes x0/r0 = orig_x0/ORIG_r0 and pc
    = the `svc` (pc - 4, or pc - 2 in Thumb state); after get_signal() the
    rewind is reverted if a handler runs, and -ERESTART_RESTARTBLOCK gets
    __NR_restart_syscall in x8/r7.  A ptrace stop, gcore and the kernel's
    core therefore already show the thread ON its `svc` with its first
    argument back in x0/r0, which is what CRIU saves: compel's aarch64
    compel_get_task_regs() changes nothing, and its arm one (ORIG_r0 >= 0
    and r0 == -ERESTART*) cannot match, since r0 == ORIG_r0 there.  The
    saved registers are the kernel's view: we recognise the thread (svc #0
    d4000001 at pc on aarch64; ef000000 in ARM state, df00 in Thumb state,
    cpsr bit 5, on arm) and leave it untouched.  (Such a thread cannot be
    told from one stopped just before its `svc`; nothing is changed either
    way.)

What a call returns when interrupted, by name (RULES), read from the
kernel: pause, rt_sigsuspend and sigsuspend (kernel/signal.c),
select/pselect6/ppoll (fs/select.c core_sys_select(), do_sys_poll()),
msgrcv/msgsnd (ipc/msg.c) and io_pgetevents (fs/aio.c) return
-ERESTARTNOHAND; poll always sets a restart block (fs/select.c sys_poll(),
do_restart_poll()), nanosleep too (kernel/time/hrtimer.c
hrtimer_nanosleep()), clock_nanosleep only for a relative sleep (flags
without TIMER_ABSTIME; an absolute one returns -ERESTARTNOHAND), futex
FUTEX_WAIT/FUTEX_WAIT_BITSET only with a timeout (kernel/futex/waitwake.c
futex_wait(): -ERESTARTSYS without one), and restart_syscall itself (every
restart function that blocks returns -ERESTART_RESTARTBLOCK again);
FUTEX_LOCK_PI/LOCK_PI2 and FUTEX_WAIT_REQUEUE_PI (kernel/futex/pi.c,
requeue.c handle_early_requeue_pi_wakeup()) and fork/vfork/clone/clone3
(kernel/fork.c copy_process()) return -ERESTARTNOINTR; read, write and
the other file, pipe, socket (sock_intr_errno() without a timeout), lock,
wait4/waitid (kernel/exit.c do_wait()) and mqueue calls listed return
-ERESTARTSYS.  The arguments that decide are still in the saved registers
(system calls preserve them: rdi rsi rdx r10 r8 r9, ebx ecx edx esi edi
ebp, x0-x5, r0-r6), so the futex operation and timeout, the
clock_nanosleep flags and the i386 ipc() sub-call are read from there.
What cannot be seen from registers: a socket call with SO_RCVTIMEO/
SO_SNDTIMEO returns -EINTR instead (compel leaves that alone), and
select/ppoll return -EINTR when writing the remaining time back faults.

The fallback, for a rewound call the table does not know (or whose rule
says -ERESTART_RESTARTBLOCK, which a rewound call cannot have had), is
-ERESTARTSYS: it is what most blocking calls return (every
wait_event_interruptible() and friends), and gdb's frames do not depend on
which code ax holds.  The numbers per ABI (SYSCALL_NAMES) are those of the
kernel's uapi headers: arch/x86/entry/syscalls/syscall_64.tbl and
syscall_32.tbl, include/uapi/asm-generic/unistd.h (aarch64) and
arch/arm/tools/syscall.tbl (EABI); x32 numbers (bit 30 set) are not in the
table and get the fallback.

The per-architecture knowledge is data: each arch's `syscall`
(arch/base.py SyscallABI: entry instructions, registers, whether the
kernel rewinds first) in arch/<name>.py, and here SYSCALL_NAMES, one
numbering per system call ABI.  ppc64, s390 and mips have no `syscall`
yet: their registers are written as CRIU saved them.
"""
from __future__ import annotations

from .arch import by_name
from .record import Record

EINTR = 4
ERESTARTSYS = 512
ERESTARTNOINTR = 513
ERESTARTNOHAND = 514
ERESTART_RESTARTBLOCK = 516
FALLBACK = ERESTARTSYS

# ---- what a system call returns when a signal interrupts it, by name ------

FUTEX_CMD_MASK = ~(128 | 256)       # ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)
FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET = 0, 6, 9
FUTEX_WAIT_REQUEUE_PI, FUTEX_LOCK_PI2 = 11, 13
TIMER_ABSTIME = 1
IPC_MSGSND, IPC_MSGRCV = 11, 12


def _futex(args):
    """futex(uaddr, op, val, timeout, ...)."""
    cmd = args[1] & FUTEX_CMD_MASK
    if cmd in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        return ERESTART_RESTARTBLOCK if args[3] else ERESTARTSYS
    if cmd in (FUTEX_LOCK_PI, FUTEX_LOCK_PI2, FUTEX_WAIT_REQUEUE_PI):
        return ERESTARTNOINTR
    return ERESTARTSYS


def _clock_nanosleep(args):
    """clock_nanosleep(clockid, flags, request, remain)."""
    return ERESTARTNOHAND if args[1] & TIMER_ABSTIME else ERESTART_RESTARTBLOCK


def _ipc(args):
    """i386 ipc(call, ...): the System V call is the low 16 bits of call."""
    return ERESTARTNOHAND if args[0] & 0xFFFF in (IPC_MSGSND, IPC_MSGRCV) else ERESTARTSYS


RULES = {}
RULES.update(dict.fromkeys((
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
    "pwritev", "preadv2", "pwritev2", "open", "openat", "openat2", "creat",
    "wait4", "waitid", "waitpid", "accept", "accept4", "connect", "recv",
    "recvfrom", "recvmsg", "send", "sendto", "sendmsg", "sendmmsg", "flock",
    "fcntl", "fcntl64", "futex_waitv", "mq_timedreceive", "mq_timedsend",
    "mq_timedreceive_time64", "mq_timedsend_time64", "socketcall"), ERESTARTSYS))
RULES.update(dict.fromkeys(("fork", "vfork", "clone", "clone3"), ERESTARTNOINTR))
RULES.update(dict.fromkeys((
    "pause", "rt_sigsuspend", "sigsuspend", "select", "_newselect", "pselect6",
    "pselect6_time64", "ppoll", "ppoll_time64", "msgrcv", "msgsnd",
    "io_pgetevents", "io_pgetevents_time64"), ERESTARTNOHAND))
RULES.update(dict.fromkeys(("nanosleep", "poll", "restart_syscall"),
                           ERESTART_RESTARTBLOCK))
RULES.update(futex=_futex, futex_time64=_futex, clock_nanosleep=_clock_nanosleep,
             clock_nanosleep_time64=_clock_nanosleep, ipc=_ipc)

# ---- system call numbers of each ABI, for the calls in RULES -------------

SYSCALL_NAMES = {
    "x86_64": {
        0: 'read', 1: 'write', 2: 'open', 7: 'poll', 17: 'pread64',
        18: 'pwrite64', 19: 'readv', 20: 'writev', 23: 'select', 34: 'pause',
        35: 'nanosleep', 42: 'connect', 43: 'accept', 44: 'sendto',
        45: 'recvfrom', 46: 'sendmsg', 47: 'recvmsg', 56: 'clone', 57: 'fork',
        58: 'vfork', 61: 'wait4', 69: 'msgsnd', 70: 'msgrcv', 72: 'fcntl',
        73: 'flock', 85: 'creat', 130: 'rt_sigsuspend', 202: 'futex',
        219: 'restart_syscall', 230: 'clock_nanosleep', 242: 'mq_timedsend',
        243: 'mq_timedreceive', 247: 'waitid', 257: 'openat', 270: 'pselect6',
        271: 'ppoll', 288: 'accept4', 295: 'preadv', 296: 'pwritev',
        307: 'sendmmsg', 327: 'preadv2', 328: 'pwritev2', 333: 'io_pgetevents',
        435: 'clone3', 437: 'openat2', 449: 'futex_waitv',
    },
    "i386": {
        0: 'restart_syscall', 2: 'fork', 3: 'read', 4: 'write', 5: 'open',
        7: 'waitpid', 8: 'creat', 29: 'pause', 55: 'fcntl', 72: 'sigsuspend',
        82: 'select', 102: 'socketcall', 114: 'wait4', 117: 'ipc', 120: 'clone',
        142: '_newselect', 143: 'flock', 145: 'readv', 146: 'writev',
        162: 'nanosleep', 168: 'poll', 179: 'rt_sigsuspend', 180: 'pread64',
        181: 'pwrite64', 190: 'vfork', 221: 'fcntl64', 240: 'futex',
        267: 'clock_nanosleep', 279: 'mq_timedsend', 280: 'mq_timedreceive',
        284: 'waitid', 295: 'openat', 308: 'pselect6', 309: 'ppoll',
        333: 'preadv', 334: 'pwritev', 345: 'sendmmsg', 362: 'connect',
        364: 'accept4', 369: 'sendto', 370: 'sendmsg', 371: 'recvfrom',
        372: 'recvmsg', 378: 'preadv2', 379: 'pwritev2', 385: 'io_pgetevents',
        400: 'msgsnd', 401: 'msgrcv', 407: 'clock_nanosleep_time64',
        413: 'pselect6_time64', 414: 'ppoll_time64', 416: 'io_pgetevents_time64',
        418: 'mq_timedsend_time64', 419: 'mq_timedreceive_time64',
        422: 'futex_time64', 435: 'clone3', 437: 'openat2', 449: 'futex_waitv',
    },
    "generic": {   # include/uapi/asm-generic/unistd.h: aarch64
        25: 'fcntl', 32: 'flock', 56: 'openat', 63: 'read', 64: 'write',
        65: 'readv', 66: 'writev', 67: 'pread64', 68: 'pwrite64', 69: 'preadv',
        70: 'pwritev', 72: 'pselect6', 73: 'ppoll', 95: 'waitid', 98: 'futex',
        101: 'nanosleep', 115: 'clock_nanosleep', 128: 'restart_syscall',
        133: 'rt_sigsuspend', 182: 'mq_timedsend', 183: 'mq_timedreceive',
        188: 'msgrcv', 189: 'msgsnd', 202: 'accept', 203: 'connect',
        206: 'sendto', 207: 'recvfrom', 211: 'sendmsg', 212: 'recvmsg',
        220: 'clone', 242: 'accept4', 260: 'wait4', 269: 'sendmmsg',
        286: 'preadv2', 287: 'pwritev2', 292: 'io_pgetevents', 435: 'clone3',
        437: 'openat2', 449: 'futex_waitv',
    },
    "arm": {       # EABI
        0: 'restart_syscall', 2: 'fork', 3: 'read', 4: 'write', 5: 'open',
        8: 'creat', 29: 'pause', 55: 'fcntl', 72: 'sigsuspend', 114: 'wait4',
        120: 'clone', 142: '_newselect', 143: 'flock', 145: 'readv',
        146: 'writev', 162: 'nanosleep', 168: 'poll', 179: 'rt_sigsuspend',
        180: 'pread64', 181: 'pwrite64', 190: 'vfork', 221: 'fcntl64',
        240: 'futex', 265: 'clock_nanosleep', 276: 'mq_timedsend',
        277: 'mq_timedreceive', 280: 'waitid', 283: 'connect', 285: 'accept',
        289: 'send', 290: 'sendto', 291: 'recv', 292: 'recvfrom', 296: 'sendmsg',
        297: 'recvmsg', 301: 'msgsnd', 302: 'msgrcv', 322: 'openat',
        335: 'pselect6', 336: 'ppoll', 361: 'preadv', 362: 'pwritev',
        366: 'accept4', 374: 'sendmmsg', 392: 'preadv2', 393: 'pwritev2',
        399: 'io_pgetevents', 407: 'clock_nanosleep_time64',
        413: 'pselect6_time64', 414: 'ppoll_time64', 416: 'io_pgetevents_time64',
        418: 'mq_timedsend_time64', 419: 'mq_timedreceive_time64',
        422: 'futex_time64', 435: 'clone3', 437: 'openat2', 449: 'futex_waitv',
    },
}

# ---- per architecture ------------------------------------------------------


# The per-arch part (the entry instructions, the registers, when the
# kernel rewinds) is each arch's `syscall` (arch/base.py SyscallABI), in
# arch/<name>.py; registers are named as in the decoded Regs.gp.

# ---- recognising and undoing ----------------------------------------------


class Restart(Record):
    """A thread saved in an interrupted, restartable system call."""
    def __init__(self, arch: str,
                 nr: int,
                 name: str,
                 code: int,
                 how: str,
                 insn_len: int = 0,
                 changed: bool = False):
        self.arch = arch
        self.nr = nr
        self.name = name                  # "" when the table does not know the call
        self.code = code                  # the -ERESTART* code (positive) the call returned
        self.how = how                    # "rewound" / "restartblock" (x86, undone) or
                                          # "kernel" (arm, aarch64: the kernel's own view)
        self.insn_len = insn_len          # length of the entry instruction
        self.changed = changed


def _get(gp, name):
    return gp.get(name, 0)


def _signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def code_for(numbers, nr, args):
    """(name, code) a call returns when interrupted; code None if unknown."""
    name = SYSCALL_NAMES[numbers].get(nr, "")
    rule = RULES.get(name)
    if callable(rule):
        return name, rule(args)
    return name, rule


def _read(read, addr, n):
    if addr < 0:
        return b""
    try:
        return read(addr, n)
    except (OSError, ValueError):
        return b""


def _spec(arch):
    a = by_name(arch)
    return a.syscall if a is not None else None


def recognise(arch, g, read):
    """The Restart of a thread's general registers `g` (Regs.gp, by the
    kernel's names), or None.  `read(addr, n)` gives the process's memory."""
    spec = _spec(arch)
    if spec is None:
        return None
    mask = (1 << spec.bits) - 1
    pc = _get(g, spec.pc) & mask
    for e in spec.entries:
        if e.thumb is not None:
            reg, bit = spec.thumb_bit
            if bool(_get(g, reg) & bit) != e.thumb:
                continue
        nr = _get(g, e.nr) & mask
        args = [_get(g, a) & mask for a in e.args]
        if spec.kernel_rewinds_first:
            if _read(read, pc, len(e.insn)) != e.insn:
                continue
            name, code = code_for(e.numbers, nr, args)
            return Restart(arch, nr, name, code or FALLBACK, "kernel",
                           len(e.insn))
        orig = _signed(_get(g, spec.orig), spec.bits)
        if orig < 0:
            return None
        ret = _get(g, spec.ret) & mask
        if ret == orig and _read(read, pc, len(e.insn)) == e.insn:
            name, code = code_for(e.numbers, orig, args)
            if code in (None, ERESTART_RESTARTBLOCK):
                code = FALLBACK
            return Restart(arch, orig, name, code, "rewound", len(e.insn))
        if (ret == -EINTR & mask
                and _read(read, pc - len(e.insn), len(e.insn)) == e.insn):
            name, code = code_for(e.numbers, orig, args)
            if code == ERESTART_RESTARTBLOCK:
                return Restart(arch, orig, name, code, "restartblock",
                               len(e.insn))
    return None


def undo(arch, g, read):
    """Give `g` the registers the kernel's core shows for that thread, in
    place; returns the Restart found (changed tells whether g changed)."""
    r = recognise(arch, g, read)
    if r is None or r.how == "kernel":
        return r
    spec = _spec(arch)
    mask = (1 << spec.bits) - 1
    if r.how == "rewound":
        g[spec.pc] = (_get(g, spec.pc) + r.insn_len) & mask
    g[spec.ret] = -r.code & mask
    r.changed = True
    return r


def undo_rewind(proc, plan):
    """Undo CRIU's rewind in every thread of proc (images.Process), reading
    instructions through plan (memory.MemoryPlan).  Returns the Restarts."""
    found = [undo(th.arch, th.regs.gp, plan.read) for th in proc.threads
             if th.regs is not None]
    return [r for r in found if r is not None]
