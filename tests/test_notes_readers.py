"""elfutils and gdb read every note of our cores of the fixtures, and what
they decode is what the images hold: registers, vector registers, signal
masks, process state, command line."""
import os
import lzma
import re
import shutil
import signal
import struct
import subprocess

import pytest
from pycriu import images as pyimages

from .helpers.paths import FIRST_PID
from .helpers.tools import need, run_coredump
from .helpers.corefile import NT_PRSTATUS, read_core
from .helpers.debuggers import gdb_on_fixture, per_thread_values
from .helpers.readers import EU_GREGS, eu_readelf_notes, load_image, sigset, to_u64

pytestmark = pytest.mark.slow

CORES = [("threads", 13466), ("stopped_static", 13508), ("tree", 13544),
         ("tree", 13547), ("shmem", 13585)]
# the kernel's order, as in threads/kernel-core-layout.txt
MODERN_PID = 7668
NT_SIGINFO = 0x53494749
# the kernel's order, as in threads/kernel-core-layout.txt
FIRST_THREAD = ["PRSTATUS", "PRPSINFO", "SIGINFO", "AUXV", "FILE", "FPREGSET",
                "X86_XSTATE"]
OTHER_THREAD = ["PRSTATUS", "FPREGSET", "X86_XSTATE"]
# NT_X86_XSAVE_LAYOUT (0x205) is newer than elfutils 0.188 (Debian 12): it
# says "<unknown>: 517" for it on the kernel's own cores too.
XSAVE_LAYOUT_UNKNOWN = "<unknown>: 517"
BAD = re.compile(r"unknown|invalid|corrupt|not enough|cannot|error", re.I)
# The fixtures' threads sleep in pause (34), futex wait (202) or read (0):
# CRIU saved them rewound onto their `syscall` with rax = the number; the
# core holds the kernel's view, after it with the call's -ERESTART* code
# (tests/test_syscall_restart.py proves those codes against the kernel).
RESTART_CODE = {34: 514, 202: 512, 0: 512}


def kernel_view(g):
    """The images' gpregs as the kernel showed them (rewind undone)."""
    g = dict(g)
    if g["orig_ax"] in RESTART_CODE and g["ax"] == g["orig_ax"]:
        g["ip"] += 2
        g["ax"] = -RESTART_CODE[g["orig_ax"]] & (1 << 64) - 1
    return g


