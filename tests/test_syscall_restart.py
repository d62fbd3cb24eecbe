"""Threads caught in a system call show what the kernel's core shows.

CRIU saves such a thread rewound for restore (compel_get_task_regs());
criu_coredump/syscall_restart.py undoes that on x86_64, ia32, ppc64, s390,
mips and loongarch64 and leaves aarch64, arm and riscv64 alone, whose
kernels rewind before the ptrace stop.

- unit tests per architecture on register protobufs built with pycriu;
- the numbers of the syscall tables against the uapi headers the
  compilers ship;
- the kernel as the oracle: tests/progs/restart_calls.c, threads blocked in
  nineteen different calls, is killed with SIGSEGV; its core becomes CRIU
  images with compel's rewind applied (core2images as_criu_saves); every
  thread's registers in our core must be the kernel core's, for x86_64 and
  for a 32-bit build, and again after a SIGSTOP/SIGCONT that leaves the
  sleepers in restart_syscall;
- aarch64 (qemu-user): a thread saved on its `svc` is left there;
- ppc64le, s390x, mips64el, loongarch64, riscv64: qemu-user's states of
  threads blocked in pause()/ppoll() made kernel-like, rewound as compel
  does, loaded by the tool and undone (riscv64: recognised, left), in
  tests/test_cross_arch.py with the other qemu-user tests;
- the real CRIU fixtures: tests/test_e2e_fixtures.py.
"""
import collections
import ctypes
import glob
import os
import re
import signal
import subprocess
import struct
import time

import pytest
from pycriu.images import pb

from criu_coredump import syscall_restart as sr
from criu_coredump.arch import by_name

from .helpers.paths import REPO
from .helpers.tools import gdb, need, run_coredump
from .helpers import core2images
from .helpers.kernelcore import allow_core, find_core, wait_until

pytestmark = pytest.mark.slow

PROG = os.path.join(REPO, "tests", "progs", "restart_calls.c")
M64, M32 = (1 << 64) - 1, (1 << 32) - 1
SYSCALL, INT80 = b"\x0f\x05", b"\xcd\x80"
IP = 0x401000


def memory(at, insn):
    """A read(addr, n) over one instruction at `at`, zeros around it."""
    def read(addr, n):
        buf = bytearray(n)
        for i in range(n):
            off = addr + i - at
            if 0 <= off < len(insn):
                buf[i] = insn[off]
        return bytes(buf)
    return read


class G(dict):
    """A thread's general registers as the arch's decode() gives them
    (Regs.gp: the kernel's names), with attribute access for the asserts."""
    __getattr__ = dict.__getitem__

    def __setattr__(self, name, value):
        self[name] = value


X86_GREGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
             "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp",
             "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")
I386_GREGS = ("bx", "cx", "dx", "si", "di", "bp", "ax", "ds", "es", "fs", "gs",
              "orig_ax", "ip", "cs", "flags", "sp", "ss")


def x86(**regs):
    g = G((name, 0) for name in X86_GREGS)
    g.update(regs)
    return g


def ia32(**regs):
    g = G((name, 0) for name in I386_GREGS)
    g.update(regs)
    return g


def undone(arch, g, read):
    before = dict(g)
    r = sr.undo(arch, g, read)
    return r, dict(g) != before


# ---- x86_64 ----------------------------------------------------------------

@pytest.mark.parametrize("nr, args, code", [
    (202, dict(si=0x80), sr.ERESTARTSYS),               # futex FUTEX_WAIT_PRIVATE
    (202, dict(si=0x89), sr.ERESTARTSYS),               # FUTEX_WAIT_BITSET_PRIVATE
    (202, dict(si=0x86), sr.ERESTARTNOINTR),            # FUTEX_LOCK_PI_PRIVATE
    (202, dict(si=0x8b, r10=0x7000), sr.ERESTARTNOINTR),  # FUTEX_WAIT_REQUEUE_PI
    (34, {}, sr.ERESTARTNOHAND),                        # pause
    (130, {}, sr.ERESTARTNOHAND),                       # rt_sigsuspend
    (230, dict(si=1), sr.ERESTARTNOHAND),               # clock_nanosleep TIMER_ABSTIME
    (271, {}, sr.ERESTARTNOHAND),                       # ppoll
    (0, {}, sr.ERESTARTSYS),                            # read
    (61, {}, sr.ERESTARTSYS),                           # wait4
    (57, {}, sr.ERESTARTNOINTR),                        # fork
    (999, {}, sr.FALLBACK),                             # not in the table
    (202, dict(si=0x80, r10=0x7000), sr.FALLBACK),      # futex with a timeout
    (0x40000000 | 0, {}, sr.FALLBACK),                  # x32's read: not known
])
def test_x86_64_rewound_call_is_put_back_after_its_syscall(nr, args, code):
    g = x86(orig_ax=nr, ax=nr, ip=IP, **args)
    r, changed = undone("x86_64", g, memory(IP, SYSCALL))
    assert changed and r.how == "rewound" and r.code == code
    assert (g.ip, g.ax, g.orig_ax) == (IP + 2, -code & M64, nr)


