"""Faults in the middle of a conversion, and images that promise what they
do not hold (issue 12): no hang, no silent loss, no traceback.

* Files change between the checks and the copy: a pages image becomes a
  FIFO (must not block in open()), a mapped file below --root is swapped
  (costs that file's pages with a warning, as when it is missing from the
  start, not the whole core).
* Images that promise a file or pages they do not deliver (files.img,
  memfd.img, pagemap-shmem-N.img absent, a VMA naming a pipe): a warning
  naming what is missing, exit 3, never a silent exit 0.
"""
import os
import re
import shutil
import signal

import pytest

from criu_coredump import pagemap, sources

from .helpers.tools import run_coredump
from .helpers.corefile import nt_file, read_core
from .helpers.imgedit import edit_image
from .helpers.inprocess import run_main

pytestmark = pytest.mark.slow

LINE = re.compile(r"coredump: (error|warning|note): .+")


@pytest.fixture
def copy(fixtures_dir, tmp_path):
    """A writable copy of a fixture (images and root)."""
    def make(name):
        dst = tmp_path / name.replace("/", "-")
        shutil.copytree(fixtures_dir(name), dst, symlinks=True)
        return str(dst)
    return make


class Hung(BaseException):
    """Not an Exception: code under test that catches Exception must not
    swallow it and block again."""


