"""aarch64: prstatus with user_pt_regs, FPSIMD and TLS registers.

Layouts (Linux): arch/arm64/include/uapi/asm/ptrace.h (struct user_pt_regs:
x0-x30, sp, pc, pstate; struct user_fpsimd_state: 32 128-bit V registers,
fpsr, fpcr, two reserved words); arch/arm64/kernel/ptrace.c (the regsets a
core gets, in this order: NT_PRFPREG named "CORE", then NT_ARM_TLS named
"LINUX", two 64-bit words tpidr_el0 and tpidr2_el0 since Linux 6.4).
`long` is 64 bits and __kernel_uid_t 32 bits (asm-generic/posix_types.h).

CRIU's images (images/core-aarch64.proto) carry the general registers,
FPSIMD, tpidr_el0 and, since CRIU 3.19 on CPUs with pointer authentication,
the PAC keys.  With address keys the kernel's core has (in regset order,
named "LINUX") NT_ARM_PAC_MASK, NT_ARM_PAC_ENABLED_KEYS and NT_ARM_PACA_KEYS,
with the generic key NT_ARM_PACG_KEYS; gdb needs the mask to strip signed
return addresses.  The mask is GENMASK(54, vabits_actual)
(arch/arm64/include/asm/compiler.h); vabits_actual is not in the images, so
it is taken as the width of the highest mapped address (the stack sits just
below TASK_SIZE): 48 or 39 on the usual kernels, and 48 too on a 52-bit
kernel, whose processes map below 2^48 unless they ask otherwise.  The
hardware-debug, system-call, SVE and SME notes of the kernel's core are
not described by the images and are left out.
"""
from __future__ import annotations

import ctypes
import struct

from .. import elf, protodecl
from .base import Arch, Regs, SyscallABI, SyscallEntry, words
from ..record import Record

# elf_gregset_t: struct user_pt_regs (arch/arm64/include/uapi/asm/ptrace.h)
GREGS = tuple("x%d" % i for i in range(31)) + ("sp", "pc", "pstate")
NVREGS = 32         # V registers, 128 bits each
TLS_WORDS = 2       # tpidr_el0, tpidr2_el0 (0 without SME)


class PacKeys(Record):
    """Pointer-authentication state CRIU saved (images/core-aarch64.proto
    pac_keys): 128-bit keys as (lo, hi) word pairs."""
    def __init__(self, address: tuple | None = None,
                 enabled: int = 0,
                 generic: tuple | None = None):
        self.address = address            # apia, apib, apda, apdb: 8 words
        self.enabled = enabled            # PR_PAC_AP*KEY bits of enabled keys
        self.generic = generic            # apga: 2 words


PAC_ADDRESS = ("apiakey_lo", "apiakey_hi", "apibkey_lo", "apibkey_hi",
               "apdakey_lo", "apdakey_hi", "apdbkey_lo", "apdbkey_hi")

# thread_info_aarch64 reduced to its field 5 (pac_keys, CRIU 3.19+), which
# pycriu 3.17 does not know; the other fields stay unknown to it.
PacThreadInfo = protodecl.declare("criu_coredump_pac.proto", [
    ("pac_address_keys", [(n, i, "uint64") for i, n in
                          enumerate(PAC_ADDRESS + ("pac_enabled_key",), 1)]),
    ("pac_generic_keys", [("apgakey_lo", 1, "uint64"), ("apgakey_hi", 2, "uint64")]),
    ("pac_keys", [("pac_address_keys", 6, "pac_address_keys"),
                  ("pac_generic_keys", 7, "pac_generic_keys")]),
    ("thread_info_aarch64_pac", [("pac_keys", 5, "pac_keys")]),
], "thread_info_aarch64_pac")