@pytest.mark.parametrize("nr, args", [
    (35, {}),                                   # nanosleep
    (230, dict(si=0)),                          # clock_nanosleep, relative
    (7, dict(dx=M64)),                          # poll without a timeout (-1)
    (7, dict(dx=1000)),                         # poll with one
    (202, dict(si=0x80, r10=0x7000)),           # futex wait with a timeout
    (202, dict(si=0x189, r10=0x7000)),          # WAIT_BITSET|CLOCK_REALTIME
    (219, {}),                                  # restart_syscall
])
def test_x86_64_restart_block_gets_its_code_back(nr, args):
    g = x86(orig_ax=nr, ax=-4 & M64, ip=IP + 2, **args)
    r, changed = undone("x86_64", g, memory(IP, SYSCALL))
    assert changed and r.how == "restartblock"
    assert (g.ip, g.ax) == (IP + 2, -516 & M64)


@pytest.mark.parametrize("regs, read", [
    (dict(orig_ax=M64, ax=202, ip=IP), memory(IP, SYSCALL)),       # not in a call
    (dict(orig_ax=202, ax=202, ip=IP), memory(IP, b"\x90\x90")),   # no syscall at ip
    (dict(orig_ax=202, ax=202, ip=IP + 2), memory(IP, SYSCALL)),   # already after it
    (dict(orig_ax=202, ax=-512 & M64, ip=IP + 2), memory(IP, SYSCALL)),  # kernel's view
    (dict(orig_ax=232, ax=-4 & M64, ip=IP + 2), memory(IP, SYSCALL)),    # epoll_wait EINTR
    (dict(orig_ax=202, si=0x80, ax=-4 & M64, ip=IP + 2), memory(IP, SYSCALL)),  # no timeout
    (dict(orig_ax=35, ax=-4 & M64, ip=IP + 2), memory(IP, b"\x90\x90")),  # no syscall
    (dict(orig_ax=35, ax=35, ip=IP), memory(IP, SYSCALL)),          # read fails below
])
def test_x86_64_thread_left_alone(regs, read):
    if regs == dict(orig_ax=35, ax=35, ip=IP):
        def read(addr, n):
            raise OSError(5, "Input/output error")
    g = x86(**regs)
    r, changed = undone("x86_64", g, read)
    assert r is None and not changed


def test_x86_64_int80_uses_the_i386_numbers():
    g = x86(orig_ax=29, ax=29, ip=IP)                # i386 pause
    r, changed = undone("x86_64", g, memory(IP, INT80))
    assert changed and r.name == "pause" and (g.ip, g.ax) == (IP + 2, -514 & M64)


# ---- ia32 ------------------------------------------------------------------

def test_ia32_rewound_call_gets_32_bit_registers():
    g = ia32(orig_ax=240, ax=240, cx=0x80, ip=0xF7F225E5)    # futex wait
    r, changed = undone("ia32", g, memory(0xF7F225E5, INT80))
    assert changed and r.code == sr.ERESTARTSYS
    assert (g.ip, g.ax) == (0xF7F225E7, 0xFFFFFE00)


def test_ia32_restart_block_and_its_timeout_argument():
    g = ia32(orig_ax=240, ax=0xFFFFFFFC, cx=0x80, si=0xFFD0, ip=0xF7F225E7)
    r, changed = undone("ia32", g, memory(0xF7F225E5, INT80))
    assert changed and r.how == "restartblock" and g.ax == 0xFFFFFDFC
    g = ia32(orig_ax=267, ax=0xFFFFFFFC, cx=1, ip=0xF7F225E7)  # clock_nanosleep abs
    assert undone("ia32", g, memory(0xF7F225E5, INT80)) == (None, False)


@pytest.mark.parametrize("regs, insn", [
    (dict(orig_ax=M32, ax=29, ip=IP), INT80),        # orig_ax -1 as 32 bits
    (dict(orig_ax=M64, ax=29, ip=IP), INT80),        # ... or as 64
    (dict(orig_ax=29, ax=29, ip=IP), SYSCALL),       # not an int $0x80
    (dict(orig_ax=29, ax=0xFFFFFDFE, ip=IP + 2), INT80),  # the kernel's view
])
def test_ia32_thread_left_alone(regs, insn):
    assert undone("ia32", ia32(**regs), memory(IP, insn)) == (None, False)


