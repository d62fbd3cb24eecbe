"""End to end with the real CRIU: a live process is checkpointed with
`criu dump --leave-running`, gcore takes the reference core of the same
moment right after, the images are converted with coredump, and gdb must
answer the same on both cores, exactly (shared/tools/gdbcheck.py's
normalisation: only gdb's notices, the signal banner and source lines are
set aside; every address and register must be equal).

CRIU must be 4.0 or later (Debian 12's criu 3.17 cannot checkpoint on
today's kernels): these tests are collected where `criu --version` says so
and `criu check` passes, and where CCD_REAL_CRIU=1 asks for them (.ci/run
does inside the Debian 13 and sid roots); there a CRIU that cannot run is a
failure, never a skip.  See conftest.py's real_criu_status().

The programs: the fixtures' threads.c (four threads parked in pause()
under recursive frames), built for x86_64 and for ia32 (a 32-bit task);
the same, stopped by SIGSTOP; restart_calls.c (threads blocked in 18
kinds of system call), for x86_64 and ia32; hugetlb_maps.c (hugetlb
memory: private, shared, memfd); odd_names.c (a comm and mapped files'
names that are not UTF-8); the fixtures' tree.c (a parent, a sleeping
child and a zombie: the whole tree in one dump); a multi-threaded python3 (threads asleep
in time.sleep and in a lock), whose Python stacks and locals py-spy reads
from our core too.
"""
import ctypes
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .helpers.paths import FIXTURES, GDBCHECK, PROGS
from .helpers.debuggers import XSTATE_WARNING
from .helpers.tools import convert, gdb, need
from .helpers.kernelcore import wait_asleep, wait_until
from .helpers.corefile import read_core, nt_file
from .helpers import core2images
from .helpers.realcriu import (Live, checkpoint, checkpoint_and_gcore, convert_one,
                               differences, take_gcore)

pytestmark = pytest.mark.distro

SRC = os.path.join(FIXTURES, "src", "threads.c")

# gdb's questions, the same on both cores; threads visited in LWP order (gdb
# numbers them in the order of the core's notes, which is gcore's own).
# $_siginfo is asked of the current thread, the first of the notes (the
# leader in both cores): gcore writes the ptrace stop for it (SIGSTOP,
# SI_KERNEL), and so do we for a task frozen while it ran.
PER_THREAD = ["bt", "info registers", "p/x $mxcsr"]
PROCESS = ["p $_siginfo.si_signo", "p $_siginfo.si_code",
           "info sharedlibrary", "info auxv", "info proc mappings"]
PROGRAM_VALUES = {"threads": ["p global_counter", "p heap_msg", "p fvals"],
                  "python3": [], "restart_calls": ["p futex_word", "p/x pi_word"],
                  "hugetlb": ["x/s private_huge", "x/s shared_huge + 0x1ff000",
                              "x/s memfd_huge"],
                  "odd_names": ["x/s kept_map", "x/s deleted_map"],
                  "tree": ["p role_marker"]}


