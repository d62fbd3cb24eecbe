"""ppc64le (64-bit POWER, little-endian, ELFv2): prstatus with the 48 words
of elf_gregset_t, the FP, VMX (Altivec) and VSX register sets, and the
transactional-memory sets when a thread was checkpointed inside a
transaction.

Layouts (Linux): arch/powerpc/include/uapi/asm/ptrace.h (struct
user_pt_regs: gpr[32], nip, msr, orig_gpr3, ctr, link, xer, ccr, softe,
trap, dar, dsisr, result; ELF_NGREG 48, the rest zeros);
arch/powerpc/include/uapi/asm/elf.h (ELF_NFPREG 33: fpr0-31 then fpscr;
NT_PPC_VMX: 32 vector registers, vscr in a 16-byte slot, vrsave in the
first word of another: 34 x 16 bytes; NT_PPC_VSX: the low doublewords of
vs0-vs31, 32 x 8 bytes); arch/powerpc/kernel/ptrace/ptrace-view.c (the
regsets in core order: NT_PRSTATUS, NT_PRFPREG "CORE", NT_PPC_VMX,
NT_PPC_VSX, then the TM sets NT_PPC_TM_CGPR..NT_PPC_TM_SPR when a
transaction is active; gpr_get() reports softe as 1); arch/powerpc/include/
asm/elf.h (ELF_CORE_EFLAGS is 2, the ELFv2 ABI, for every little-endian
task).  `long` is 64 bits and __kernel_uid_t 32 bits.

CRIU's images (images/core-ppc64.proto, criu/arch/ppc64/crtools.c) keep
gpr[32], nip, msr, orig_gpr3, ctr, link, xer, ccr and trap (softe, dar,
dsisr and result are not saved: softe is the kernel's constant 1, the
other three are 0 in a core of a task that took no fault), fpstate (33
words), vrstate (vr0-vr31 and vscr as 66 words in memory order, vrsave)
and vsxstate (32 words).  CRIU sets MSR_VEC and MSR_VSX in the saved msr
when it saved those sets, for its restore to load them; the kernel's core
shows the bits the CPU had, which the images do not record.  In a
transaction CRIU swaps the two states for its sigreturn-based restore:
thread_info holds the checkpointed registers and tmstate the running ones,
so the running ones are read from tmstate here, as NT_PRSTATUS has them,
and the checkpointed ones go to the NT_PPC_TM_C* notes.  The PPR, DSCR,
TAR, EBB, PMU and PKEY notes of the kernel's core are not described by the
images and are left out.
"""
import ctypes
import struct

from .. import elf
from .base import Arch, Regs, SyscallABI, SyscallEntry, words

# elf_gregset_t: struct user_pt_regs, padded to ELF_NGREG (48) words
GREGS = tuple("r%d" % i for i in range(32)) + (
    "nip", "msr", "orig_gpr3", "ctr", "link", "xer", "ccr", "softe", "trap",
    "dar", "dsisr", "result") + tuple("pad%d" % i for i in range(44, 48))
_CRIU_GP = ("nip", "msr", "orig_gpr3", "ctr", "link", "xer", "ccr", "trap")
NFPREG = 33          # fpr0-31, fpscr
NVRWORDS = 66        # vr0-31 and vscr, two 64-bit words each
NVSX = 32            # vs0-vs31 low doublewords

NT_PPC_TM_CGPR, NT_PPC_TM_CFPR, NT_PPC_TM_CVMX, NT_PPC_TM_CVSX, NT_PPC_TM_SPR = \
    0x108, 0x109, 0x10A, 0x10B, 0x10C


def _gp(g):
    gp = dict(zip(GREGS[:32], words(g.gpr, 32)))
    gp.update({n: getattr(g, n) for n in _CRIU_GP})
    gp["softe"] = 1
    return gp


def _sets(holder):
    """The FP, VMX and VSX sets of a thread_info or tmstate (None when the
    images do not hold that set)."""
    fp = words(holder.fpstate.fpregs, NFPREG) if holder.HasField("fpstate") else None
    vr = None
    if holder.HasField("vrstate"):
        vr = (words(holder.vrstate.vrregs, NVRWORDS), holder.vrstate.vrsave)
    vsx = words(holder.vsxstate.vsxregs, NVSX) if holder.HasField("vsxstate") else None
    return {"fp": fp, "vr": vr, "vsx": vsx}