class _alarm:
    """Fail (instead of hanging the test run) after `seconds`, and again
    every second after that."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def ring(signum, frame):
            raise Hung("hung for %d s" % self.seconds)
        self.old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, self.seconds, 1)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def _clean(stderr):
    assert "Traceback" not in stderr, stderr
    for ln in stderr.splitlines():
        assert LINE.fullmatch(ln), ln


def _convert(fx, tmp_path, *extra):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", out,
                     "--root", os.path.join(fx, "root"), *extra, timeout=120)
    _clean(p.stderr)
    return p, out


def _warnings(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("coredump: warning")]


# -- files changed during the conversion ------------------------------------------

def test_pages_image_replaced_by_a_fifo_after_the_check(copy, tmp_path, monkeypatch):
    """The size check passes, then the pages image is a FIFO: open() must
    not block (O_NONBLOCK, fstat on the descriptor), the error names it."""
    fx = copy("stopped_static")
    imgs = os.path.join(fx, "images")
    checked = pagemap.PageIndex._check_pages_image

    def check_then_swap(self):
        checked(self)
        if self.present_pages:
            os.unlink(self.pages_path)
            os.mkfifo(self.pages_path)
    monkeypatch.setattr(pagemap.PageIndex, "_check_pages_image", check_then_swap)
    out = tmp_path / "out"
    out.mkdir()
    with _alarm(20):
        rc, _, err = run_main(["-q", "-i", imgs, "-o", str(out)])
    _clean(err)
    assert rc == 2, err
    assert re.search(r"coredump: error: %s/pages-\d+\.img: cannot open: not a "
                     r"regular file" % re.escape(imgs), err), err
    assert os.listdir(out) == []


@pytest.mark.parametrize("swap", ["fifo", "symlink-out", "removed"])
def test_mapped_file_swapped_after_the_check_costs_its_pages(copy, tmp_path,
                                                             monkeypatch, swap):
    """A file below --root is fine when the plan checks it, then replaced
    (a symlink race): like a file missing from the start, a warning and
    holes for its pages, not a lost core."""
    fx = copy("stopped_static")
    root = os.path.join(fx, "root")
    prog = os.path.join(root, "opt/ccd/stopped_static/prog")
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET" * 1000)
    checked = sources.PageSources.file_source

    def check_then_swap(self, f):
        src = checked(self, f)
        if src and os.path.lexists(prog):
            os.unlink(prog)
            if swap == "fifo":
                os.mkfifo(prog)
            elif swap == "symlink-out":
                os.symlink("../../../../../../../../" + str(secret), prog)
        return src
    monkeypatch.setattr(sources.PageSources, "file_source", check_then_swap)
    out = tmp_path / "out"
    out.mkdir()
    with _alarm(20):
        rc, _, err = run_main(["-q", "-i", os.path.join(fx, "images"),
                               "-o", str(out), "--root", root])
    _clean(err)
    assert rc == 3, err
    warn = _warnings(err)
    assert len(warn) == 1 and warn[0].startswith(
        "coredump: warning: %s: cannot read mapped file (" % prog), err
    assert warn[0].endswith("; its pages are holes"), err
    core = read_core(os.path.join(out, "core.13508"))
    assert b"SECRET" not in core[2]


def test_pages_image_truncated_after_the_check(copy, tmp_path, monkeypatch):
    """A pages image cut short after the size check: an error naming it,
    not zeros in place of its pages."""
    fx = copy("stopped_static")
    imgs = os.path.join(fx, "images")
    checked = pagemap.PageIndex._check_pages_image

    def check_then_cut(self):
        checked(self)
        if self.present_pages:
            os.truncate(self.pages_path, 4096)
    monkeypatch.setattr(pagemap.PageIndex, "_check_pages_image", check_then_cut)
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = run_main(["-q", "-i", imgs, "-o", str(out)])
    _clean(err)
    assert rc == 2, err
    assert re.search(r"coredump: error: %s/pages-\d+\.img: ends before the pages"
                     % re.escape(imgs), err), err
    assert os.listdir(out) == []


def test_mapped_file_shorter_than_at_checkpoint(copy, tmp_path):
    """A mapped file now shorter than files.img says: its missing tail is a
    warning, not silent zeros."""
    fx = copy("stopped_static")
    prog = os.path.join(fx, "root/opt/ccd/stopped_static/prog")
    os.truncate(prog, 4096)
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    assert len(warn) == 1 and warn[0].startswith("coredump: warning: %s: ends before"
                                                 % prog), p.stderr


# -- promised and not delivered ----------------------------------------------------

def test_without_files_img_every_mapped_file_is_a_warning(copy, tmp_path):
    fx = copy("threads")
    os.unlink(os.path.join(fx, "images", "files.img"))
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    files_img = os.path.join(fx, "images", "files.img")
    warn = _warnings(p.stderr)
    assert warn and all(w.startswith("coredump: warning: %s: no regular file or "
                                     "memfd with id " % files_img) for w in warn), p.stderr
    assert all("left out of NT_FILE" in w for w in warn)


def test_vma_naming_a_pipe_is_a_warning(copy, tmp_path):
    """shmem's files.img has a pipe (id 12): a file VMA naming it would
    vanish from NT_FILE."""
    fx = copy("shmem")
    mm = os.path.join(fx, "images", "mm-13585.img")

    def name_the_pipe(msgs):
        v = [v for v in msgs[0].vmas if v.status & (1 << 6)][0]  # FILE_PRIVATE
        v.shmid = 12
    edit_image(mm, name_the_pipe)
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    assert _warnings(p.stderr) == [
        "coredump: warning: %s: no regular file or memfd with id 12, which the "
        "mapping at %s names; the mapping is left out of NT_FILE and its pages "
        "not in the pagemap are holes" % (os.path.join(fx, "images", "files.img"),
                                         re.search(r"0x[0-9a-f]+-0x[0-9a-f]+",
                                                   p.stderr).group(0))]


def test_without_memfd_img_shared_memory_is_a_warning(copy, tmp_path):
    fx = copy("shmem")
    os.unlink(os.path.join(fx, "images", "memfd.img"))
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    memfd_img = os.path.join(fx, "images", "memfd.img")
    assert warn and all(w.startswith("coredump: warning: %s: no inode for memfd "
                                     "file " % memfd_img) for w in warn), p.stderr


@pytest.mark.parametrize("shmid", [28, 29])
def test_without_pagemap_shmem_the_shared_memory_is_a_warning(copy, tmp_path, shmid):
    """CRIU 4.2 writes pagemap-shmem-N.img for every shared-memory object it
    dumps, even one never touched (zdtm/pthread00's has a header and no
    entry): its absence is a loss."""
    fx = copy("shmem")
    gone = os.path.join(fx, "images", "pagemap-shmem-%d.img" % shmid)
    os.unlink(gone)
    p, _ = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    warn = _warnings(p.stderr)
    assert len(warn) == 1 and warn[0].startswith(
        "coredump: warning: %s: missing: the shared memory mapped at " % gone), p.stderr


# -- names and ids no kernel gives ------------------------------------------------

def test_nul_in_a_file_name_is_escaped_in_nt_file(copy, tmp_path):
    """A NUL would end the name early and shift every later name onto the
    wrong mapping: it is escaped, with a warning."""
    fx = copy("threads")
    files = os.path.join(fx, "images", "files.img")
    bad = {}

    def plant(msgs):
        for m in msgs:
            if m.HasField("reg") and m.reg.name.endswith("/prog"):
                m.reg.name = m.reg.name + "\0evil"
                bad["id"] = m.id
                return
    edit_image(files, plant)
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 3, p.stderr
    assert any(w.startswith("coredump: warning: %s: the name of file %d" % (files, bad["id"]))
               and "NT_FILE has it escaped" in w for w in _warnings(p.stderr)), p.stderr
    count, _, names = nt_file(read_core(os.path.join(out, "core.13466"))[1])
    parts = names.split(b"\0")
    assert len(parts) == count + 1 and parts[-1] == b"", parts
    assert any(n.endswith(b"/prog\\x00evil") for n in parts)
    assert not any(n == b"evil" for n in parts)


def _rename_pid(d, old, new):
    """pstree names `new` for process `old`, and its images follow."""
    def edit(msgs):
        for e in msgs:
            if e.pid == old:
                e.pid = new
                e.threads[:] = [new if t == old else t for t in e.threads]
    edit_image(os.path.join(d, "pstree.img"), edit)
    for kind in ("core", "mm", "pagemap"):
        os.rename(os.path.join(d, "%s-%d.img" % (kind, old)),
                  os.path.join(d, "%s-%d.img" % (kind, new)))


@pytest.mark.parametrize("pid", [1 << 31, (1 << 32) - 1, (1 << 22) + 1])
def test_impossible_pid_is_rejected(copy, tmp_path, pid):
    """pid_max cannot exceed 2^22 (PID_MAX_LIMIT): 2^31 and up would wrap
    into a negative pr_pid."""
    fx = copy("stopped_static")
    imgs = os.path.join(fx, "images")
    _rename_pid(imgs, 13508, pid)
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [
        "coredump: error: %s/pstree.img: process id %d is not a possible pid "
        "(1 to 4194304)" % (imgs, pid)]
    assert os.listdir(out) == []


def test_impossible_thread_id_is_rejected(copy, tmp_path):
    fx = copy("threads")
    imgs = os.path.join(fx, "images")

    def edit(msgs):
        msgs[0].threads[1] = 1 << 31
    edit_image(os.path.join(imgs, "pstree.img"), edit)
    p, out = _convert(fx, tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [
        "coredump: error: %s/pstree.img: thread id %d is not a possible pid "
        "(1 to 4194304)" % (imgs, 1 << 31)]


@pytest.mark.parametrize("cycle", ["self", "pair"])
def test_list_keeps_processes_whose_parents_loop(copy, cycle):
    fx = copy("tree")
    imgs = os.path.join(fx, "images")
    pids = []

    def edit(msgs):
        pids.extend(e.pid for e in msgs)
        if cycle == "self":
            msgs[0].ppid = msgs[0].pid
        else:
            msgs[0].ppid = msgs[1].pid  # and msgs[1]'s parent is msgs[0]
    edit_image(os.path.join(imgs, "pstree.img"), edit)
    p = run_coredump("-i", imgs, "--list")
    _clean(p.stderr)
    assert p.returncode == 3, p.stderr
    listed = [int(ln.split()[0]) for ln in p.stdout.splitlines()[1:]]
    assert sorted(listed) == sorted(pids), p.stdout
    assert re.fullmatch(r"coredump: warning: %s/pstree\.img: process %d: its chain "
                        r"of parents loops \(ppid \d+\); listed at the top"
                        % (re.escape(imgs), pids[0]), _warnings(p.stderr)[0])


def test_image_directory_without_search_permission(fixtures_dir):
    import tempfile
    base = tempfile.mkdtemp(prefix="ccd-perm-")
    try:
        os.chmod(base, 0o755)
        imgs = os.path.join(base, "images")
        shutil.copytree(os.path.join(fixtures_dir("stopped_static"), "images"), imgs)
        os.chmod(imgs, 0o644)  # readable, not searchable
        out = os.path.join(base, "out")
        os.mkdir(out)
        os.chmod(out, 0o777)
        p = run_coredump("-i", imgs, "-o", out, preexec_fn=_unprivileged)
        _clean(p.stderr)
        assert p.returncode == 2, p.stderr
        assert p.stderr.splitlines() == [
            "coredump: error: %s: cannot read: Permission denied" % imgs]
    finally:
        os.chmod(os.path.join(base, "images"), 0o755)
        shutil.rmtree(base)


def _unprivileged():
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


# -- the standard streams --------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_stdout_that_is_not_utf8(copy, tmp_path, encoding):
    """A summary naming a non-ASCII OUTDIR on a stdout that cannot encode
    it: escapes, not a UnicodeEncodeError after the core is written."""
    fx = copy("stopped_static")
    out = tmp_path / "sortie-\u00e9t\u00e9-\u6838"
    out.mkdir()
    env = dict(os.environ, PYTHONIOENCODING=encoding)
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", out,
                     "--root", os.path.join(fx, "root"), env=env, encoding=encoding)
    _clean(p.stderr)
    assert p.returncode == 0, p.stderr
    assert os.listdir(out) == ["core.13508"]
    assert "core.13508: pid 13508" in p.stdout


def _run_with_stdout(fx, stdout, *extra, **kw):
    import subprocess
    import sys
    from .helpers.paths import COREDUMP
    return subprocess.run([sys.executable, COREDUMP, "-i", os.path.join(fx, "images"),
                           "--root", os.path.join(fx, "root")] + [str(a) for a in extra],
                          stdout=stdout, stderr=subprocess.PIPE, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("json", [False, True])
def test_stdout_on_a_full_disk(copy, tmp_path, json):
    fx = copy("stopped_static")
    out = tmp_path / "out"
    out.mkdir()
    with open("/dev/full", "w") as full:
        p = _run_with_stdout(fx, full, "-o", out, *(["--json"] if json else []))
    _clean(p.stderr)
    assert p.stderr.splitlines() == [
        "coredump: error: <stdout>: cannot write: No space left on device"]
    assert p.returncode == 2
    assert os.listdir(out) == ["core.13508"]  # written, and complete


def test_stdout_a_closed_pipe(copy, tmp_path):
    fx = copy("stopped_static")
    out = tmp_path / "out"
    out.mkdir()
    r, w = os.pipe()
    os.close(r)
    try:
        p = _run_with_stdout(fx, w, "-o", out, "--json")
    finally:
        os.close(w)
    _clean(p.stderr)
    assert p.stderr.splitlines() == ["coredump: error: <stdout>: cannot write: Broken pipe"]
    assert p.returncode == 2
    assert os.listdir(out) == ["core.13508"]


def _entry_point(which):
    """The command line of each way a user runs coredump."""
    import sys
    from .helpers.paths import COREDUMP
    if which == "bin/coredump":
        return [sys.executable, COREDUMP]
    if which == "python -m":
        return [sys.executable, "-m", "criu_coredump"]
    # what `pip install` made of setup.cfg's console script (scripts/setup.sh
    # installs the checkout into the venv running these tests)
    exe = os.path.join(os.path.dirname(sys.executable), "coredump")
    with open(exe) as f:
        assert "criu_coredump.__main__ import run" in f.read(), exe
    return [exe]


@pytest.mark.parametrize("closed", [(1,), (2,), (1, 2), (0, 1, 2)])
@pytest.mark.parametrize("entry", ["bin/coredump", "python -m", "pip's coredump"])
def test_closed_standard_streams(copy, tmp_path, closed, entry):
    """`>&- 2>&-`: the conversion runs as with those streams on /dev/null,
    whichever entry point runs it, and no file a module opens (Python
    3.14's ctypes keeps one) gets descriptor 1 or 2 to be written into by
    the summary or messages: exit 0, one core, nothing said on a stderr
    left open."""
    import subprocess
    from .helpers.paths import REPO
    from .helpers.corefile import PT_LOAD
    fx = copy("stopped_static")
    out = tmp_path / "out"
    out.mkdir()

    def close():
        for fd in closed:
            os.close(fd)
    p = subprocess.run(_entry_point(entry) + ["-i", os.path.join(fx, "images"),
                       "-o", str(out), "--root", os.path.join(fx, "root")],
                       preexec_fn=close, timeout=120, cwd=REPO,
                       stderr=None if 2 in closed else subprocess.PIPE)
    assert p.returncode == 0, p.stderr
    assert p.stderr in (None, b"")
    assert os.listdir(out) == ["core.13508"]
    core = read_core(os.path.join(out, "core.13508"))
    assert any(ph["type"] == PT_LOAD for ph in core[0])
    assert b"coredump:" not in core[2]


# -- temporaries of runs killed outright -------------------------------------------------

def test_stale_temporaries_of_dead_runs_are_removed(copy, tmp_path):
    """SIGKILL leaves .core.PID.WRITER.XXXXXXXX.tmp: the next run into the
    same OUTDIR removes those whose writer is gone, and only those."""
    import fcntl
    import subprocess
    fx = copy("stopped_static")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / (".core.13508.%d.abcd1234.tmp" % dead.pid)
    live = out / (".core.99.%d.efgh5678.tmp" % os.getpid())
    locked = out / (".core.98.%d.ijkl9012.tmp" % dead.pid)
    other = out / ".core.97.notours.tmp"
    for f in (stale, live, locked, other):
        f.write_bytes(b"partial")
    holder = os.open(locked, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a writer in another pid namespace
    try:
        p, _ = _convert(fx, tmp_path)
    finally:
        os.close(holder)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == sorted(["core.13508", live.name, locked.name,
                                              other.name])


# -- many threads -----------------------------------------------------------------------

def _limit_as():
    import resource
    # 30,000 threads have 50 MiB of notes, held twice when they were built
    # at once (the list, then the joined blob): that failed under 250 MiB;
    # streamed, the conversion runs in 150 MiB
    resource.setrlimit(resource.RLIMIT_AS, (220 << 20, 220 << 20))


def test_notes_of_many_threads_are_streamed(tmp_path):
    from .helpers import synth
    ck = synth.Checkpoint(tmp_path / "images")
    ck.many_threads(1000, 30000)
    ck.write()
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-q", "-i", tmp_path / "images", "-o", out, preexec_fn=_limit_as)
    _clean(p.stderr)
    assert p.returncode == 0, p.stderr
    core = read_core(os.path.join(out, "core.1000"))
    prstatus = [d for (n, t, d) in core[1] if t == 1]
    assert len(prstatus) == 30000