# ---- aarch64 and arm: the kernel's view is what CRIU saves -----------------

SVC_A64 = b"\x01\x00\x00\xd4"


def a64(pc, x8, x0=0x1234):
    g = G(("x%d" % i, 0) for i in range(31))
    g.update(x0=x0, x8=x8, sp=0x7FF0, pc=pc, pstate=0)
    return g


def test_aarch64_thread_on_its_svc_is_recognised_and_left_alone():
    g = a64(IP, 98)                                    # futex
    r, changed = undone("aarch64", g, memory(IP, SVC_A64))
    assert r.how == "kernel" and r.name == "futex" and not changed
    assert not r.changed and g.pc == IP and g.x0 == 0x1234
    assert undone("aarch64", a64(IP, 101), memory(IP, SVC_A64))[0].code == 516


def test_aarch64_thread_elsewhere_is_not_recognised():
    assert undone("aarch64", a64(IP + 4, 98), memory(IP, SVC_A64)) == (None, False)


def arm(pc, r7, thumb):
    g = G((name, 0) for name in ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7",
                                  "r8", "r9", "r10", "fp", "ip", "sp", "lr", "pc",
                                  "cpsr", "orig_r0"))
    g.pc, g.r7, g.r0, g.orig_r0 = pc, r7, 0x1234, 0x1234
    g.cpsr = 0x10 | (0x20 if thumb else 0)
    return g


@pytest.mark.parametrize("thumb, insn", [(False, b"\x00\x00\x00\xef"),
                                         (True, b"\x00\xdf")])
def test_arm_thread_on_its_svc_is_recognised_and_left_alone(thumb, insn):
    g = arm(IP, 29, thumb)                              # pause
    r, changed = undone("arm", g, memory(IP, insn))
    assert r.how == "kernel" and r.name == "pause" and r.code == 514
    assert not changed and r.insn_len == len(insn)


def test_arm_svc_of_the_other_state_is_not_recognised():
    assert undone("arm", arm(IP, 29, True), memory(IP, b"\x00\x00\x00\xef"))[0] is None
    assert undone("arm", arm(IP, 29, False), memory(IP, b"\x00\xdf\x00\x00"))[0] is None


def test_unsupported_arch_is_left_alone():
    assert sr.undo("vax", x86(orig_ax=1, ax=1), memory(0, SYSCALL)) is None


# ---- ppc64, s390, mips, loongarch64: restart blocks and strangers -----------

def gp_of(arch, **regs):
    g = G((n, 0) for n in by_name(arch).gregs)
    g.update(regs)
    return g


SC, SCV = struct.pack("<I", 0x44000002), struct.pack("<I", 0x44000001)


@pytest.mark.parametrize("insn, eintr, code, trap", [
    (SC, 4, 516, 0xC00), (SCV, -4 & M64, -516 & M64, 0x3000)])
def test_ppc64_restart_block_gets_its_code_and_trap_back(insn, eintr, code, trap):
    # nanosleep (162): compel left EINTR (sc, CR0.SO set) or -EINTR (scv)
    g = gp_of("ppc64", r0=162, r3=eintr, orig_gpr3=0x7000, nip=0x1004, ccr=0x10000000)
    r, changed = undone("ppc64", g, memory(0x1000, insn))
    assert changed and r.how == "restartblock" and g.r3 == code and g.trap == trap
    assert g.nip == 0x1004


def test_ppc64_sc_without_cr0_so_is_not_a_failed_call():
    g = gp_of("ppc64", r0=29, r3=0x7000, orig_gpr3=0x7000, nip=0x1000, ccr=0)
    assert undone("ppc64", g, memory(0x1000, SC)) == (None, False)


def test_s390_restart_block_and_a_thread_without_system_call():
    read = memory(0x1000, b"\x0a\xa2")          # svc 162: nanosleep
    g = gp_of("s390", r2=-4 & M64, orig_gpr2=0x7000, psw_addr=0x1002)
    r = sr.undo("s390", g, read, {"system_call": 2 << 16 | 162})
    assert r.how == "restartblock" and g.r2 == -516 & M64 and g.psw_addr == 0x1002
    g = gp_of("s390", r2=0x7000, orig_gpr2=0x7000, psw_addr=0x1000)
    assert sr.undo("s390", g, read, {"system_call": 0}) is None