def decode(ti, reparse=None):
    """thread_info_ppc64; with tmstate, the running state is tmstate's."""
    g = ti.gpregs
    if ti.HasField("tmstate"):
        tm = ti.tmstate
        return Regs(gp=_gp(tm.gpregs), extra=dict(
            _sets(tm), tm={"gp": _gp(g), **_sets(ti)},
            tm_spr=(g.tfhar, g.texasr, g.tfiar)))
    return Regs(gp=_gp(g), extra=dict(_sets(ti), tm=None, tm_spr=None))


def fpr(sets):
    return struct.pack("<%dQ" % NFPREG, *sets["fp"]) if sets["fp"] is not None else None


def vmx(sets):
    """NT_PPC_VMX: vr0-31 and vscr as CRIU copied them, then vrsave in the
    first word of the last 16-byte slot (vr_get())."""
    if sets["vr"] is None:
        return None
    regs, vrsave = sets["vr"]
    return struct.pack("<%dQ" % NVRWORDS, *regs) + struct.pack("<I", vrsave) + bytes(12)


def vsx(sets):
    return struct.pack("<%dQ" % NVSX, *sets["vsx"]) if sets["vsx"] is not None else None


def _regs_sets(th):
    r = th.regs
    return {"fp": r.fp, "vr": r.vr, "vsx": r.vsx}


def _tm(encode):
    def note(proc, th):
        tm = th.regs.tm
        return encode(tm) if tm is not None else None
    return note


def _cgpr(tm):
    return struct.pack("<%dQ" % len(GREGS), *[tm["gp"].get(n, 0) for n in GREGS])


ARCH = Arch(
    name="ppc64", elf=elf.ELF64, machine=elf.EM_PPC64, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32,
    # CRIU's pagemaps count the kernel's pages: 4 KiB here; a 64 KiB-page
    # kernel's images are refused by the loader (AT_PAGESZ)
    page_size=4096,
    user_va_end=1 << 52, gdb_name="powerpc:common64",
    mtype=4, ti_field="ti_ppc64",
    gregs=GREGS, decode=decode,
    eflags=2,   # EF_PPC64_ABI v2
    thread_notes=((elf.NT_PRFPREG, lambda proc, th: fpr(_regs_sets(th))),
                  (elf.NT_PPC_VMX, lambda proc, th: vmx(_regs_sets(th))),
                  (elf.NT_PPC_VSX, lambda proc, th: vsx(_regs_sets(th))),
                  (NT_PPC_TM_CGPR, _tm(_cgpr)),
                  (NT_PPC_TM_CFPR, _tm(fpr)),
                  (NT_PPC_TM_CVMX, _tm(vmx)),
                  (NT_PPC_TM_CVSX, _tm(vsx)),
                  (NT_PPC_TM_SPR, lambda proc, th: None if th.regs.tm_spr is None
                   else struct.pack("<3Q", *th.regs.tm_spr))),
    native_hosts=("ppc64le",),
    # arch/powerpc/kernel/signal.c do_signal(): check_syscall_restart()
    # runs after get_signal(), so a ptrace stop shows nip after the `sc`
    # (or `scv 0`) and r3 = the -ERESTART* code: positive with CR0.SO set
    # after `sc`, negative after `scv`; compel rewinds (r3 = orig_gpr3,
    # nip -= 4; r3 = EINTR for -ERESTART_RESTARTBLOCK) and zeroes trap
    syscall=SyscallABI(64, "nip", "r3", tuple(
        SyscallEntry(struct.pack("<I", insn), "ppc64", "r0",
                     ("r3", "r4", "r5", "r6", "r7", "r8"), negative=negative, trap=trap)
        for insn, negative, trap in ((0x44000002, False, 0xC00),    # sc
                                     (0x44000001, True, 0x3000))),  # scv 0
        kernel_rewinds_first=False, orig="orig_gpr3", style="cr0_so",
        roles=(("ccr", "ccr"), ("trap", "trap")), consts=(("so", 0x10000000),)),
)
