"""NT_SIGINFO holds the target's own siginfo_t: SIGSTOP's number, si_code's
place and the size are each arch's, as its C library declares them.

gdb and elfutils decode NT_SIGINFO with the generic layout on every arch
(si_errno before si_code), so on mips, whose siginfo_t puts si_code second,
they are no judge.  The judge here is a program built for the target with
its cross compiler and run under qemu-user (natively for x86_64 and ia32):
it prints SIGSTOP, offsetof(siginfo_t, si_code), offsetof(..., si_errno)
and sizeof(siginfo_t), and our note, read at those offsets, must say
SIGSTOP, SI_KERNEL (a task frozen while it ran) and errno 0.
"""
import subprocess

import pytest

from criu_coredump import notes
from criu_coredump.arch import by_name

from .helpers.tools import need
from .helpers.crossarch import TARGETS

pytestmark = pytest.mark.cross

SI_KERNEL = 128
PROG = r"""
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
int main(void)
{
    printf("%d %zu %zu %zu\n", SIGSTOP, offsetof(siginfo_t, si_code),
           offsetof(siginfo_t, si_errno), sizeof(siginfo_t));
    return 0;
}
"""
# test_cross_arch's targets, and x86_64 natively: (compiler, runner, arch)
CASES = {name: (t.cc, t.runner, arch) for name, arch in
         [("aarch64", "aarch64"), ("armv7", "arm"), ("ia32", "ia32"),
          ("ppc64le", "ppc64"), ("s390x", "s390"), ("mips64el", "mips"),
          ("riscv64", "riscv64")]
         for t in [TARGETS[name]]}
CASES["x86_64"] = ("gcc", (), "x86_64")


@pytest.mark.parametrize("name", sorted(CASES))
def test_siginfo_note_is_the_targets_siginfo_t(name, tmp_path):
    cc, runner, arch_name = CASES[name]
    need(cc)
    if runner:
        need(runner[0])
    src, exe = tmp_path / "siginfo.c", str(tmp_path / "siginfo")
    src.write_text(PROG)
    subprocess.run([cc, "-static", "-o", exe, str(src)], check=True, timeout=120)
    out = subprocess.run(list(runner) + [exe], stdout=subprocess.PIPE, check=True,
                         text=True, timeout=60).stdout
    sigstop, code_at, errno_at, size = map(int, out.split())
    arch = by_name(arch_name)
    assert arch.sigstop == sigstop
    desc = notes.siginfo_bytes(arch, arch.sigstop, SI_KERNEL)
    assert len(desc) == size == arch.siginfo_size

    def field(off):
        return int.from_bytes(desc[off:off + 4], arch.endian, signed=True)
    assert (field(0), field(code_at), field(errno_at)) == (sigstop, SI_KERNEL, 0)
    assert desc[12:] == bytes(size - 12)
