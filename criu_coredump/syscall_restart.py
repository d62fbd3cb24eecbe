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
kernel rewinds first) in arch/<name>.py, and the numbering of each
system call ABI in arch/syscall_numbers.py (SYSCALL_NAMES here).

ppc64, s390, mips and loongarch64 -- their kernels, like x86's, decide the
restart after get_signal(), and compel rewinds what it saves (compel/arch/
<arch>/src/lib/infect.c); each arch's SyscallABI.style names how that is
recognised and undone here (STYLES; the functions say which registers).
mips and loongarch64 keep no trace of the call once compel zeroed r0: a
thread on its `syscall` instruction with a number of the table is taken as
rewound, and a restart block (mips) cannot be told.  riscv64 rewinds before
get_signal(), as arm64 does: recognised, left as saved.
"""
from __future__ import annotations

from .arch import by_name
from .arch.syscall_numbers import TABLES
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

# numbers per ABI: arch/syscall_numbers.py
SYSCALL_NAMES = TABLES

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
                 changed: bool = False,
                 changes: dict = None):
        self.arch = arch
        self.nr = nr
        self.name = name                  # "" when the table does not know the call
        self.code = code                  # the -ERESTART* code (positive) the call returned
        self.how = how                    # "rewound" / "restartblock" (x86, undone) or
                                          # "kernel" (arm, aarch64: the kernel's own view)
        self.insn_len = insn_len          # length of the entry instruction
        self.changed = changed
        # the registers (Regs.gp names) and values that give back the kernel's
        # view, for the styles that set more than pc and ret
        self.changes = changes


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


def _args(g, e, mask):
    return [_get(g, a) & mask for a in e.args]


def _ppc64(arch, spec, g, read, extra):
    """ppc64: r3 == orig_gpr3 on the `sc`/`scv` at nip (CR0.SO set after
    `sc`: the call failed): rewound by compel.  EINTR (sc, SO set) or
    -EINTR (scv) after it, for a call that restarts with a restart block:
    compel's -ERESTART_RESTARTBLOCK.  The kernel's trap comes back too."""
    mask = (1 << spec.bits) - 1
    roles, so = dict(spec.roles), dict(spec.consts)["so"]
    pc, ret = _get(g, spec.pc) & mask, _get(g, spec.ret) & mask
    failed = bool(_get(g, roles["ccr"]) & so)
    for e in spec.entries:
        if not (e.negative or failed):
            continue
        nr, args = _get(g, e.nr) & mask, _args(g, e, mask)

        def enc(code):
            return -code & mask if e.negative else code
        if ret == _get(g, spec.orig) & mask and _read(read, pc, 4) == e.insn:
            name, code = code_for(e.numbers, nr, args)
            if code in (None, ERESTART_RESTARTBLOCK):
                code = FALLBACK
            return Restart(arch, nr, name, code, "rewound", 4, changes={
                spec.pc: (pc + 4) & mask, spec.ret: enc(code), roles["trap"]: e.trap})
        if ret == enc(EINTR) and _read(read, pc - 4, 4) == e.insn:
            name, code = code_for(e.numbers, nr, args)
            if code == ERESTART_RESTARTBLOCK:
                return Restart(arch, nr, name, code, "restartblock", 4, changes={
                    spec.ret: enc(code), roles["trap"]: e.trap})
    return None


def _s390(arch, spec, g, read, extra):
    """s390: a thread whose system_call word is set, with r2 == orig_gpr2 on
    its `svc`: rewound by compel; -EINTR after it, for a call that restarts
    with a restart block: compel's -ERESTART_RESTARTBLOCK."""
    mask = (1 << spec.bits) - 1
    call = extra.get(dict(spec.roles)["system_call"]) or 0
    ilen, nr = call >> 16, call & 0xFFFF
    if not call or not ilen:
        return None
    e = spec.entries[0]
    pc, ret, args = _get(g, spec.pc) & mask, _get(g, spec.ret) & mask, _args(g, e, mask)
    if ret == _get(g, spec.orig) & mask and _read(read, pc, 1) == e.insn:
        name, code = code_for(e.numbers, nr, args)
        if code in (None, ERESTART_RESTARTBLOCK):
            code = FALLBACK
        return Restart(arch, nr, name, code, "rewound", ilen, changes={
            spec.pc: (pc + ilen) & mask, spec.ret: -code & mask})
    if ret == -EINTR & mask and _read(read, pc - ilen, 1) == e.insn:
        name, code = code_for(e.numbers, nr, args)
        if code == ERESTART_RESTARTBLOCK:
            return Restart(arch, nr, name, code, "restartblock", ilen,
                           changes={spec.ret: -code & mask})
    return None


