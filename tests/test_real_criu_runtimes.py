"""Programs of other runtimes checkpointed by the real CRIU, read by their
own debuggers: a Go program by Delve, a Java program by the JDK's jhsdb.

Each program parks its goroutines or threads in the runtime's usual waits
(a timer, a channel or a monitor, a mutex, a read of a pipe), is
checkpointed with `criu dump --leave-running`, and gcore takes the
reference core of the same moment right after (tests/helpers/realcriu.py).
The debugger must then say the same on our core as on gcore's:

* Delve: every goroutine's stack with its arguments and locals (`goroutines
  -exec stack -full`), every thread with its pc, the current thread's
  registers and two globals; byte for byte.
* jhsdb: `jstack` (each Java thread's frames, its state and the monitors
  it holds or waits for) and `jmap --heap` (the heap's configuration and
  use, read from the JVM's own structures), byte for byte but for the line
  naming the core; `jstack --mixed` (the Java and native frames of every
  thread; glibc 2.42's cancellable system calls end its native unwinding
  after two frames), the same blocks, taken in any order: jhsdb lists threads in the
  order of the core's notes, which is gcore's own (newest first with gdb
  16 and later), ours CRIU's (ascending TIDs).

Collected and required where tests/test_real_criu.py is (conftest.py's
real_criu_status()); scripts/setup.sh installs Go, Delve and the JDK there.
"""
import difflib
import os
import re
import subprocess

import pytest

from .helpers.paths import PROGS
from .helpers.realcriu import Live, checkpoint_and_gcore, wait_asleep
from .helpers.tools import need, run_coredump

pytestmark = pytest.mark.distro

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def differences(want, got):
    """What a failure shows: gcore's answers against ours, as a diff."""
    return "\n".join(difflib.unified_diff(want, got, "gcore", "ours", lineterm="", n=1))


def convert_one(images, pid, work):
    out = os.path.join(work, "out")
    os.mkdir(out)
    run_coredump("-i", images, "-o", out, "-q", check=0)
    return os.path.join(out, "core.%d" % pid)


def run_program(argv, work, env=None):
    """Start argv, wait for its "ready PID" and for all its threads to
    sleep, checkpoint it and take gcore: (pid, images, gcore's core)."""
    live = Live(argv, work, env=env)
    try:
        words = live.wait_output(timeout=60).split()
        assert words[:2] == ["ready", str(live.proc.pid)], words
        pid = live.proc.pid
        wait_asleep(pid, settle=0.5)
        images, ref = checkpoint_and_gcore(pid, work)
    finally:
        live.kill()
    return pid, images, ref


# -- Go, Delve ------------------------------------------------------------------

DELVE = ["goroutines -exec stack -full", "threads", "regs",
         "print main.globalCounter", "print main.message", "exit"]


def delve(exe, core, work):
    """Delve's answers to DELVE on a core, colours taken out."""
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "dlv-config"))
    p = subprocess.run([need("dlv"), "core", "--allow-non-terminal-interactive=true",
                        exe, core], input="\n".join(DELVE) + "\n",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       errors="replace", env=env, timeout=300)
    assert p.returncode == 0, p.stdout
    return ANSI.sub("", p.stdout).splitlines()


def netpoll_timeout_set_aside(lines):
    """The one register the two cores may differ in, by the way they are
    taken: Go's netpoller sleeps in epoll_pwait with the time to the next
    timer as its timeout (r10).  CRIU's seizure interrupts that call, and
    the runtime calls again with the time left, so gcore, taken after
    the dump, sees a smaller timeout than the checkpoint holds.  When
    `regs` is of that thread (the current one: the first of the notes,
    which one of Go's threads polls varies), r10 is set aside."""
    current = [l for l in lines if re.search(r"\* Thread \d+ at ", l)]
    if not (current and current[0].endswith(".Syscall6")):
        return lines
    return [re.sub(r"^(\s*R10 = )0x[0-9a-f]+$", r"\1(epoll_pwait's timeout)", l)
            for l in lines]


