"""x86_64 notes: prstatus with user_regs_struct, FXSAVE and XSAVE areas.

Layouts: arch/x86/include/asm/user_64.h (user_regs_struct,
user_i387_struct), arch/x86/kernel/fpu/xstate.c (the XSAVE area as ptrace and
cores see it: non-compacted, xcr0 in the software-reserved bytes at 464).
"""
import ctypes
import struct

from .. import elf, notes

ELF = elf.ELF64
MACHINE = elf.EM_X86_64
OSABI = elf.ELFOSABI_NONE
EFLAGS = 0
long_t = ctypes.c_uint64
uid_t = ctypes.c_uint32
SIGINFO_SIZE = 128

GREGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
         "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp",
         "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")

Prstatus = notes.prstatus_type(long_t, ctypes.c_uint64, len(GREGS))
Prpsinfo = notes.prpsinfo_type(long_t, uid_t)

# XSAVE components CRIU saves: (xfeature bit, image field, element format,
# offset and size in the standard (non-compacted) layout, Intel SDM vol. 1
# 13.4 / CPUID leaf 0xD on Intel processors).  gdb sizes the note from xcr0
# with these same offsets (X86_XSTATE_SIZE).
XSAVE_COMPONENTS = (
    (2, "ymmh_space", "I", 576, 256),
    (3, "bndreg_state", "Q", 960, 64),
    (4, "bndcsr_state", "Q", 1024, 64),
    (5, "opmask_reg", "Q", 1088, 64),
    (6, "zmm_upper", "Q", 1152, 512),
    (7, "hi16_zmm", "Q", 1664, 1024),
    (9, "pkru", "I", 2688, 8),
)
XCR0_OFFSET = 464
XSAVE_HEADER = 512
FX_SIZE = 512


def prstatus(proc, th, cursig):
    """fill_prstatus() + the general registers as CRIU saved them.  The CPU
    times (pr_utime, pr_stime, pr_cutime, pr_cstime) stay 0: CRIU images
    carry none."""
    st = notes.prstatus_head(Prstatus, proc, th, cursig, long_t)
    g = th.regs.gpregs
    for i, name in enumerate(GREGS):
        st.pr_reg[i] = getattr(g, name)
    st.pr_fpvalid = 1
    return bytes(st)


def fxsave(fp):
    """The 512-byte legacy area (user_i387_struct), padding zeroed as the
    kernel's NT_FPREGSET has it."""
    # the image's fields are wider than the registers (uint32 for 16-bit
    # ones): keep the register's width, as restoring them would
    head = struct.pack("<HHHHQQII", fp.cwd & 0xFFFF, fp.swd & 0xFFFF,
                       fp.twd & 0xFFFF, fp.fop & 0xFFFF, fp.rip, fp.rdp,
                       fp.mxcsr, fp.mxcsr_mask)
    st = _words("I", fp.st_space, 32)
    xmm = _words("I", fp.xmm_space, 64)
    return head + st + xmm + bytes(FX_SIZE - len(head) - len(st) - len(xmm))


def _words(fmt, values, count):
    vals = list(values)[:count]
    vals += [0] * (count - len(vals))
    return struct.pack("<%d%s" % (count, fmt), *vals)


def xsave_components(xs):
    """The components present in an image's xsave entry."""
    return [c for c in XSAVE_COMPONENTS if len(getattr(xs, c[1]))]


def xstate(fp):
    """NT_X86_XSTATE in the standard layout, sized to the highest component.

    Like copy_xstate_to_uabi_buf(): the legacy area as ptrace gave it to
    CRIU, the software-reserved bytes at 464 holding xcr0 then zeros
    (xstate_fx_sw_bytes), the header with only xstate_bv, every component
    at its offset.  The kernel uses this CPU's own offsets and size (CPUID
    leaf 0xD, e.g. PKRU at 2432 on AMD without AVX-512); CRIU images do
    not record them, and gdb up to 13 only reads the standard layout.
    """
    xs = fp.xsave
    comps = xsave_components(xs)
    xcr0 = 0x3
    size = XSAVE_HEADER + 64
    for bit, _, _, off, sz in comps:
        xcr0 |= 1 << bit
        size = max(size, off + sz)
    buf = bytearray(size)
    buf[:FX_SIZE] = fxsave(fp)
    struct.pack_into("<Q", buf, XCR0_OFFSET, xcr0)
    struct.pack_into("<Q", buf, XSAVE_HEADER, xs.xstate_bv & xcr0)
    for bit, name, fmt, off, sz in comps:
        n = sz // struct.calcsize(fmt)
        buf[off:off + sz] = _words(fmt, getattr(xs, name), n)
    return bytes(buf), comps


def thread_notes(proc, th):
    fp = th.regs.fpregs
    out = [("CORE", elf.NT_FPREGSET, fxsave(fp))]
    if fp.HasField("xsave"):
        out.append(("LINUX", elf.NT_X86_XSTATE, xstate(fp)[0]))
    return out


def process_notes(proc, threads):
    """NT_X86_XSAVE_LAYOUT, as Linux 6.x writes it once per core: one
    {type, size, offset, flags} record per extended component in the note."""
    fp = threads[0].regs.fpregs
    if not fp.HasField("xsave"):
        return []
    comps = xsave_components(fp.xsave)
    desc = b"".join(struct.pack("<IIII", bit, sz, off, 0)
                    for bit, _, _, off, sz in comps)
    return [("LINUX", elf.NT_X86_XSAVE_LAYOUT, desc)] if desc else []


def siginfo(signo):
    return notes.siginfo_bytes(signo, SIGINFO_SIZE)