def _marked(arch, spec, g, read, extra):
    """mips and loongarch64: compel zeroed the marker register (r0) of a
    rewound thread, so a thread with r0 == 0 on its `syscall` instruction
    whose number (v0; a7) is a call of the table is taken as rewound.  The
    kernel's view: the pc after the instruction, the code in v0 (positive,
    a3 = 1: mips) or a0 (-code, orig_a0 = the first argument: loongarch64),
    r0 = the number (mips) or the number + 1 (loongarch64)."""
    mask = (1 << spec.bits) - 1
    roles = dict(spec.roles)
    if _get(g, roles["marker"]) & mask:
        return None
    e = spec.entries[0]
    pc = _get(g, spec.pc) & mask
    if _read(read, pc, len(e.insn)) != e.insn:
        return None
    nr, args = _get(g, e.nr) & mask, _args(g, e, mask)
    name, code = code_for(e.numbers, nr, args)
    if code is None:
        return None
    if code == ERESTART_RESTARTBLOCK and name != "restart_syscall":
        code = FALLBACK      # such a call is not rewound by compel
    changes = {spec.pc: (pc + len(e.insn)) & mask}
    if e.negative:           # loongarch64
        changes.update({spec.ret: -code & mask, spec.orig: _get(g, spec.ret) & mask,
                        roles["marker"]: nr + 1})
    else:                    # mips
        changes.update({spec.ret: code, roles["error"]: 1, roles["marker"]: nr})
    return Restart(arch, nr, name, code, "rewound", len(e.insn), changes=changes)


# how CRIU's rewind is recognised, per SyscallABI.style
STYLES = {"cr0_so": _ppc64, "int_code": _s390, "zeroed_marker": _marked}


def recognise(arch, g, read, extra=None):
    """The Restart of a thread's general registers `g` (Regs.gp, by the
    kernel's names), or None.  `read(addr, n)` gives the process's memory;
    `extra` the thread's other decoded registers (Regs.extra: s390's
    system_call)."""
    spec = _spec(arch)
    if spec is None:
        return None
    if spec.style in STYLES:
        return STYLES[spec.style](arch, spec, g, read, extra or {})
    if not spec.kernel_rewinds_first and _signed(_get(g, spec.orig), spec.bits) < 0:
        return None  # in no system call (the loop below would say so too)
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


def undo(arch, g, read, extra=None):
    """Give `g` the registers the kernel's core shows for that thread, in
    place; returns the Restart found (changed tells whether g changed)."""
    r = recognise(arch, g, read, extra)
    if r is None or r.how == "kernel":
        return r
    if r.changes is not None:
        g.update(r.changes)
        r.changed = True
        return r
    spec = _spec(arch)
    mask = (1 << spec.bits) - 1
    if r.how == "rewound":
        g[spec.pc] = (_get(g, spec.pc) + r.insn_len) & mask
    g[spec.ret] = -r.code & mask
    r.changed = True
    return r


def undone(threads, plan):
    """Each of `threads` with CRIU's rewind undone (undo()), as it comes:
    the threads of a large process are read, undone and written one at a
    time (images.Threads).  Each is undone once, when it is reached."""
    read = plan.read
    for th in threads:
        regs = th.regs
        if regs is not None:
            undo(th.arch, regs.gp, read, regs.extra)
        yield th
