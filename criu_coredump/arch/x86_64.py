"""x86_64: prstatus with user_regs_struct, FXSAVE and XSAVE areas.

Layouts: arch/x86/include/asm/user_64.h (user_regs_struct,
user_i387_struct), arch/x86/kernel/fpu/xstate.c (the XSAVE area as ptrace and
cores see it: non-compacted, xcr0 in the software-reserved bytes at 464).
CRIU's images (images/core-x86.proto): mtype X86_64, thread_info with
gpregs.mode NATIVE (COMPAT is an ia32 task, ia32.py), the general registers
under the kernel's names, the FXSAVE area and the XSAVE components.
"""
import ctypes
import operator
import struct
from types import SimpleNamespace

from .. import elf, protodecl
from .base import Arch, Regs, SyscallABI, SyscallEntry, words

# elf_gregset_t: struct user_regs_struct (arch/x86/include/asm/user_64.h)
GREGS = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8",
         "ax", "cx", "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp",
         "ss", "fs_base", "gs_base", "ds", "es", "fs", "gs")
MODE_NATIVE, MODE_COMPAT = 1, 2   # user_x86_regs_mode

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


_FX_FIELDS = ("cwd", "swd", "twd", "fop", "rip", "rdp", "mxcsr", "mxcsr_mask")


_FX_GET = operator.attrgetter(*_FX_FIELDS)
_XSAVE_NAMES = tuple(c[1] for c in XSAVE_COMPONENTS)
_XSAVE_GET = operator.attrgetter(*_XSAVE_NAMES)
_GREGS_GET = operator.attrgetter(*GREGS)


# Shadow stacks (CET): on a CPU that has them, CRIU 4.0+ saves every
# thread's user_x86_cet_entry as user_x86_xsave_entry's field 9: `cet`, the
# features ARCH_SHSTK_STATUS reports (ARCH_SHSTK_SHSTK: the shadow stack is
# on), and `ssp`, what ptrace's NT_X86_SHSTK gives.  pycriu 3.17 does not
# declare it; protobuf keeps it as an unknown field, read with this.
CetXsave = protodecl.declare("criu_coredump_x86_cet.proto", [
    ("user_x86_cet_entry", [("cet", 1, "uint64"), ("ssp", 2, "uint64")]),
    ("user_x86_xsave_entry_cet", [("cet", 9, "user_x86_cet_entry")]),
], "user_x86_xsave_entry_cet")
ARCH_SHSTK_SHSTK = 1 << 0


def decode_cet(xs, reparse):
    """(features, ssp) of an image's xsave entry, None when it has none."""
    if not protodecl.declares(xs, "cet"):
        if reparse is None:
            return None
        try:
            if not len(xs.UnknownFields()):
                return None  # the usual case: nothing to parse again
        except (AttributeError, NotImplementedError):
            pass
        xs = reparse(CetXsave, xs)
    if not xs.HasField("cet"):
        return None
    return xs.cet.cet, xs.cet.ssp


def decode_fpregs(fp, reparse=None):
    """user_x86_fpregs_entry as a plain record (the same field names), the
    xsave components as lists, xsave None when the images have none; `fx`
    is its legacy area once fxsave() has made it; xsave.cet is
    (features, ssp) or None."""
    out = SimpleNamespace(**dict(zip(_FX_FIELDS, _FX_GET(fp))), fx=None)
    out.st_space = list(fp.st_space)
    out.xmm_space = list(fp.xmm_space)
    out.xsave = None
    if fp.HasField("xsave"):
        xs = fp.xsave
        out.xsave = SimpleNamespace(xstate_bv=xs.xstate_bv, **{
            n: list(v) if v else [] for n, v in zip(_XSAVE_NAMES, _XSAVE_GET(xs))})
        out.xsave.cet = decode_cet(xs, reparse)
    return out


def decode(ti, reparse=None):
    """thread_info_x86 of a 64-bit task."""
    return Regs(gp=dict(zip(GREGS, _GREGS_GET(ti.gpregs))),
                extra={"fpregs": decode_fpregs(ti.fpregs, reparse)})