def test_loongarch64_restart_syscall_and_unknown_calls():
    read = memory(0x1000, struct.pack("<I", 0x002B0000))
    # compel's -ERESTART_RESTARTBLOCK: a7 = restart_syscall, rewound
    g = gp_of("loongarch64", r4=0x7000, r11=128, csr_era=0x1000)
    r, changed = undone("loongarch64", g, read)
    assert changed and r.code == 516 and g.r4 == -516 & M64 and g.r0 == 129
    assert g.orig_a0 == 0x7000 and g.csr_era == 0x1004
    # a number the table does not know, or r0 set: left alone
    assert undone("loongarch64", gp_of("loongarch64", r11=999, csr_era=0x1000), read) \
        == (None, False)
    assert undone("loongarch64", gp_of("loongarch64", r0=74, r11=73, csr_era=0x1000),
                  read) == (None, False)


def test_mips_rewound_call_and_a_stranger():
    read = memory(0x1000, struct.pack("<I", 0x0000000C))
    g = gp_of("mips", r2=5000, r7=0x33, r26=0x33, cp0_epc=0x1000)     # read
    r, changed = undone("mips", g, read)
    assert changed and (g.r0, g.r2, g.r7, g.cp0_epc) == (5000, 512, 1, 0x1004)
    assert undone("mips", gp_of("mips", r2=4003, cp0_epc=0x1000), read) == (None, False)


# ---- the tables ------------------------------------------------------------

HEADERS = {"x86_64": ("gcc", "asm/unistd_64.h"),
           "i386": ("i686-linux-gnu-gcc", "asm/unistd.h"),
           "generic": ("aarch64-linux-gnu-gcc", "asm/unistd.h"),
           "arm": ("arm-linux-gnueabihf-gcc", "asm/unistd.h"),
           "ppc64": ("powerpc64le-linux-gnu-gcc", "asm/unistd.h"),
           "s390x": ("s390x-linux-gnu-gcc", "asm/unistd.h"),
           "mips_n64": ("mips64el-linux-gnuabi64-gcc", "asm/unistd.h")}


