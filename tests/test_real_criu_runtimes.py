"""Programs of other runtimes checkpointed by the real CRIU, read by their
own debuggers: a Go program by Delve, a Java program by the JDK's jhsdb.

Each program parks its goroutines or threads in the runtime's usual waits
(a timer, a channel or a monitor, a mutex, a read of a pipe), is
checkpointed with `criu dump --leave-running`, and gcore takes the
reference core of the same moment right after (tests/helpers/realcriu.py).
The debugger must then say the same on our core as on gcore's:

* Delve: every goroutine's stack with its arguments and locals (`goroutines
  -exec stack -full`), every thread with its pc, two globals and every
  thread's registers; byte for byte, but for the scratch registers of the
  threads asleep with a timeout, or seen to move between the dump and
  gcore (TIMED_KEPT says why).
* jhsdb: `jstack` (each Java thread's frames, its state and the monitors
  it holds or waits for) and `jmap --heap` (the heap's configuration and
  use, read from the JVM's own structures), byte for byte but for the line
  naming the core; `jstack --mixed` (the Java and native frames of every
  thread; glibc 2.42's cancellable system calls end its native unwinding
  after two frames), the same blocks, taken in any order: jhsdb lists
  threads in the order of the core's notes, which is gcore's own (newest
  first with gdb 16 and later), ours CRIU's (ascending TIDs).

Collected and required where tests/test_real_criu.py is (conftest.py's
real_criu_status()); scripts/setup.sh installs Go, Delve and the JDK there.
"""
import os
import re
import subprocess

import pytest

from .helpers.paths import PROGS
from .helpers.kernelcore import task_syscall, wait_asleep
from .helpers.realcriu import Live, checkpoint_and_gcore, convert_one, differences
from .helpers.tools import need

pytestmark = pytest.mark.distro

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_program(argv, work, env=None):
    """Start argv, wait for its "ready PID" and for all its threads to
    sleep, checkpoint it and take gcore: (pid, images, gcore's core,
    {tid: the system call it sleeps in, as task_syscall gives it}, the
    threads whose system call, arguments, stack or pc were not the same
    once gcore was taken)."""
    live = Live(argv, work, env=env)
    try:
        words = live.wait_output(timeout=60).split()
        assert words[:2] == ["ready", str(live.proc.pid)], words
        pid = live.proc.pid
        syscalls = {tid: task_syscall(pid, tid) for tid in wait_asleep(pid, settle=0.5)}
        images, ref = checkpoint_and_gcore(pid, work)
        moved = {tid for tid, call in syscalls.items() if task_syscall(pid, tid) != call}
    finally:
        live.kill()
    return pid, images, ref, syscalls, moved


# -- Go, Delve ------------------------------------------------------------------

# Delve's questions: every goroutine's stack with its arguments and locals,
# every thread's pc, the globals; then each thread's registers (THREAD_REGS)
DELVE = ["goroutines -exec stack -full", "threads",
         "print main.globalCounter", "print main.message"]
THREAD_REGS = ["thread %d", "regs"]
PROMPT = "(dlv) "


def delve(exe, core, work, tids):
    """{command: Delve's answer} on a core, colours taken out; the
    registers of thread T are answered to "regs T"."""
    commands = DELVE + [c % t if "%" in c else c for t in tids for c in THREAD_REGS]
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(work, "dlv-config"))
    p = subprocess.run([need("dlv"), "core", "--allow-non-terminal-interactive=true",
                        exe, core], input="\n".join(commands + ["exit"]) + "\n",
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       errors="replace", env=env, timeout=300)
    assert p.returncode == 0, p.stdout
    # each answer follows its command's prompt; the first part is the banner
    answers = ANSI.sub("", p.stdout).split(PROMPT)[1:]
    assert len(answers) == len(commands) + 1, p.stdout
    named, thread = {}, None
    for command, answer in zip(commands, answers):
        if command.startswith("thread "):
            thread = int(command.split()[1])
            assert "%d" % thread in answer, answer  # "Switched from A to T"
            continue
        named["regs %d" % thread if command == "regs" else command] = answer.splitlines()
    return named


# A thread asleep with a timeout (Go's netpoller in epoll_pwait until the
# next timer, sysmon in a timed futex wait or nanosleep) is not where CRIU
# found it once gcore looks: the dump interrupts the call, and the runtime
# (or the kernel's restart_syscall) calls again with the time left, its
# registers as that path leaves them; so is any thread seen in another
# call, or the same with other arguments, after gcore than before the
# dump.  Its pc and stack are the same; of its registers, TIMED_KEPT are
# compared.  (tests/test_real_criu.py's restart_calls test holds such
# threads to a gcore taken before the dump.)
TIMED_KEPT = ("Rip", "Rsp", "Rbp", "Cs", "Ss", "Fs_base", "Gs_base")
FUTEX, NANOSLEEP, CLOCK_NANOSLEEP, EPOLL_WAIT, EPOLL_PWAIT = 202, 35, 230, 232, 281


def timed(call):
    """Whether a thread in system call `call` (task_syscall's) sleeps with
    a timeout."""
    nr, args = call[0], call[1:7]
    return (nr in (NANOSLEEP, CLOCK_NANOSLEEP)
            or (nr == FUTEX and args[3] != 0)
            or (nr in (EPOLL_WAIT, EPOLL_PWAIT) and args[3] & 0xffffffff != 0xffffffff))


def timed_sleepers_set_aside(answers, syscalls, moved):
    """The registers of the threads asleep with a timeout, or moved, but
    TIMED_KEPT."""
    for tid, call in syscalls.items():
        if timed(call) or tid in moved:
            answers["regs %d" % tid] = [
                l for l in answers["regs %d" % tid]
                if l.split(" = ")[0].strip() in TIMED_KEPT]
    return answers


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
    pid, images, ref, syscalls, moved = run_program([exe], work)
    want = timed_sleepers_set_aside(delve(exe, ref, work, sorted(syscalls)), syscalls, moved)
    got = timed_sleepers_set_aside(delve(exe, convert_one(images, pid, work), work,
                                         sorted(syscalls)), syscalls, moved)
    text = "\n".join(l for lines in want.values() for l in lines)
    # the answers say something: the parked goroutines, main's values, the
    # registers of every thread
    for what in ("main.sleeper", "[chan receive]", "main.locker", "[select]",
                 "main.reader", "[IO wait]", "main.waiter", "in main.main",
                 "ns = 3600000000000", '"hello from a goroutine"'):
        assert what in text, (what, text)
    assert want["print main.globalCounter"] == ["42"], want
    assert sum(bool(re.search(r"\bThread \d+ at 0x", l))
               for l in want["threads"]) == len(syscalls) >= 2, want["threads"]
    assert all(any(l.strip().startswith("Rip = 0x") for l in want["regs %d" % t])
               for t in syscalls), want
    # some threads keep all their registers in the comparison (Go's idle
    # threads wait in futex with no timeout)
    assert any(not timed(call) and tid not in moved for tid, call in syscalls.items()), (
        syscalls, moved)
    for command in want:
        assert want[command] == got[command], "%s:\n%s" % (
            command, differences(want[command], got[command]))


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
    pid, images, ref, _, _ = run_program([java, "-XX:-UsePerfData", "-cp", work, "Parked"], work)
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
