"""Ordinary programs, not the fixtures' own: a multi-threaded Python
interpreter and coreutils' sleep.  The kernel writes a core of the live
process; the test helper turns it into CRIU images; gdb must then give the
same backtraces, shared libraries and auxv on our core as on the kernel's
(only the fatal-signal lines differ: a checkpoint has no fatal signal)."""
import glob
import os
import signal
import subprocess

import pytest

from .helpers.tools import gdb, run_coredump
from .helpers.core2images import core_to_images
from .helpers.debuggers import XSTATE_WARNING
from .helpers.kernelcore import allow_core, wait_asleep

pytestmark = pytest.mark.slow

PROGRAMS = {
    "python3": ["/usr/bin/python3", "-c",
                "import threading, time\n"
                "ts = [threading.Thread(target=time.sleep, args=(600,)) for _ in range(3)]\n"
                "[t.start() for t in ts]\n"
                "print('ready', flush=True)\n"
                "time.sleep(600)\n"],
    "sleep": ["/bin/sleep", "600"],
}


def _kernel_core(argv, work):
    p = subprocess.Popen(argv, cwd=str(work), stdout=subprocess.PIPE,
                         preexec_fn=allow_core)
    try:
        if argv[0].endswith("python3"):
            assert p.stdout.readline().startswith(b"ready")
        # let every thread settle in its sleeping system call
        wait_asleep(p.pid)
    finally:
        p.send_signal(signal.SIGSEGV)
        p.wait(timeout=60)
    cores = glob.glob(str(work / "core*"))
    assert len(cores) == 1, os.listdir(str(work))
    return cores[0], p.pid


def _gdb(exe, core):
    out = gdb(core, "set debuginfod enabled off", "info threads",
              "thread apply all bt", "info sharedlibrary", "info auxv", exe=exe)
    # gdb 13 cannot size the kernel's XSAVE note on CPUs whose component
    # offsets are not Intel's (AMD here): it warns, mid-line.  Our note uses
    # the standard layout gdb expects, so the warning must never be ours.
    out, warnings = XSTATE_WARNING.subn("", out)
    drop = ("[New LWP", "warning:", "Program terminated with signal")
    return [l for l in out.splitlines() if l.strip() and not l.startswith(drop)], warnings


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_gdb_reads_our_core_like_the_kernels(name, tmp_path, plain_core_pattern):
    argv = PROGRAMS[name]
    exe = os.path.realpath(argv[0])
    kcore, pid = _kernel_core(argv, tmp_path)
    img, out = tmp_path / "img", tmp_path / "out"
    img.mkdir(), out.mkdir()
    core_to_images(kcore, str(img), exe=exe)
    run_coredump("-i", img, "-o", out, "-q", check=0)
    ours, our_warnings = _gdb(exe, str(out / ("core.%d" % pid)))
    assert our_warnings == 0
    theirs, _ = _gdb(exe, kcore)
    assert ours == theirs
    assert any(l.startswith("#1 ") for l in ours)
    assert any("libc.so.6" in l for l in ours)
