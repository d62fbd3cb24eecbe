"""A live process checkpointed by the real CRIU, and gcore's core of the
same moment beside it: what the real-CRIU tests (tests/test_real_criu*.py)
hold our cores to."""
import os
import subprocess
import time

import pytest

from .tools import need


class Live:
    """A program running in its own session, stdout to a file."""

    def __init__(self, argv, work, env=None):
        self.out = os.path.join(work, "prog.out")
        with open(self.out, "w") as o, open(os.devnull) as i:
            self.proc = subprocess.Popen(argv, stdin=i, stdout=o, stderr=subprocess.STDOUT,
                                         cwd=work, start_new_session=True, close_fds=True,
                                         env=env)

    def wait_output(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.out) as f:
                text = f.read()
            if text.strip():
                return text
            assert self.proc.poll() is None, "program exited: %r" % text
            time.sleep(0.05)
        raise AssertionError("program printed nothing")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


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


def checkpoint(pid, work, *options):
    """criu dump --leave-running: the images directory."""
    images = os.path.join(work, "images")
    os.mkdir(images)
    p = subprocess.run([need("criu"), "dump", "-t", str(pid), "-D", images, "--shell-job",
                        "--leave-running", "-v4", "-o", "dump.log", *options],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300, close_fds=True)
    if p.returncode != 0:
        with open(os.path.join(images, "dump.log")) as f:
            log = f.read()
        pytest.fail("criu dump failed (%d): %s\n...\n%s"
                    % (p.returncode, p.stdout, log[-4000:]))
    return images


def take_gcore(pid, work):
    """gcore of the live process: the reference core."""
    q = subprocess.run([need("gcore"), "-o", os.path.join(work, "gcore"), str(pid)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    ref = os.path.join(work, "gcore.%d" % pid)
    assert q.returncode == 0 and os.path.exists(ref), q.stdout
    return ref


def checkpoint_and_gcore(pid, work):
    """criu dump --leave-running, then gcore at once: (images dir, gcore)."""
    images = checkpoint(pid, work)
    return images, take_gcore(pid, work)
