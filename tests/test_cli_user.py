"""The command line as a user meets it: --list, --json, --pid, the summary,
the progress bar (drawn on a terminal, absent in a pipe), --gdb with a real
gdb in batch mode, --help and --version.  Every test runs bin/coredump in a
subprocess and looks only at what it prints, its exit code and its files."""
import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios

import pytest

from .helpers.paths import COREDUMP
from .helpers.tools import need, readelf, run_coredump

pytestmark = pytest.mark.slow


def _fx(fixtures_dir, name):
    fx = fixtures_dir(name)
    return os.path.join(fx, "images"), os.path.join(fx, "root")


# -- --list -------------------------------------------------------------------

def test_list_shows_the_tree_and_writes_nothing(fixtures_dir, tmp_path):
    imgs, _ = _fx(fixtures_dir, "tree")
    p = run_coredump("-i", imgs, "--list", check=0, cwd=tmp_path)
    assert os.listdir(tmp_path) == []
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["PID", "PPID", "STATE", "THREADS", "ARCH", "MAPPED",
                                "DUMPED", "COMMAND"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[:4] for r in rows] == [["13544", "0", "alive", "1"],
                                     ["13547", "13544", "alive", "1"],
                                     ["13548", "13544", "zombie", "0"]]
    # children drawn under their parent; a zombie has no memory to show
    assert rows[1][-2:] == ["\\_", "prog"] and rows[2][5:7] == ["-", "-"]
    assert [r[4] for r in rows] == ["x86_64"] * 3
    assert re.match(r"^\d+\.\d MiB$", " ".join(rows[0][5:7]))
    assert p.stderr == ""


def test_list_threads_and_pages(fixtures_dir):
    imgs, _ = _fx(fixtures_dir, "threads")
    p = run_coredump("-i", imgs, "--list", "--json", check=0)
    doc = json.loads(p.stdout)
    proc, = doc["processes"]
    assert (proc["pid"], proc["ppid"], proc["comm"], proc["arch"], proc["state"],
            proc["threads"]) == (13466, 0, "prog", "x86_64", "alive", 4)
    # every page CRIU saved is in the pages image the pagemap names (crit
    # reads the name; Debian's crit cannot read CRIU 4.2's page counts)
    crit = need("crit")
    head = json.loads(subprocess.run([crit, "decode", "-i",
                                      os.path.join(imgs, "pagemap-13466.img")],
                                     stdout=subprocess.PIPE, check=True).stdout)
    pages_img = os.path.join(imgs, "pages-%d.img" % head["entries"][0]["pages_id"])
    pages = os.path.getsize(pages_img) // 4096
    assert proc["dumped_pages"] == pages
    mm = json.loads(subprocess.run([crit, "decode", "-i",
                                    os.path.join(imgs, "mm-13466.img")],
                                   stdout=subprocess.PIPE, check=True).stdout)
    vmas = mm["entries"][0]["vmas"]
    assert proc["mapped_bytes"] == sum(int(v["end"]) - int(v["start"]) for v in vmas)


def test_list_stopped_state(fixtures_dir):
    imgs, _ = _fx(fixtures_dir, "stopped_static")
    p = run_coredump("-i", imgs, "--list", check=0)
    assert p.stdout.splitlines()[1].split()[:4] == ["13508", "0", "stopped", "1"]


def test_list_reports_a_broken_process_and_lists_the_others(fixtures_dir, tmp_path):
    imgs = str(tmp_path / "images")
    shutil.copytree(_fx(fixtures_dir, "tree")[0], imgs)
    os.unlink(os.path.join(imgs, "core-13547.img"))
    p = run_coredump("-i", imgs, "--list", check=3)
    assert [ln.split()[:3] for ln in p.stdout.splitlines()[1:]] == [
        ["13544", "0", "alive"], ["13547", "13544", "error"],
        ["13548", "13544", "zombie"]]
    assert p.stderr == "coredump: error: %s: missing\n" % os.path.join(imgs, "core-13547.img")


def test_list_refuses_output_options(fixtures_dir, tmp_path):
    imgs, _ = _fx(fixtures_dir, "tree")
    p = run_coredump("-i", imgs, "--list", "-o", tmp_path, check=1)
    assert "--list writes nothing" in p.stderr


# -- summary, --json, --pid -------------------------------------------------

def test_summary_line_per_core(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "tree")
    p = run_coredump("-i", imgs, "-o", tmp_path, "--root", root, check=0)
    lines = p.stdout.splitlines()
    assert len(lines) == 2
    for line, pid in zip(lines, (13544, 13547)):
        m = re.match(r"^(\S+): pid (\d+) \(prog\), x86_64, 1 thread, (\d+) segments, "
                     r"[\d.]+ (KiB|MiB) of memory \([\d.]+ (B|KiB|MiB) in holes\), "
                     r"no warnings$", line)
        assert m, line
        assert m.group(1) == os.path.join(str(tmp_path), "core.%d" % pid)
        assert int(m.group(2)) == pid
    # the zombie is a note on stderr, not a line of the summary
    assert "process 13548 (prog) skipped: zombie" in p.stderr