def accepts(ti):
    """CRIU keeps 64-bit and ia32 tasks under one mtype; the mode tells."""
    return not (ti.gpregs.HasField("mode") and ti.gpregs.mode == MODE_COMPAT)


def fxsave(fp):
    """The 512-byte legacy area (user_i387_struct), padding zeroed as the
    kernel's NT_FPREGSET has it.  Made once a thread and kept on its
    record (decode_fpregs): NT_FPREGSET and NT_X86_XSTATE (ia32:
    NT_PRXFPREG) all start with it."""
    if fp.fx is not None:
        return fp.fx
    # the image's fields are wider than the registers (uint32 for 16-bit
    # ones): keep the register's width, as restoring them would
    head = struct.pack("<HHHHQQII", fp.cwd & 0xFFFF, fp.swd & 0xFFFF,
                       fp.twd & 0xFFFF, fp.fop & 0xFFFF, fp.rip, fp.rdp,
                       fp.mxcsr, fp.mxcsr_mask)
    st = _words("I", fp.st_space, 32)
    xmm = _words("I", fp.xmm_space, 64)
    fp.fx = head + st + xmm + bytes(FX_SIZE - len(head) - len(st) - len(xmm))
    return fp.fx


def _words(fmt, values, count):
    if len(values) != count:
        values = words(values, count)
    return struct.pack("<%d%s" % (count, fmt), *values)


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


def xstate_note(proc, th):
    fp = th.regs.fpregs
    return xstate(fp)[0] if fp.xsave is not None else None


def shstk_note(proc, th):
    """NT_X86_SHSTK: the shadow stack pointer (8 bytes), for a thread whose
    shadow stack is on, as ssp_active() and ssp_get() give it to the
    kernel's core (arch/x86/kernel/fpu/regset.c); no note otherwise."""
    xs = th.regs.fpregs.xsave
    cet = xs.cet if xs is not None else None
    if cet is None or not cet[0] & ARCH_SHSTK_SHSTK:
        return None
    return struct.pack("<Q", cet[1])


def xsave_layout(proc):
    """NT_X86_XSAVE_LAYOUT, as Linux 6.x writes it once per core: one
    {type, size, offset, flags} record per extended component in the note."""
    fp = proc.threads[0].regs.fpregs
    if fp.xsave is None:
        return None
    comps = xsave_components(fp.xsave)
    desc = b"".join(struct.pack("<IIII", bit, sz, off, 0)
                    for bit, _, _, off, sz in comps)
    return desc or None


# `int $0x80`, the i386 entry (ia32 tasks; a 64-bit task may use it too)
INT80 = SyscallEntry(b"\xcd\x80", "i386", "orig_ax",
                     ("bx", "cx", "dx", "si", "di", "bp"))


ARCH = Arch(
    name="x86_64", elf=elf.ELF64, machine=elf.EM_X86_64, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32, page_size=4096,
    # 5-level paging; the vsyscall page above it is the loader's exception
    user_va_end=1 << 56, gdb_name="i386:x86-64",
    mtype=1, ti_field="thread_info", accepts=accepts,
    gregs=GREGS, decode=decode,
    # arch/x86/kernel/ptrace.c x86_64_regsets, in order
    thread_notes=((elf.NT_FPREGSET, lambda proc, th: fxsave(th.regs.fpregs)),
                  (elf.NT_X86_XSTATE, xstate_note),
                  (elf.NT_X86_SHSTK, shstk_note)),
    process_notes=((elf.NT_X86_XSAVE_LAYOUT, xsave_layout),),
    native_hosts=("x86_64",),
    syscall=SyscallABI(64, "ip", "ax", (
        SyscallEntry(b"\x0f\x05", "x86_64", "orig_ax",
                     ("di", "si", "dx", "r10", "r8", "r9")),
        INT80),   # a 64-bit task's int $0x80 takes the i386 numbers
        kernel_rewinds_first=False, orig="orig_ax"),
)