def header_numbers(cc, header):
    """{name: number} of the __NR_ macros a compiler's uapi header defines."""
    out = subprocess.run([need(cc), "-E", "-dM", "-"], input="#include <%s>\n" % header,
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    macros = dict(re.findall(r"#define (\w+) (.*)", out))

    def value(expr):
        return eval(re.sub(r"\b__\w+\b",
                           lambda m: "(%s)" % value(macros.get(m.group(0), "0")), expr))
    return {k[5:]: value(v) for k, v in macros.items() if k.startswith("__NR_")}


@pytest.mark.parametrize("abi", sorted(HEADERS))
def test_syscall_numbers_are_the_kernel_headers(abi):
    numbers = header_numbers(*HEADERS[abi])
    table = sr.SYSCALL_NAMES[abi]
    assert {name: numbers.get(name) for name in table.values()} == \
        {name: nr for nr, name in table.items()}
    # every call the rules know that this ABI has is in its table
    assert sorted(n for n in sr.RULES if n in numbers) == sorted(table.values())


def test_every_rule_is_in_some_table():
    named = set().union(*(t.values() for t in sr.SYSCALL_NAMES.values()))
    assert set(sr.RULES) == named


# ---- the kernel as the oracle: x86_64 and ia32 -----------------------------

@pytest.fixture(scope="module")
def kernel_runs(tmp_path_factory, plain_core_pattern):
    """{(arch, continued): run} made on demand."""
    made = {}

    def get(arch, continued):
        if (arch, continued) not in made:
            made[arch, continued] = kernel_run(tmp_path_factory, arch, continued)
        return made[arch, continued]
    return get


def kernel_run(tmp_path_factory, arch, continued):
    work = tmp_path_factory.mktemp("restart-%s%s" % (arch, "-cont" if continued else ""))
    exe = str(work / "restart_calls")
    cc = ["gcc"] if arch == "x86_64" else ["i686-linux-gnu-gcc", "-static"]
    need(cc[0])
    subprocess.run(cc + ["-g", "-O0", "-pthread", "-o", exe, PROG], check=True, timeout=120)

    def listed(flag):
        out = subprocess.run([exe, flag], stdout=subprocess.PIPE, text=True, check=True)
        return collections.Counter(out.stdout.split())

    proc = subprocess.Popen([exe], cwd=str(work), stdout=subprocess.PIPE,
                            preexec_fn=allow_core)
    try:
        assert proc.stdout.readline().decode().startswith("ready")
        want = listed("--list")
        wait_until(proc.pid, lambda calls: collections.Counter(calls) == want)
        if continued:
            os.kill(proc.pid, signal.SIGSTOP)
            for _ in range(200):
                with open("/proc/%d/stat" % proc.pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "T":
                        break
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGCONT)
            want = listed("--list-continued")
            wait_until(proc.pid, lambda calls: collections.Counter(calls) == want)
    finally:
        proc.send_signal(signal.SIGSEGV)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGSEGV
    kernel = str(find_core(work, proc.pid))
    images, out = str(work / "images"), str(work / "out")
    os.mkdir(out)
    summary = core2images.core_to_images(kernel, images, exe=exe, as_criu_saves=True)
    run_coredump("-i", images, "-o", out, "-q", check=0)
    return {"exe": exe, "kernel": kernel, "images": images,
            "ours": os.path.join(out, "core.%d" % summary["pid"]),
            "threads": sum(want.values())}


NREGS = {"x86_64": (ctypes.c_uint64, 27, core2images.X86_64_GREGS),
         "ia32": (ctypes.c_uint32, 17, core2images.I386_GREGS)}


def registers(arch, path):
    """{tid: {register: value}} of a core's NT_PRSTATUS notes."""
    word, n, names = NREGS[arch]
    st = core2images.prstatus_type(word, n)
    out = {}
    with core2images.CoreFile(path) as core:
        for _, ntype, desc in core.notes():
            if ntype == core2images.NT_PRSTATUS:
                p = st.from_buffer_copy(desc)
                out[p.pr_pid] = dict(zip(names, p.pr_reg))
    return out


def saved(arch, images):
    """{tid: gpregs} as the images (CRIU's rewound view) hold them."""
    from criu_coredump import images as ccd_images
    from criu_coredump.imagedir import ImageDir
    out = {}
    for path in glob.glob(os.path.join(images, "core-*.img")):
        core = ccd_images.load_one(ImageDir(images), os.path.basename(path),
                                   "CORE", pb.core_entry)
        out[int(re.search(r"core-(\d+)", path).group(1))] = core.thread_info.gpregs
    return out


CASES = [(a, c) for a in ("x86_64", "ia32") for c in (False, True)]


@pytest.mark.parametrize("arch, continued", CASES)
def test_every_thread_has_the_kernels_registers(kernel_runs, arch, continued):
    run = kernel_runs(arch, continued)
    kernel, ours = registers(arch, run["kernel"]), registers(arch, run["ours"])
    assert len(kernel) == run["threads"] == 19
    assert ours == kernel
    # the images really were rewound: not a comparison of untouched values
    rewound = [tid for tid, g in saved(arch, run["images"]).items()
               if (g.ip, g.ax) != (kernel[tid]["ip"], kernel[tid]["ax"])]
    assert len(rewound) == 17        # all but epoll_wait and rt_sigtimedwait


@pytest.mark.parametrize("arch, continued", CASES)
def test_the_table_says_what_the_kernel_returned(kernel_runs, arch, continued):
    """Each thread's -ERESTART* code in the kernel's core is the one the
    table gives for its call and arguments."""
    run = kernel_runs(arch, continued)
    mask, bits = (M64, 64) if arch == "x86_64" else (M32, 32)
    entry = by_name(arch).syscall.entries[0]
    seen = collections.Counter()
    for tid, regs in registers(arch, run["kernel"]).items():
        name, code = sr.code_for(entry.numbers, regs["orig_ax"],
                                 [regs[a] & mask for a in entry.args])
        ax = regs["ax"] & mask
        got = -(ax - (1 << bits) if ax >> (bits - 1) else ax)   # the errno returned
        if got == 4:             # a plain -EINTR: epoll_wait, rt_sigtimedwait
            assert code is None, name
            continue
        assert got == code, (tid, name)
        seen[got] += 1
    # ERESTARTSYS, NOINTR, NOHAND and RESTART_RESTARTBLOCK are all there
    assert sorted(seen) == [512, 513, 514, 516], seen
    assert seen[516] == 5


def gdb_registers(arch, run, core):
    regs = "rip rax orig_rax" if arch == "x86_64" else "eip eax orig_eax"
    out = gdb(core, "set debuginfod enabled off",
              "thread apply all info registers " + regs, "thread apply all bt 1",
              exe=run["exe"])
    return [l for l in out.splitlines()
            if l.strip() and not l.startswith(("[New LWP", "Program terminated", "warning:"))]


@pytest.mark.parametrize("arch", ["x86_64", "ia32"])
def test_gdb_reads_the_kernels_registers_and_frames(kernel_runs, arch):
    run = kernel_runs(arch, False)
    ours, kernel = gdb_registers(arch, run, run["ours"]), gdb_registers(arch, run, run["kernel"])
    assert ours == kernel
    assert sum(l.startswith(("rax", "eax")) for l in ours) == 19