def _phdrs(core):
    out = readelf("-lW", core)
    return [ln.split() for ln in out.splitlines() if ln.strip().startswith("LOAD")]


def test_json_is_the_only_stdout_and_matches_the_core(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "threads")
    p = run_coredump("-i", imgs, "-o", tmp_path, "--root", root, "--json", check=0)
    doc = json.loads(p.stdout)  # fails on anything else on stdout
    assert doc["exit_code"] == 0 and doc["error"] is None
    core, = doc["cores"]
    assert core["path"] == os.path.join(str(tmp_path), "core.13466")
    assert (core["pid"], core["comm"], core["status"], core["threads"]) == \
        (13466, "prog", "written", 4)
    assert core["warnings"] == [] and core["skipped"] is None and core["error"] is None
    assert core["arch"] == "x86_64"
    loads = _phdrs(core["path"])
    assert core["segments"] == len(loads)
    # dumped bytes: the PT_LOADs' p_filesz, as readelf reads them
    assert core["dumped_bytes"] == sum(int(x[4], 16) for x in loads)
    # holes: what the sparse file does not hold
    st = os.stat(core["path"])
    assert 0 < core["hole_bytes"] < core["dumped_bytes"]
    assert st.st_blocks * 512 < st.st_size - core["hole_bytes"] + (1 << 20)


def test_json_with_pid_warnings_and_a_zombie(fixtures_dir, tmp_path):
    imgs, _ = _fx(fixtures_dir, "tree")
    # no --root: the program's file is not on this host, its pages are holes
    p = run_coredump("-i", imgs, "-o", tmp_path, "--pid", 13547, "--pid", 13548,
                     "--json", check=3)
    doc = json.loads(p.stdout)
    assert doc["exit_code"] == 3
    live, zombie = doc["cores"]
    assert live["pid"] == 13547 and live["status"] == "incomplete"
    assert any("/opt/ccd/tree/prog" in w for w in live["warnings"])
    assert zombie["status"] == "skipped" and zombie["path"] is None
    assert zombie["skipped"].startswith("zombie")
    assert sorted(os.listdir(tmp_path)) == ["core.13547"]
    # the warnings are also on stderr for a person
    assert "coredump: warning: /opt/ccd/tree/prog" in p.stderr


def test_json_when_the_checkpoint_cannot_be_read(tmp_path):
    missing = tmp_path / "nope"
    p = run_coredump("-i", missing, "-o", tmp_path, "--json", check=2)
    doc = json.loads(p.stdout)
    assert doc["exit_code"] == 2 and doc["cores"] == []
    assert doc["error"] == "%s: no such image directory" % missing
    assert p.stderr == "coredump: error: %s: no such image directory\n" % missing


def test_quiet_prints_nothing_on_success(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "stopped_static")
    p = run_coredump("-i", imgs, "-o", tmp_path, "--root", root, "-q", check=0)
    assert p.stdout == "" and p.stderr == ""
    assert os.listdir(tmp_path) == ["core.13508"]


# -- progress -----------------------------------------------------------------

def test_no_progress_bar_when_stderr_is_a_pipe(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "threads")
    p = run_coredump("-i", imgs, "-o", tmp_path, "--root", root, check=0)
    assert p.stderr == ""


