"""Making the kernel write cores of test programs.

Round-trip tests need a core the Linux kernel itself wrote for a live
process: they allow cores in the child (RLIMIT_CORE), wait until its threads
sit in known system calls (so their registers are settled), kill it with a
signal and pick up the core from the working directory, where the
core_pattern `core` (this machine's and CI's) puts it.

The pattern is global to the kernel, not to a chroot: a pattern with a path
(`/var/crash/core.%p`) would be resolved inside the crashing process's root,
and a pipe (`|/usr/lib/systemd/systemd-coredump ...`) hands the core to a
helper outside it.  A plain `core` works the same natively and in a chroot
(scripts/distro.sh): the kernel writes it in the process's working
directory, as the process sees it.
"""
import contextlib
import os
import resource
import time

CORE_PATTERN = "/proc/sys/kernel/core_pattern"


def allow_core():
    """preexec_fn for subprocess: let the child dump a core of any size."""
    resource.setrlimit(resource.RLIMIT_CORE,
                       (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


@contextlib.contextmanager
def plain_core_pattern():
    """Make the kernel write 'core' into the crashing process's cwd (root
    only when the pattern must change), restoring the old pattern after."""
    with open(CORE_PATTERN) as f:
        old = f.read().strip()
    if old != "core":
        try:
            with open(CORE_PATTERN, "w") as f:
                f.write("core")
        except OSError as exc:
            import pytest
            pytest.fail("kernel.core_pattern is %r and cannot be set to 'core' (%s): "
                        "the kernel-crash tests need root and a writable /proc/sys"
                        % (old, exc))
    try:
        yield
    finally:
        if old != "core":
            with open(CORE_PATTERN, "w") as f:
                f.write(old)


def syscalls(pid):
    """The system call number (as text) each thread of pid is in."""
    calls = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
                calls.append(f.read().split()[0])
        except FileNotFoundError:
            pass
    return calls


def wait_until(pid, settled, timeout=20, what="threads to settle"):
    """Poll syscalls(pid) until settled(calls) is true."""
    deadline = time.time() + timeout
    calls = []
    while time.time() < deadline:
        calls = syscalls(pid)
        if settled(calls):
            return calls
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s: %r" % (what, calls))


def find_core(work, pid):
    """The core the kernel wrote in work (a pathlib.Path) for pid."""
    for _ in range(100):
        for name in ("core", "core.%d" % pid):
            if (work / name).exists():
                time.sleep(0.1)   # the kernel has finished once the waiter returned
                return work / name
        time.sleep(0.1)
    with open(CORE_PATTERN) as f:
        pattern = f.read()
    raise AssertionError("the kernel wrote no core in %s (core_pattern %r)"
                         % (work, pattern))


def crash_when_ready(exe, work, settled, on_ready=None, timeout=60):
    """Run exe in work (a pathlib.Path) until it prints its 'ready ...' line
    and its threads are settled(syscalls), let on_ready(pid, line) look at
    the live process, then kill it with SIGSEGV.  Returns (core path, pid)."""
    import signal
    import subprocess
    proc = subprocess.Popen([str(exe)], cwd=str(work), stdout=subprocess.PIPE,
                            preexec_fn=allow_core)
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("ready"), line
        wait_until(proc.pid, settled)
        if on_ready is not None:
            on_ready(proc.pid, line)
    finally:
        proc.send_signal(signal.SIGSEGV)
        proc.wait(timeout=timeout)
    assert proc.returncode == -signal.SIGSEGV, proc.returncode
    return find_core(work, proc.pid), proc.pid