def eu_readelf(core):
    need("eu-readelf")
    p = subprocess.run(["eu-readelf", "-n", core], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    assert p.returncode == 0, p.stdout
    return p.stdout


def core_path(cores, name, pid):
    return os.path.join(cores(name), "core.%d" % pid)


def words(values, size):
    """Little-endian integer from a list of `size`-bit words."""
    return sum(v << (size * i) for i, v in enumerate(values))


@pytest.mark.parametrize("name,pid", CORES)
def test_eu_readelf_decodes_every_note(name, pid, cores, fixtures_dir):
    out = eu_readelf(core_path(cores, name, pid))
    types = re.findall(r"^  (?:CORE|LINUX)\s+\d+\s+(\S.*)$", out, re.M)
    nthreads = len(load_image(os.path.join(fixtures_dir(name), "images",
                                           "pstree.img"))[0]["threads"] or [pid])
    first = types[:len(FIRST_THREAD)]
    assert first == FIRST_THREAD
    rest = types[len(FIRST_THREAD):]
    assert rest == OTHER_THREAD * (nthreads - 1) + [XSAVE_LAYOUT_UNKNOWN]
    bad = [line for line in out.splitlines()
           if BAD.search(line) and line.strip() != "LINUX                 32  " +
           XSAVE_LAYOUT_UNKNOWN]
    assert bad == []


@pytest.mark.parametrize("name,pid", CORES)
def test_eu_readelf_shows_the_images_registers(name, pid, cores, fixtures_dir):
    img = os.path.join(fixtures_dir(name), "images")
    threads, psinfo = eu_readelf_notes(core_path(cores, name, pid))
    tree = {e["pid"]: e for e in load_image(os.path.join(img, "pstree.img"))}[pid]
    assert [int(t["regs"]["pid"]) for t in threads] == (tree["threads"] or [pid])
    for t in threads:
        tid = int(t["regs"]["pid"])
        (core,) = load_image(os.path.join(img, "core-%d.img" % tid))
        g = kernel_view(core["thread_info"]["gpregs"])
        for eu_name, criu_name in EU_GREGS.items():
            assert to_u64(t["regs"][eu_name]) == g[criu_name], (tid, eu_name)
        assert to_u64(t["regs"]["orig_rax"]) == g["orig_ax"]
        assert (int(t["regs"]["ppid"]), int(t["regs"]["pgrp"]),
                int(t["regs"]["sid"])) == (tree["ppid"], tree["pgid"], tree["sid"])
        fp = core["thread_info"]["fpregs"]
        assert t["xmm"]["fcw"] == fp["cwd"] and t["xmm"]["fsw"] == fp["swd"]
        assert t["xmm"]["mxcsr"] == fp["mxcsr"] | fp["mxcsr_mask"] << 32
        for i in range(16):
            assert t["xmm"]["xmm%d" % i] == words(fp["xmm_space"][4 * i:4 * i + 4], 32)
        # CRIU keeps the main thread's mask in tc, the others' in thread_core
        blocked = core["tc"]["blk_sigset"] if "tc" in core else \
            core["thread_core"].get("blk_sigset", 0)
        assert sigset(t["regs"]["sighold"]) == blocked
    (main,) = load_image(os.path.join(img, "core-%d.img" % pid))
    tc = main["tc"]
    assert psinfo["fname"] == tc["comm"]
    assert (int(psinfo["pid"]), int(psinfo["ppid"])) == (pid, tree["ppid"])
    assert int(psinfo["uid"]) == main["thread_core"]["creds"]["uid"]
    assert int(psinfo["nice"]) == main["thread_core"]["sched_nice"]
    assert int(psinfo["flag"], 16) == tc["flags"]
    stopped = tc["task_state"] == 3
    assert (psinfo["state"], psinfo["sname"]) == (("3", "T") if stopped else ("0", "R"))
    assert psinfo["zomb"] == "0"


def test_psargs_is_the_command_line_from_memory(cores):
    """80 bytes at most, NULs as spaces: the kernel's fill_psinfo()."""
    out = eu_readelf(core_path(cores, "threads", 13466))
    assert "    psargs: /opt/ccd/threads/prog with a fairly long argument list \n" in out


def test_stopped_task_reports_sigstop_and_its_masks(cores):
    """stopped_static blocked SIGUSR1 and queued one to itself with
    sigqueue(): a signal for the whole process, held in the shared queue.
    The kernel's pr_sigpend is the thread's own queue only
    (fill_prstatus copies p->pending), so, as in a kernel core, it is not
    in the note; the task stopped itself, so SIGSTOP is current."""
    out = eu_readelf(core_path(cores, "stopped_static", 13508))
    assert "info.si_signo: 19, info.si_code: 0, info.si_errno: 0, cursig: 19" in out
    assert "    sigpend: <>\n    sighold: <10>\n" in out
    assert "    si_signo: 19, si_errno: 0, si_code: 0\n" in out


def test_thread_private_pending_signal_is_in_pr_sigpend(fixtures_dir, tmp_path):
    """The same checkpoint with the SIGUSR1 moved to the thread's own
    queue (as pthread_kill() queues it): pr_sigpend now shows it."""
    img = tmp_path / "images"
    shutil.copytree(os.path.join(fixtures_dir("stopped_static"), "images"), img)
    path = img / "core-13508.img"
    with open(path, "rb") as f:
        core = pyimages.load(f)
    entry = core["entries"][0]
    entry["thread_core"]["signals_p"] = entry["tc"].pop("signals_s")
    entry["tc"]["signals_s"] = {}
    with open(path, "wb") as f:
        pyimages.dump(core, f)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run_coredump("-i", img, "-o", out_dir, "-q", "--root",
                 os.path.join(fixtures_dir("stopped_static"), "root"), check=0)
    out = eu_readelf(str(out_dir / "core.13508"))
    assert "    sigpend: <10>\n    sighold: <10>\n" in out


def gdb(fixture, core, *commands):
    need("gdb")
    return gdb_on_fixture(fixture, core, *commands)


@pytest.mark.parametrize("name,pid", [("threads", 13466), ("stopped_static", 13508)])
def test_gdb_prints_the_images_vector_registers(name, pid, cores, fixtures_dir):
    fx = fixtures_dir(name)
    cmds = ["p/x $xmm%d.uint128" % i for i in range(16)]
    cmds += ["p/x $ymm%d.v2_int128" % i for i in range(16)]
    cmds += ["p/x $mxcsr", "p/x $pkru"]
    out = gdb(fx, core_path(cores, name, pid), *["thread apply all " + c for c in cmds])
    got = per_thread_values(out)
    tree = load_image(os.path.join(fx, "images", "pstree.img"))[0]
    assert sorted(got) == sorted(tree["threads"] or [pid])
    for tid, vals in got.items():
        (core,) = load_image(os.path.join(fx, "images", "core-%d.img" % tid))
        fp = core["thread_info"]["fpregs"]
        xs = fp["xsave"]
        xmm = [words(fp["xmm_space"][4 * i:4 * i + 4], 32) for i in range(16)]
        ymmh = [words(xs["ymmh_space"][4 * i:4 * i + 4], 32) for i in range(16)]
        want = ["0x%x" % v for v in xmm]
        want += ["{0x%x, 0x%x}" % (lo, hi) for lo, hi in zip(xmm, ymmh)]
        want += ["0x%x" % fp["mxcsr"], "0x%x" % xs["pkru"][0]]
        assert vals == want, tid
    assert "<unavailable>" not in out


def test_gdb_siginfo_of_a_stopped_and_a_running_task(cores, fixtures_dir, tmp_path):
    """A stopped task: SIGSTOP, sent by no one CRIU knows of (SI_USER).  A
    running one: gdb answers as on gcore's core of the same moment
    (modern_threads' ref.core): no current signal, and the ptrace stop,
    SIGSTOP with si_code SI_KERNEL (128), as its siginfo."""
    cmds = ["p $_siginfo.si_signo", "p $_siginfo.si_code", "p $_siginfo._sifields._kill.si_pid"]
    out = gdb(fixtures_dir("stopped_static"), core_path(cores, "stopped_static", 13508), *cmds)
    assert re.findall(r"^\$\d+ = (.*)$", out, re.M) == [str(int(signal.SIGSTOP)), "0", "0"]
    assert "Program terminated with signal SIGSTOP, Stopped (signal)." in out
    fx = fixtures_dir("modern_threads")
    ours = gdb(fx, core_path(cores, "modern_threads", MODERN_PID), *cmds)
    ref = gdb(fx, ref_core(fx, tmp_path), *cmds)
    values = re.findall(r"^\$\d+ = (.*)$", ours, re.M)
    assert values == [str(int(signal.SIGSTOP)), "128", "0"]
    assert values == re.findall(r"^\$\d+ = (.*)$", ref, re.M)
    assert "Program terminated" not in ours and "Program terminated" not in ref


def ref_core(fx, tmp_path):
    """The fixture's gcore, uncompressed into tmp_path."""
    path = str(tmp_path / "ref.core")
    with lzma.open(os.path.join(fx, "ref.core.xz")) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


def signal_fields(path):
    """[(pr_info + pr_cursig of each NT_PRSTATUS, NT_SIGINFO or None)] of a
    core, per thread: gcore writes an NT_SIGINFO for every thread, the
    kernel (and we) for the first only."""
    _, notes, _ = read_core(path)
    out = []
    for _, t, d in notes:
        if t == NT_PRSTATUS:
            out.append([d[:14], None])
        elif t == NT_SIGINFO:
            out[-1][1] = d
    return out


def test_signal_notes_of_a_running_task_are_gcores(cores, fixtures_dir, tmp_path):
    """Our pr_info, pr_cursig and NT_SIGINFO of a process CRIU froze while
    it ran are, byte for byte, those of gcore's core of the same moment.
    A reader needs that stop reason: lldb 21 never finishes loading a core
    whose NT_SIGINFO is all zeros."""
    fx = fixtures_dir("modern_threads")
    ours = signal_fields(core_path(cores, "modern_threads", MODERN_PID))
    ref = signal_fields(ref_core(fx, tmp_path))
    assert len(ours) == len(ref) > 1
    assert [p for p, _ in ours] == [p for p, _ in ref]
    assert ours[0][1] == ref[0][1]
    assert struct.unpack_from("<iii", ours[0][1]) == (signal.SIGSTOP, 0, 128)
    assert all(s is None for _, s in ours[1:])


def test_nt_file_names_memfd_and_shared_anonymous_memory_as_the_kernel(cores):
    """/proc/PID/maps and the kernel's NT_FILE name a memfd "/memfd:NAME
    (deleted)" and shared anonymous memory "/dev/zero (deleted)"."""
    out = eu_readelf(core_path(cores, "shmem", FIRST_PID["shmem"]))
    names = re.findall(r"^\s+[0-9a-f]+-[0-9a-f]+ [0-9a-f]+ \d+\s+(.*)$", out, re.M)
    assert "/memfd:fixture-memfd (deleted)" in names
    assert "/dev/zero (deleted)" in names
    assert names.count("/opt/ccd/shmem/data.bin") == 2
    assert not [n for n in names if n.startswith("/memfd:/")]