def _run_on_pty(args, cols=100):
    """Run coredump with stderr on a pseudo-terminal of `cols` columns;
    returns (exit code, stdout, what reached the terminal)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    proc = subprocess.Popen([sys.executable, COREDUMP] + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    term = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        term += chunk
    os.close(master)
    out = proc.stdout.read()
    proc.stdout.close()
    return proc.wait(timeout=120), out.decode(), term.decode()


def test_progress_bar_on_a_terminal(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "tree")
    code, out, term = _run_on_pty(["-i", imgs, "-o", tmp_path, "--root", root])
    assert code == 0
    # one tqdm bar per process, bytes out of the bytes to copy
    for pid in (13544, 13547):
        assert re.search(r"core\.%d \(prog\): +\d+%%\|.*\| [\d.]+[kMG]?B/[\d.]+[kMG]?B \["
                         % pid, term), term
    assert "\r" in term
    # the summary still goes to stdout, the note to the terminal
    assert len(out.splitlines()) == 2
    assert "process 13548 (prog) skipped" in term


def test_quiet_silences_the_progress_bar(fixtures_dir, tmp_path):
    imgs, root = _fx(fixtures_dir, "tree")
    code, out, term = _run_on_pty(["-i", imgs, "-o", tmp_path, "--root", root, "-q"])
    assert (code, out, term) == (0, "", "")


# -- --gdb --------------------------------------------------------------------

def test_gdb_prints_the_backtrace_of_the_core(fixtures_dir, tmp_path):
    need("gdb")
    imgs, root = _fx(fixtures_dir, "threads")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    p = run_coredump("-i", imgs, "--gdb", 13466, "--root", root, "--",
                     "-nx", "-batch", "-ex", "set debuginfod enabled off",
                     "-ex", "thread apply all bt", env=env, check=0)
    # the executable and the libraries came from --root: symbols, frames, lines
    assert "Core was generated by `/opt/ccd/threads/prog" in p.stdout
    assert re.search(r"in deep_wait \(depth=0, marker=44\) at threads.c:18", p.stdout)
    assert re.search(r"in main \(argc=7, argv=0x[0-9a-f]+\) at threads.c:42", p.stdout)
    # every thread, each parked in pause() under its own deep_wait frames.
    # "Thread 0x... (LWP n)" needs a libthread_db of the fixture's glibc
    # (2.36): Debian 12's own; elsewhere gdb says "LWP n".  pause() is
    # __libc_pause with glibc's debug file, pause (its dynamic symbol) without.
    headers = re.findall(r"^Thread \d+ \((?:Thread 0x[0-9a-f]+ \()?LWP (\d+)\)\)?:$",
                         p.stdout, re.M)
    assert sorted(headers) == ["13466", "13468", "13469", "13471"], p.stdout
    assert len(re.findall(r"^#0 .* in (__libc_)?pause \(\)", p.stdout, re.M)) == 5
    assert re.search(r"in thread_fn \(arg=0x[0-9a-f]+\) at threads.c:25", p.stdout)
    assert "Can't open file" not in p.stdout + p.stderr  # sysroot set first
    # the note says where the core was; the temporary directory is gone
    assert re.search(r"coredump: note: .*core\.13466: pid 13466 \(prog\), x86_64, 4 threads",
                     p.stderr)
    assert os.listdir(tmp) == []


def test_gdb_exit_code_is_gdbs_and_out_dir_keeps_the_core(fixtures_dir, tmp_path):
    need("gdb")
    imgs, root = _fx(fixtures_dir, "stopped_static")
    p = run_coredump("-i", imgs, "--gdb", 13508, "--root", root, "-o", tmp_path,
                     "-q", "--", "-nx", "-batch", "-ex", "info files",
                     "-ex", "quit 7")
    assert p.returncode == 7, p.stderr
    assert os.listdir(tmp_path) == ["core.13508"]
    # gdb's own account of what it opened: our core, the program below --root
    assert "`%s'" % os.path.join(str(tmp_path), "core.13508") in p.stdout
    assert "`%s'" % os.path.join(os.path.realpath(root), "opt/ccd/stopped_static/prog") \
        in p.stdout
    assert p.stderr == ""  # -q: no note


def test_gdb_on_a_zombie_is_an_error(fixtures_dir, tmp_path):
    need("gdb")
    imgs, _ = _fx(fixtures_dir, "tree")
    p = run_coredump("-i", imgs, "--gdb", 13548, "-o", tmp_path, "--", "-batch",
                     check=2)
    assert p.stderr.startswith("coredump: error: ")
    assert "process 13548 (prog) has no core to debug: zombie" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_gdb_missing_is_exit_127(fixtures_dir, tmp_path):
    imgs, _ = _fx(fixtures_dir, "stopped_static")
    env = dict(os.environ, PATH=str(tmp_path))
    p = run_coredump("-i", imgs, "--gdb", 13508, env=env, check=127)
    assert p.stderr == ("coredump: error: gdb: not found in PATH; install gdb "
                        "to use --gdb\n")


def test_gdb_arguments_need_gdb(fixtures_dir):
    imgs, _ = _fx(fixtures_dir, "stopped_static")
    p = run_coredump("-i", imgs, "--", "-batch", check=1)
    assert "arguments after -- are passed to gdb: they need --gdb PID" in p.stderr


# -- --help, --version ---------------------------------------------------------

def test_help_has_modes_exit_codes_and_examples():
    p = run_coredump("--help", check=0)
    for text in ("--list", "--gdb PID", "--json", "exit codes:", "examples:",
                 "coredump -i IMGDIR --gdb 1234 -- -batch -ex 'thread apply all bt'",
                 "127 when gdb is not installed"):
        assert text in p.stdout


def test_version():
    from criu_coredump import __version__
    p = run_coredump("--version", check=0)
    assert p.stdout == "coredump %s\n" % __version__