def test_go_program_checkpointed_by_criu(tmp_path):
    work = str(tmp_path)
    exe = os.path.join(work, "goroutines")
    # -N -l: main's locals stay where its DWARF says; GOTOOLCHAIN=local:
    # the Go of the distribution, never one downloaded
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="", GO111MODULE="off",
               GOCACHE=os.environ.get("GOCACHE") or os.path.join(
                   os.path.expanduser("~"), ".cache", "go-build"))
    subprocess.run([need("go"), "build", "-gcflags=-N -l", "-o", exe,
                    os.path.join(PROGS, "goroutines.go")], check=True, env=env, cwd=work)
    pid, images, ref = run_program([exe], work)
    want = netpoll_timeout_set_aside(delve(exe, ref, work))
    got = netpoll_timeout_set_aside(delve(exe, convert_one(images, pid, work), work))
    text = "\n".join(want)
    # the answers say something: the parked goroutines, main's values
    for what in ("main.sleeper", "[chan receive]", "main.locker", "[select]",
                 "main.reader", "[IO wait]", "main.waiter", "in main.main",
                 "ns = 3600000000000", "42", '"hello from a goroutine"'):
        assert what in text, (what, text)
    assert sum(bool(re.search(r"\bThread \d+ at 0x", l)) for l in want) >= 2, text
    assert want == got, differences(want, got)


# -- Java, jhsdb ----------------------------------------------------------------

# the line naming the core, and how long jhsdb took
JHSDB_NOISE = re.compile(r"^(Attaching to core |Heap traversal took )")


def jhsdb(java, core, *tool):
    jhsdb_exe = os.path.join(os.path.dirname(java), "jhsdb")
    if not os.access(jhsdb_exe, os.X_OK):
        pytest.fail("%s is missing: run scripts/setup.sh (default-jdk-headless)" % jhsdb_exe)
    p = subprocess.run([jhsdb_exe, *tool, "--exe", java, "--core", core],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       errors="replace", timeout=300)
    assert p.returncode == 0, p.stdout
    return [l for l in p.stdout.splitlines() if not JHSDB_NOISE.match(l)]


def thread_blocks(lines):
    """jstack --mixed's blocks, one a thread, in a list sorted by text."""
    blocks, cur = [], None
    for line in lines:
        if line.startswith("----------------- "):
            cur = [line]
            blocks.append(cur)
        elif cur is not None:
            cur.append(line)
    return sorted("\n".join(b) for b in blocks)


def test_java_program_checkpointed_by_criu(tmp_path):
    work = str(tmp_path)
    java = os.path.realpath(need("java"))
    javac = os.path.join(os.path.dirname(java), "javac")
    subprocess.run([javac, "-d", work, os.path.join(PROGS, "Parked.java")], check=True)
    # no hsperfdata file in /tmp: it is the JVM's, not the program's
    pid, images, ref = run_program([java, "-XX:-UsePerfData", "-cp", work, "Parked"], work)
    ours = convert_one(images, pid, work)
    want, got = jhsdb(java, ref, "jstack"), jhsdb(java, ours, "jstack")
    text = "\n".join(want)
    for what in ('"sleeper"', "Parked.sleeper(int, java.util.concurrent.CountDownLatch)",
                 "WAITING (on object monitor)", "- waiting to lock <",
                 "LockSupport.park()", "SourceChannelImpl.read", "TIMED_WAITING (sleeping)"):
        assert what in text, (what, text)
    assert want == got, differences(want, got)
    want, got = jhsdb(java, ref, "jmap", "--heap"), jhsdb(java, ours, "jmap", "--heap")
    assert any(l.strip().startswith("used") for l in want), want
    assert want == got, differences(want, got)
    want = thread_blocks(jhsdb(java, ref, "jstack", "--mixed"))
    got = thread_blocks(jhsdb(java, ours, "jstack", "--mixed"))
    # (glibc 2.42's cancellable system calls stop jhsdb's native unwinding
    # after two frames: the pcs of every thread are what is compared)
    assert len(want) >= 10 and any('"sleeper"' in b for b in want), want
    assert all(re.search(r"^0x[0-9a-f]+\t", b, re.M) for b in want), want
    assert want == got, differences("\n".join(want).splitlines(),
                                    "\n".join(got).splitlines())