def decode_pac(ti, reparse):
    """The PAC keys of a thread_info, or None (no PAC hardware, or a CRIU
    older than 3.19)."""
    msg = reparse(PacThreadInfo, ti)
    if not msg.HasField("pac_keys"):
        return None
    keys, pac = msg.pac_keys, PacKeys()
    if keys.HasField("pac_address_keys"):
        a = keys.pac_address_keys
        pac.address = tuple(getattr(a, n) for n in PAC_ADDRESS)
        pac.enabled = a.pac_enabled_key
    if keys.HasField("pac_generic_keys"):
        g = keys.pac_generic_keys
        pac.generic = (g.apgakey_lo, g.apgakey_hi)
    return pac


def decode(ti, reparse):
    """thread_info_aarch64: x0-x30 (gpregs.regs), sp, pc, pstate; FPSIMD;
    tpidr_el0; the PAC keys."""
    g = ti.gpregs
    gp = dict(zip(GREGS, words(g.regs, 31) + [g.sp, g.pc, g.pstate]))
    return Regs(gp=gp, extra={
        "vregs": words(ti.fpsimd.vregs, 2 * NVREGS), "fpsr": ti.fpsimd.fpsr,
        "fpcr": ti.fpsimd.fpcr, "tls": ti.tls, "pac": decode_pac(ti, reparse)})


def fpsimd(proc, th):
    """struct user_fpsimd_state (528 bytes): CRIU keeps each V register as
    two 64-bit words, low half first, which is its memory order."""
    r = th.regs
    return (struct.pack("<%dQ" % (2 * NVREGS), *r.vregs)
            + struct.pack("<IIII", r.fpsr, r.fpcr, 0, 0))


def tls(proc, th):
    return struct.pack("<%dQ" % TLS_WORDS, th.regs.tls, *[0] * (TLS_WORDS - 1))


def va_bits(proc):
    """Width of the user address space, from the highest mapped address."""
    top = max((v.end for v in proc.mm.vmas), default=1 << 48) if proc.mm else 1 << 48
    return (top - 1).bit_length()


def pac_mask(proc):
    """ptrauth_user_pac_mask(): bits 54 down to vabits_actual."""
    low = va_bits(proc)
    return ((1 << 55) - 1) & ~((1 << low) - 1)


def pac_mask_note(proc, th):
    pac = th.regs.pac
    if pac is None or pac.address is None:
        return None
    mask = pac_mask(proc)
    return struct.pack("<QQ", mask, mask)


def pac_enabled_note(proc, th):
    pac = th.regs.pac
    if pac is None or pac.address is None:
        return None
    return struct.pack("<Q", pac.enabled)


def paca_keys_note(proc, th):
    pac = th.regs.pac
    if pac is None or pac.address is None:
        return None
    return struct.pack("<8Q", *pac.address)


def pacg_keys_note(proc, th):
    pac = th.regs.pac
    if pac is None or pac.generic is None:
        return None
    return struct.pack("<2Q", *pac.generic)


ARCH = Arch(
    name="aarch64", elf=elf.ELF64, machine=elf.EM_AARCH64, endian="little",
    long_t=ctypes.c_uint64, uid_t=ctypes.c_uint32, page_size=4096,
    user_va_end=1 << 52, gdb_name="aarch64",
    mtype=3, ti_field="ti_aarch64",
    gregs=GREGS, decode=decode,
    # arch/arm64/kernel/ptrace.c aarch64_regsets, in order (those the
    # images describe)
    thread_notes=((elf.NT_PRFPREG, fpsimd),
                  (elf.NT_ARM_TLS, tls),
                  (elf.NT_ARM_PAC_MASK, pac_mask_note),
                  (elf.NT_ARM_PAC_ENABLED_KEYS, pac_enabled_note),
                  (elf.NT_ARM_PACA_KEYS, paca_keys_note),
                  (elf.NT_ARM_PACG_KEYS, pacg_keys_note)),
    native_hosts=("aarch64", "arm64"),
    syscall=SyscallABI(64, "pc", "x0", (
        SyscallEntry(struct.pack("<I", 0xD4000001), "generic", "x8",
                     ("x0", "x1", "x2", "x3", "x4", "x5")),),
        kernel_rewinds_first=True),
)