def _gdbcheck():
    spec = importlib.util.spec_from_file_location("gdbcheck", GDBCHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def gdb_script(path, values, process=PROCESS):
    lines = ["set pagination off", "set confirm off", "set width 0",
             "set debuginfod enabled off"] + values + process
    lines += ["python",
              "for t in sorted(gdb.selected_inferior().threads(), key=lambda t: t.ptid[1]):",
              "    t.switch()",
              "    print('== LWP %d' % t.ptid[1])"]
    lines += ["    gdb.execute(%r)" % c for c in PER_THREAD]
    lines += ["end"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def gdb_answers(exe, core, script):
    return gdb(core, exe=exe, early=["set debuginfod enabled off"], script=script)


def compare(name, exe, pid, images, ref, work, pc="rip", threads=4, stopped=False,
            settle=None):
    ours = convert_one(images, pid, work)
    # a stopped task's gcore has no NT_SIGINFO with gdb 16 and 18 (nor a
    # kernel's core: a stopped task dumps none): its siginfo is not asked
    process = PROCESS[2:] if stopped else PROCESS
    script = gdb_script(os.path.join(work, "gdb.cmds"), PROGRAM_VALUES[name], process)
    check = _gdbcheck()
    # gdb warns about the size of gcore's XSAVE note on a CPU with components
    # CRIU images do not carry (AMX tiles); never about ours
    want_text = XSTATE_WARNING.sub("", gdb_answers(exe, ref, script))
    got_text = gdb_answers(exe, ours, script)
    assert not XSTATE_WARNING.search(got_text), got_text
    want = check.normalise(want_text, "/nonexistent-root")
    got = check.normalise(got_text, "/nonexistent-root")
    if settle is not None:  # what the test knows changed between the two
        want, got = settle(want), settle(got)
    # the answers must say something: threads, frames, registers, libraries
    assert sum(l.startswith("== LWP ") for l in want) >= threads, want_text
    assert any(l.startswith("#2 ") for l in want), want_text
    assert any(l.startswith(pc + " ") for l in want), want_text
    values = [l.split(" = ", 1)[1] for l in want if l.startswith("$")]
    n = sum(not v.startswith("x/") for v in PROGRAM_VALUES[name])  # then $_siginfo's two
    if not stopped:
        assert values[n:n + 2] == ["%d" % signal.SIGSTOP, "128"], want_text
    assert want == got, "gdb on our core differs from gdb on gcore's:\n" + differences(want, got)
    return got


def compile_program(source, work, cc="gcc", name="prog"):
    """Compile `source` as the tests run it (-g -O0 -pthread) into work/name."""
    need(cc)
    exe = os.path.join(work, name)
    subprocess.run([cc, "-g", "-O0", "-pthread", "-o", exe, source], check=True)
    return exe


# How each build of threads.c is made and seen: the compiler, the number of
# pause() that its threads sleep in, and the name gdb gives the instruction
# pointer.  ia32 is a 32-bit task on this x86_64 kernel (CRIU keeps it under
# the x86_64 mtype with COMPAT registers), built with the i686 cross compiler
# and run on Debian's 32-bit libc (libc6-i386, which scripts/setup.sh
# installs: gcc-multilib conflicts with the arm cross compilers).
BUILDS = {"x86_64": ("gcc", "34", "rip"),
          "ia32": ("i686-linux-gnu-gcc", "29", "eip")}


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_threads_program_checkpointed_by_criu(tmp_path, build):
    cc, pause_nr, pc = BUILDS[build]
    if build == "ia32" and not os.path.exists("/lib/ld-linux.so.2"):
        pytest.fail("no 32-bit libc (/lib/ld-linux.so.2): run scripts/setup.sh")
    work = str(tmp_path)
    exe = compile_program(SRC, work, cc)
    live = Live([exe, "with", "an", "argument"], work)
    try:
        pid = int(live.wait_output().split()[0])
        assert pid == live.proc.pid
        # four threads, each in pause()
        wait_until(pid, lambda calls: len(calls) == 4 and set(calls) == {pause_nr})
        images, ref = checkpoint_and_gcore(pid, work)
    finally:
        live.kill()
    compare("threads", exe, pid, images, ref, work, pc=pc)


def woken_thread_set_aside(function, keep):
    """settle= of compare(): in the thread whose stack shows `function`,
    only its frames and the registers named in `keep`.  A call that no
    signal restarts (epoll_wait) returns to its caller when gdb or CRIU
    stops the thread, and the caller calls again: the scratch registers
    differ from one observer to the next."""
    def settle(lines):
        blocks = [[]]  # what precedes the threads, then one per thread
        for line in lines:
            if line.startswith("== LWP "):
                blocks.append([])
            blocks[-1].append(line)
        out = []
        for block in blocks:
            if any(" in %s (" % function in l for l in block):
                block = [l for l in block if l.startswith(("== LWP ", "#"))
                         or l.split(" ", 1)[0] in keep]
            out += block
        return out
    return settle


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_restart_calls_checkpointed_by_criu(tmp_path, build):
    """Threads blocked in 18 kinds of system call (tests/progs/
    restart_calls.c): CRIU saves each rewound for restore, the converter
    undoes it, and gdb must show every thread as on a gcore of the same
    moment: the instruction pointer after the `syscall` (ia32: `int $0x80`
    in the vDSO) and ax = the -ERESTART* code.  gcore is taken first, as
    nothing but time moves in a process parked so: select's remaining
    time (a local, not asked) and the epoll_wait thread, which both
    observers wake (woken_thread_set_aside)."""
    cc, _, pc = BUILDS[build]
    work = str(tmp_path)
    exe = compile_program(os.path.join(PROGS, "restart_calls.c"), work, cc, "restart_calls")
    listed = subprocess.run([exe, "--list"], stdout=subprocess.PIPE, text=True,
                            check=True).stdout.split()
    live = Live([exe], work)
    try:
        assert live.wait_output().startswith("ready")
        pid = live.proc.pid
        wait_until(pid, lambda calls: sorted(calls) == sorted(listed))
        ref = take_gcore(pid, work)
        images = checkpoint(pid, work, "--file-locks")
    finally:
        os.killpg(live.proc.pid, signal.SIGKILL)
        live.kill()
    keep = {"rip", "rsp", "rax"} if build == "x86_64" else {"eip", "esp", "eax"}
    got = compare("restart_calls", exe, pid, images, ref, work, pc=pc, threads=19,
                  settle=woken_thread_set_aside("t_epoll_wait", keep))
    # every call's restart code is there: -ERESTARTSYS (512),
    # -ERESTARTNOHAND (514), -ERESTART_RESTARTBLOCK (516)
    codes = {l.split()[-1] for l in got if l.split(" ", 1)[0] in ("rax", "eax")}
    assert {"-512", "-514", "-516"} <= codes, codes


def test_stopped_process_checkpointed_by_criu(tmp_path):
    """A process stopped by SIGSTOP, its threads interrupted in pause():
    the kernel leaves each with ax = -ERESTARTNOHAND until SIGCONT, and so
    must our core.  gcore is taken first: CRIU's dump runs the stopped
    threads, and a gcore after it saw a stopped nanosleep's
    -ERESTART_RESTARTBLOCK become -EINTR (CRIU 4.2.1)."""
    work = str(tmp_path)
    exe = compile_program(SRC, work)
    live = Live([exe], work)
    try:
        pid = int(live.wait_output().split()[0])
        wait_until(pid, lambda calls: len(calls) == 4 and set(calls) == {"34"})
        os.kill(pid, signal.SIGSTOP)
        deadline = time.time() + 20
        while time.time() < deadline and "T (stopped)" not in open(
                "/proc/%d/status" % pid).read():
            time.sleep(0.05)
        ref = take_gcore(pid, work)
        images = checkpoint(pid, work)
    finally:
        live.kill()
    got = compare("threads", exe, pid, images, ref, work, stopped=True)
    assert got.count("rax            0xfffffffffffffdfe  -514") == 4, got


@pytest.fixture
def huge_pages():
    """Four 2 MiB pages reserved for the test's hugetlb memory (a setting of
    the whole machine, restored after)."""
    path = "/proc/sys/vm/nr_hugepages"
    with open(path) as f:
        before = int(f.read())
    if before < 4:
        try:
            with open(path, "w") as f:
                f.write("4")
        except OSError as e:
            pytest.fail("cannot reserve huge pages in %s (%s): run as root" % (path, e))
    yield
    if before < 4:
        with open(path, "w") as f:
            f.write(str(before))


def start_in_pause(source, work):
    """Build `source` as work/prog and start it: (exe, Live, pid),
    once its one thread sleeps in pause()."""
    exe = compile_program(source, work)
    live = Live([exe], work)
    try:
        pid = int(live.wait_output().split()[0])
        wait_until(pid, lambda calls: calls == ["34"], what="pause()")
    except BaseException:
        live.kill()
        raise
    return exe, live, pid


def test_hugetlb_memory_checkpointed_by_criu(tmp_path, huge_pages):
    """Hugetlb memory, private, shared and memfd: in the core as in gcore's,
    what is dumped and NT_FILE's names (the kernel's core lists the private one as
    "/anon_hugepage (deleted)" too, which CRIU keeps as anonymous memory)."""
    work = str(tmp_path)
    exe, live, pid = start_in_pause(os.path.join(PROGS, "hugetlb_maps.c"), work)
    try:
        images, ref = checkpoint_and_gcore(pid, work)
    finally:
        live.kill()
    got = "\n".join(compare("hugetlb", exe, pid, images, ref, work, threads=1))
    # the default coredump_filter (0x33) dumps private hugetlb memory, not
    # shared (bit 6): gcore, the kernel and we leave those two out
    assert '"private hugetlb"' in got, got
    assert got.count("Cannot access memory") == 2, got
    assert "/memfd:hugememfd (deleted)" in got, got
    assert got.count("/anon_hugepage (deleted)") == 2, got


def pr_fname(core):
    """NT_PRPSINFO's pr_fname of an x86_64 core, up to its NUL (the test
    suite's own struct, core2images.prpsinfo_type)."""
    desc = next(d for _, t, d in read_core(core)[1] if t == core2images.NT_PRPSINFO)
    prpsinfo = core2images.prpsinfo_type(ctypes.c_uint64, ctypes.c_uint32)
    return prpsinfo.from_buffer_copy(desc).pr_fname


def test_names_that_are_not_utf8_checkpointed_by_criu(tmp_path):
    """A comm and mapped files' names that are not UTF-8: gdb answers on our
    core as on gcore's (mappings, the files' contents), and the bytes are the
    process's own: pr_fname is /proc/PID/comm's (a kernel core's; gcore
    writes the program's file name there), NT_FILE holds each name as
    /proc/PID/maps does, not '?' nor an escape."""
    work = str(tmp_path)
    exe, live, pid = start_in_pause(os.path.join(PROGS, "odd_names.c"), work)
    try:
        with open("/proc/%d/comm" % pid, "rb") as f:
            comm = f.read().rstrip(b"\n")
        images, ref = checkpoint_and_gcore(pid, work)
    finally:
        live.kill()
    assert comm == b"\xff\xfe-caf\xe9-prog"
    got = "\n".join(compare("odd_names", exe, pid, images, ref, work, threads=1))
    assert '"kept, named in Latin-1"' in got and '"deleted, named in Latin-1"' in got, got
    ours = os.path.join(work, "out", "core.%d" % pid)
    # the kernel's fill_psinfo copies the comm; gdb's gcore writes the
    # program file's name instead ("prog"), so here the comm is the reference
    assert pr_fname(ours) == comm, pr_fname(ref)
    names = nt_file(read_core(ours)[1])[2].split(b"\0")
    kept = os.fsencode(work) + b"/caf\xe9 \xff\xfe.bin"
    assert kept in names, names
    assert os.fsencode(work) + b"/na\xefve (deleted)" in names, names
    assert names == nt_file(read_core(ref)[1])[2].split(b"\0")


def test_process_tree_checkpointed_by_criu(tmp_path):
    """A tree in one dump (the fixtures' tree.c: a parent, a child asleep,
    a child exited and not reaped): a core per living process, each read by
    gdb as gcore's of that process; the zombie skipped with a note, and the
    exit code 0."""
    work = str(tmp_path)
    exe = compile_program(os.path.join(FIXTURES, "src", "tree.c"), work)
    live = Live([exe], work)
    try:
        parent, sleeper, zombie = map(int, live.wait_output().split()[:3])
        for pid in (parent, sleeper):
            wait_until(pid, lambda calls: calls == ["34"], what="pause()")
        images = checkpoint(parent, work)
        refs = {pid: take_gcore(pid, work) for pid in (parent, sleeper)}
    finally:
        os.killpg(parent, signal.SIGKILL)
        live.kill()
    p, cores = convert(images, os.path.join(work, "all"))
    assert sorted(cores) == sorted((parent, sleeper)), (cores, p.stderr)
    assert "%d" % zombie in p.stderr and "zombie" in p.stderr, p.stderr
    for role, pid in enumerate((parent, sleeper), 1):
        each = os.path.join(work, str(pid))
        os.mkdir(each)
        got = compare("tree", exe, pid, images, refs[pid], each, threads=1)
        assert "$1 = %d" % role in got, got


PY = ("import threading, time\n"
      "lock = threading.Lock(); lock.acquire()\n"
      "def sleeper(n):\n"
      "    local_value = n * 7\n"
      "    time.sleep(600)\n"
      "def waiter(): lock.acquire()\n"
      "ts = [threading.Thread(target=sleeper, args=(1,), name='sleeper-1'),\n"
      "      threading.Thread(target=sleeper, args=(2,), name='sleeper-2'),\n"
      "      threading.Thread(target=waiter, name='waiter')]\n"
      "[t.start() for t in ts]\n"
      "print('ready', flush=True)\n"
      "time.sleep(600)\n")


def py_spy(core):
    """py-spy's Python stacks and locals from a core: {thread line:
    [frame and `name: value` lines]} (threads keyed by id and name: py-spy
    lists them in the core's note order, which is gcore's own)."""
    exe = os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.access(exe, os.X_OK):
        pytest.fail("py-spy is not installed: run scripts/setup.sh")
    p = subprocess.run([exe, "dump", "--core", core, "--locals"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, errors="replace", timeout=300)
    assert p.returncode == 0, p.stdout
    threads, cur = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("Thread "):
            cur = threads.setdefault(line, [])
        elif cur is not None and line.strip() not in ("", "Arguments:", "Locals:"):
            cur.append(line.strip())
    return threads


def compare_py_spy(ours, ref):
    """py-spy must find on our core the threads and frames it finds on
    gcore's, and every local it reads there, equal; a value py-spy cannot
    read on gcore's (`?`: memory gcore left out) it must read on ours."""
    got, want = py_spy(ours), py_spy(ref)
    assert sorted(got) == sorted(want), (got, want)
    assert len(got) == 4 and any('"sleeper-1"' in t for t in got), got
    for thread, lines in want.items():
        assert len(got[thread]) == len(lines), (thread, got[thread], lines)
        for mine, theirs in zip(got[thread], lines):
            value = re.match(r"^(\w+): (.*)$", theirs)
            if value is None:  # a frame: function (file:line)
                assert mine == theirs, thread
            else:
                assert mine.split(": ", 1)[0] == value.group(1), (thread, mine, theirs)
                assert value.group(2) in ("?", mine.split(": ", 1)[1]), (thread, mine, theirs)
                assert not mine.endswith(": ?"), (thread, mine)
    values = {l for lines in got.values() for l in lines}
    assert {"n: 1", "local_value: 7", "n: 2", "local_value: 14"} <= values, got


def test_python3_checkpointed_by_criu(tmp_path):
    work = str(tmp_path)
    exe = os.path.realpath(shutil.which("python3") or sys.executable)
    live = Live([exe, "-c", PY], work)
    try:
        assert live.wait_output().startswith("ready")
        pid = live.proc.pid
        # every thread asleep: no thread is running (state S)
        wait_asleep(pid, threads=4)
        images, ref = checkpoint_and_gcore(pid, work)
    finally:
        live.kill()
    compare("python3", exe, pid, images, ref, work)
    compare_py_spy(os.path.join(work, "out", "core.%d" % pid), ref)
