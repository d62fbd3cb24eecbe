"""ia32 (x86 compat) notes: a 32-bit task checkpointed on x86_64.

CRIU keeps such a task under mtype X86_64 with gpregs.mode COMPAT: the 17
registers of user_regs_struct32 in the 64-bit fields of the same names, the
FXSAVE/XSAVE area as for a 64-bit task, the three GDT TLS slots as
user_desc records, and the auxiliary vector as /proc/PID/auxv gives it
(32-bit words, read into 64-bit ones two at a time).

What the kernel writes for it (compat_binfmt_elf, arch/x86/kernel/ptrace.c
x86_32_regsets, in this order): ELFCLASS32/EM_386; compat_elf_prstatus with
those 17 registers; prpsinfo with 16-bit uids (__compat_uid_t is u16 on
x86); NT_PRFPREG "CORE" (struct user_i387_ia32_struct, made from the FXSAVE
area by convert_from_fxsr() in arch/x86/kernel/fpu/regset.c); NT_PRXFPREG
"LINUX" (the 512-byte FXSAVE area as is); NT_X86_XSTATE; NT_386_TLS (all
three slots, when one is in use); then NT_X86_XSAVE_LAYOUT once.
"""
import ctypes
import struct
from types import SimpleNamespace

from .. import elf
from . import x86_64
from .base import Arch, Regs, SyscallABI

# elf_gregset_t: struct user_regs_struct32 (arch/x86/include/asm/user32.h)
GREGS = ("bx", "cx", "dx", "si", "di", "bp", "ax", "ds", "es", "fs", "gs",
         "orig_ax", "ip", "cs", "flags", "sp", "ss")
MASK32 = 0xFFFFFFFF
_DESC_FIELDS = ("entry_number", "base_addr", "limit", "seg_32bit", "contents_h",
                "contents_l", "read_exec_only", "limit_in_pages",
                "seg_not_present", "usable")

# twd_fxsr_to_i387() tags
TAG_VALID, TAG_ZERO, TAG_SPECIAL, TAG_EMPTY = 0, 1, 2, 3


def decode(ti, reparse=None):
    """thread_info_x86 of a COMPAT task: the 32-bit registers in the 64-bit
    fields of the same names."""
    g = ti.gpregs
    return Regs(gp={n: getattr(g, n) & MASK32 for n in GREGS},
                extra={"fpregs": x86_64.decode_fpregs(ti.fpregs),
                       "tls": [SimpleNamespace(**{n: getattr(t, n) for n in _DESC_FIELDS})
                               for t in ti.tls]})


def accepts(ti):
    return not x86_64.accepts(ti)


def _st_regs(fp):
    """The eight 16-byte ST slots of the FXSAVE area, as bytes."""
    vals = list(fp.st_space)[:32]
    vals += [0] * (32 - len(vals))
    raw = struct.pack("<32I", *vals)
    return [raw[16 * i:16 * i + 16] for i in range(8)]


def i387_tag_word(fp, st):
    """twd_fxsr_to_i387(): the full tag word from the abridged one."""
    tos = (fp.swd >> 11) & 7
    ret = 0xFFFF0000
    for i in range(8):
        if not fp.twd & (1 << i):
            tag = TAG_EMPTY
        else:
            mant = st[(i - tos) & 7][:8]
            exp, = struct.unpack_from("<H", st[(i - tos) & 7], 8)
            exp &= 0x7FFF
            if exp == 0x7FFF:
                tag = TAG_SPECIAL
            elif exp == 0:
                tag = TAG_ZERO if mant == bytes(8) else TAG_SPECIAL
            else:
                tag = TAG_VALID if mant[7] & 0x80 else TAG_SPECIAL
        ret |= tag << (2 * i)
    return ret


def i387(th):
    """struct user_i387_ia32_struct (108 bytes), as convert_from_fxsr() on
    a 64-bit kernel fills it: fcs and fos are the task's cs and ds, since
    64-bit FXSAVE keeps no selectors."""
    fp, g = th.regs.fpregs, th.regs.gp
    st = _st_regs(fp)
    head = struct.pack("<7I", fp.cwd | 0xFFFF0000, fp.swd | 0xFFFF0000,
                       i387_tag_word(fp, st), fp.rip & MASK32, g["cs"],
                       fp.rdp & MASK32, (g["ds"] | 0xFFFF0000) & MASK32)
    return head + b"".join(r[:10] for r in st)


def user_desc(t):
    """struct user_desc as fill_user_desc() writes it (lm is 0 for ia32)."""
    flags = (int(t.seg_32bit) | int(t.contents_l) << 1 | int(t.contents_h) << 2
             | int(t.read_exec_only) << 3 | int(t.limit_in_pages) << 4
             | int(t.seg_not_present) << 5 | int(t.usable) << 6)
    return struct.pack("<IIII", t.entry_number, t.base_addr, t.limit, flags)


def _tls_empty(t):
    """LDT_empty(): the user_desc of a free GDT slot."""
    return (t.base_addr == 0 and t.limit == 0 and not t.contents_h
            and not t.contents_l and t.read_exec_only and not t.seg_32bit
            and not t.limit_in_pages and t.seg_not_present and not t.usable)


def tls_note(proc, th):
    """NT_386_TLS: every slot, written only when one of them is in use
    (regset_tls_active())."""
    slots = th.regs.tls
    if all(_tls_empty(t) for t in slots):
        return None
    return b"".join(user_desc(t) for t in slots)


def auxv_words(saved):
    """The 32-bit words of the vector from CRIU's 64-bit ones (each holds two
    consecutive words of /proc/PID/auxv, the first in its low half)."""
    out = []
    for w in saved:
        out += [w & MASK32, (w >> 32) & MASK32]
    return out


ARCH = Arch(
    name="ia32", elf=elf.ELF32, machine=elf.EM_386, endian="little",
    long_t=ctypes.c_uint32, uid_t=ctypes.c_uint16, page_size=4096,
    user_va_end=1 << 32, gdb_name="i386",
    mtype=1, ti_field="thread_info", accepts=accepts,
    gregs=GREGS, decode=decode,
    # arch/x86/kernel/ptrace.c x86_32_regsets, in order
    thread_notes=((elf.NT_PRFPREG, lambda proc, th: i387(th)),
                  (elf.NT_PRXFPREG, lambda proc, th: x86_64.fxsave(th.regs.fpregs)),
                  (elf.NT_X86_XSTATE, x86_64.xstate_note),
                  (elf.NT_386_TLS, tls_note)),
    process_notes=x86_64.ARCH.process_notes,
    auxv_words=auxv_words,
    native_hosts=("x86_64", "i686", "i386"),
    # the vDSO's sysenter/syscall paths return to the landing pad after
    # the `int $0x80` that follows them: a rewound ip is on cd 80 too
    syscall=SyscallABI(32, "ip", "ax", (
        x86_64.INT80,),
        kernel_rewinds_first=False, orig="orig_ax"),
)
