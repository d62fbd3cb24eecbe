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
import struct
import subprocess
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


def task_states(pid):
    """{tid: state letter} of the process's threads now."""
    states = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                states[int(tid)] = f.read().rsplit(") ", 1)[1][0]
        except FileNotFoundError:  # a thread that just exited
            pass
    return states


def task_syscall(pid, tid):
    """/proc/PID/task/TID/syscall: the number of the system call thread
    tid sleeps in, its arguments, stack pointer and pc, as a tuple of
    integers ((-1, sp, pc) when in none; ("running",) when it runs; None
    when the thread is gone)."""
    try:
        with open("/proc/%d/task/%d/syscall" % (pid, tid)) as f:
            fields = f.read().split()
    except FileNotFoundError:
        return None
    if fields == ["running"]:
        return ("running",)
    return tuple(int(x, 0) for x in fields)


def wait_asleep(pid, threads=None, timeout=20, settle=0.2):
    """Wait until every thread of pid sleeps (state S), `threads` of them
    when given, the same threads for `settle` seconds: a runtime's own
    threads (a JVM's, Go's) start and park on their own time."""
    deadline = time.time() + timeout
    calm_since, last = None, None
    while time.time() < deadline:
        states = task_states(pid)
        asleep = (all(s == "S" for s in states.values())
                  and (threads is None or len(states) == threads))
        if asleep and set(states) == last:
            if time.time() - calm_since >= settle:
                return sorted(states)
        else:
            calm_since = time.time()
        last = set(states) if asleep else None
        time.sleep(0.05)
    raise AssertionError("threads never all asleep: %s" % task_states(pid))


def syscalls(pid):
    """The system call number (as text) each thread of pid is in."""
    calls = (task_syscall(pid, int(tid)) for tid in os.listdir("/proc/%d/task" % pid))
    return [str(call[0]) for call in calls if call is not None]


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


# -- the threaded program whose core core2images converts ---------------------

PROG_NAME = "c2iprog"
HEAP_STRING = b"heap string for core2images"

PROG_SRC = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t ready;

/* Park in pause() via the raw syscall so that nothing clobbers ymm8, which
 * holds a per-thread pattern in both halves (checked through NT_X86_XSTATE). */
static void park(unsigned n)
{
	unsigned long long pat[4] = {0x1111111100000000ULL + n, 0x2222222200000000ULL + n,
				     0x3333333300000000ULL + n, 0x4444444400000000ULL + n};
#ifdef WITH_AVX
	__asm__ volatile("vmovdqu %0, %%ymm8" : : "m"(pat) : "xmm8");
#else
	(void)pat;
#endif
	for (;;)
		syscall(SYS_pause);
}

static void *worker(void *arg)
{
	unsigned n = (unsigned)(long)arg;
	if (n == 2) {	/* this thread blocks SIGUSR1/2 and has SIGUSR1 pending */
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGUSR1);
		sigaddset(&s, SIGUSR2);
		pthread_sigmask(SIG_BLOCK, &s, NULL);
		syscall(SYS_tgkill, getpid(), gettid(), SIGUSR1);
	}
	pthread_barrier_wait(&ready);
	park(n);
	return NULL;
}

int main(void)
{
	pthread_t t[3];
	char *heap = strdup("heap string for core2images");
	pthread_barrier_init(&ready, NULL, 4);
	for (long i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, worker, (void *)(i + 1));
	pthread_barrier_wait(&ready);
	printf("ready %p\n", (void *)heap);
	fflush(stdout);
	park(0);
	return 0;
}
"""


def cpu_has(flag):
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return flag in line.split()
    return False


def crash_c2iprog(work):
    """Build, run and crash the test program (threads parked in pause()
    with known vector registers) in directory `work` (a pathlib.Path);
    return the kernel's core and what was seen live."""
    src, exe = work / "prog.c", work / PROG_NAME
    src.write_text(PROG_SRC)
    flags = ["-DWITH_AVX", "-mavx"] if cpu_has("avx") else []
    subprocess.run(["gcc", "-g", "-O0", "-pthread", *flags, "-o", str(exe), str(src)],
                   check=True)

    live = {}

    def look(pid, line):
        live.update(read_live(pid))
        live["heap"] = int(line.split()[1], 16)
        live["avx"] = bool(flags)
    core, pid = crash_when_ready(exe, work, lambda calls: calls == ["34"] * 4,
                                 on_ready=look)
    return {"core": str(core), "exe": str(exe), "pid": pid, "live": live,
            "work": work}


def read_live(pid):
    """/proc facts the core cannot be checked against otherwise."""
    with open("/proc/%d/auxv" % pid, "rb") as f:
        raw = f.read()
    auxv = list(struct.unpack("<%dQ" % (len(raw) // 8), raw))
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()   # fields[0] is field 3 (state)
    field_no = lambda n: int(fields[n - 3])          # noqa: E731
    return {
        "auxv": auxv,
        "tids": sorted(int(t) for t in os.listdir("/proc/%d/task" % pid)),
        "mm": {"mm_start_code": field_no(26), "mm_end_code": field_no(27),
               "mm_start_stack": field_no(28), "mm_start_data": field_no(45),
               "mm_end_data": field_no(46), "mm_arg_start": field_no(48),
               "mm_arg_end": field_no(49), "mm_env_start": field_no(50),
               "mm_env_end": field_no(51)},
    }
