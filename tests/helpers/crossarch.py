"""The architectures the cross tests run under qemu-user, and the tools of
each: its cross compiler, qemu's runner, the gdb that reads its cores, and
what gdb must show (tests/test_cross_arch.py, tests/test_siginfo_layout.py,
tests/test_syscall_restart.py)."""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Target:
    name: str
    cc: str
    runner: Tuple[str, ...]     # () = run natively, the kernel writes the core
    gdb: str
    general: Tuple[str, ...]    # registers gdb must show from NT_PRSTATUS
    # readelf's Flags line of a kernel's core where qemu writes other e_flags
    flags: Optional[str] = None
    # registers named to `info registers`: where gdb prints all of them as a
    # table (mips), it prints named ones as "name: value" lines
    named: bool = False
    # a reference (program and qemu core) is committed in tests/data, for
    # where the compiler or a qemu that writes this arch's core is missing
    committed: bool = False


TARGETS = {
    # a CPU without pointer authentication: on "max" (qemu's default) the
    # auxv says PAC, gdb 16 then needs the PAC mask to unwind and stops at
    # the first frame of both cores, qemu's having no mask note and ours,
    # from images without PAC keys, none either (see the PAC test below)
    "aarch64": Target("aarch64", "aarch64-linux-gnu-gcc",
                      ("qemu-aarch64", "-cpu", "cortex-a72"),
                      "gdb-multiarch",
                      tuple("x%d" % i for i in range(31)) + ("sp", "pc", "cpsr")),
    "armv7": Target("armv7", "arm-linux-gnueabihf-gcc", ("qemu-arm",),
                    "gdb-multiarch",
                    tuple("r%d" % i for i in range(13)) + ("sp", "lr", "pc", "cpsr")),
    "ia32": Target("ia32", "i686-linux-gnu-gcc", (), "gdb",
                   ("eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eip",
                    "eflags", "cs", "ss", "ds", "es", "fs", "gs")),
    # ELF_CORE_EFLAGS is 2 (ELFv2) for a ppc64le task; qemu writes 0
    "ppc64le": Target("ppc64le", "powerpc64le-linux-gnu-gcc", ("qemu-ppc64le",),
                      "gdb-multiarch",
                      tuple("r%d" % i for i in range(32))
                      + ("pc", "msr", "cr", "lr", "ctr", "xer"),
                      flags="Flags: 0x2, abiv2"),
    # big-endian
    "s390x": Target("s390x", "s390x-linux-gnu-gcc", ("qemu-s390x",), "gdb-multiarch",
                    ("pswm", "pswa") + tuple("r%d" % i for i in range(16))
                    + tuple("acr%d" % i for i in range(16)) + ("orig_r2",)),
    "mips64el": Target("mips64el", "mips64el-linux-gnuabi64-gcc", ("qemu-mips64el",),
                       "gdb-multiarch",
                       ("zero", "at", "v0", "v1") + tuple("a%d" % i for i in range(8))
                       + tuple("t%d" % i for i in range(4)) + tuple("s%d" % i for i in range(8))
                       + ("t8", "t9", "k0", "k1", "gp", "sp", "s8", "ra", "sr", "lo", "hi",
                          "bad", "cause", "pc"), named=True),
    "riscv64": Target("riscv64", "riscv64-linux-gnu-gcc", ("qemu-riscv64",),
                      "gdb-multiarch",
                      ("ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1")
                      + tuple("a%d" % i for i in range(8))
                      + tuple("s%d" % i for i in range(2, 12))
                      + ("t3", "t4", "t5", "t6", "pc"), committed=True),
    "loongarch64": Target("loongarch64", "loongarch64-linux-gnu-gcc",
                          ("qemu-loongarch64",), "gdb-multiarch",
                          tuple("r%d" % i for i in range(32)) + ("pc",),
                          committed=True),
}
