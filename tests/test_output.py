"""Writing cores next to other people's data: OUTDIR checked first, a core
is complete or absent, a planted symlink is replaced (never written
through), an older core survives a failed conversion, and a full disk or a
file size limit mid-write is one clean error with nothing left behind."""
import errno
import os
import resource
import shutil
import signal
import stat
import subprocess
import tempfile

import pytest

from .helpers.paths import REPO
from .helpers.tools import run_coredump
from .helpers.inprocess import run_main

pytestmark = pytest.mark.slow

PID = 13508


@pytest.fixture
def fx(fixtures_dir):
    d = fixtures_dir("stopped_static")
    return os.path.join(d, "images"), os.path.join(d, "root")


def _only_error(p_stderr, text):
    assert p_stderr.splitlines() == ["coredump: error: " + text], p_stderr


def test_outdir_missing(fx, tmp_path):
    images, root = fx
    p = run_coredump("-i", images, "-o", tmp_path / "nope", "--root", root)
    assert p.returncode == 2
    _only_error(p.stderr, "%s: output directory does not exist" % (tmp_path / "nope"))


def test_outdir_is_a_file(fx, tmp_path):
    images, root = fx
    (tmp_path / "f").write_text("precious")
    p = run_coredump("-i", images, "-o", tmp_path / "f", "--root", root)
    assert p.returncode == 2
    _only_error(p.stderr, "%s: output directory is not a directory" % (tmp_path / "f"))
    assert (tmp_path / "f").read_text() == "precious"


def _as_unprivileged():
    """Drop root (which may write anywhere) so that permissions apply."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


def test_outdir_not_writable(fx):
    images, _ = fx
    # a directory of its own under the system temp dir: reachable by the
    # unprivileged user the conversion runs as, not writable by it
    base = tempfile.mkdtemp(prefix="ccd-ro-")
    try:
        os.chmod(base, 0o755)
        out = os.path.join(base, "out")
        os.mkdir(out, 0o555)
        os.chmod(out, 0o555)
        # the program and the images copied where uid 65534 can read them:
        # the clone and its venv may be below a directory it cannot enter
        # (/root is 0700); the distribution's python3 has pycriu and tqdm
        app = os.path.join(base, "app")
        for d in ("bin", "criu_coredump"):
            shutil.copytree(os.path.join(REPO, d), os.path.join(app, d),
                            ignore=shutil.ignore_patterns("__pycache__"))
        imgs = shutil.copytree(images, os.path.join(base, "images"))
        for d, dirs, files in os.walk(base):
            for n in dirs + files:
                p = os.path.join(d, n)
                if p != out:
                    os.chmod(p, 0o755)
        p = subprocess.run(["/usr/bin/python3", "-B", os.path.join(app, "bin", "coredump"),
                            "-i", imgs, "-o", out], preexec_fn=_as_unprivileged,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=600)
        assert p.returncode == 2, p.stderr
        _only_error(p.stderr, "%s: cannot create a file in the output directory: "
                    "Permission denied" % out)
        assert os.listdir(out) == []
    finally:
        shutil.rmtree(base)


def test_planted_symlink_is_replaced_not_followed(fx, tmp_path):
    images, root = fx
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"someone else's data")
    os.symlink(victim, out / ("core.%d" % PID))
    p = run_coredump("-i", images, "-o", out, "--root", root)
    assert p.returncode == 0, p.stderr
    assert victim.read_bytes() == b"someone else's data"
    st = os.lstat(out / ("core.%d" % PID))
    assert stat.S_ISREG(st.st_mode) and st.st_size > 4096
    assert (out / ("core.%d" % PID)).read_bytes()[:4] == b"\x7fELF"
    assert sorted(os.listdir(out)) == ["core.%d" % PID]


def test_directory_in_the_way_of_the_core(fx, tmp_path):
    images, root = fx
    out = tmp_path / "out"
    (out / ("core.%d" % PID)).mkdir(parents=True)
    p = run_coredump("-i", images, "-o", out, "--root", root)
    assert p.returncode == 2
    _only_error(p.stderr, "%s: cannot replace it: Is a directory" % (out / ("core.%d" % PID)))
    assert os.listdir(out) == ["core.%d" % PID]


@pytest.mark.parametrize("calls_before", [0, 3])
def test_disk_full_mid_write(fx, tmp_path, monkeypatch, calls_before):
    """ENOSPC from the kernel's copy after some data went out: one error
    naming the core, exit 2, the temporary file gone, the old core intact."""
    images, root = fx
    out = tmp_path / "out"
    out.mkdir()
    old = out / ("core.%d" % PID)
    old.write_bytes(b"the previous core")
    real = os.copy_file_range
    calls = []

    def full(*a, **kw):
        calls.append(1)
        if len(calls) > calls_before:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)
    monkeypatch.setattr(os, "copy_file_range", full)
    rc, _, err = run_main(["-i", images, "-o", str(out), "--root", root])
    assert len(calls) == calls_before + 1  # it failed where we made it fail
    assert rc == 2
    _only_error(err, "%s: cannot write: No space left on device" % old)
    assert os.listdir(out) == [old.name]
    assert old.read_bytes() == b"the previous core"


def _small_file_size_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of dying
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def test_file_size_limit_mid_write(fx, tmp_path):
    """A real kernel refusal half way through (RLIMIT_FSIZE of 64 KiB for a
    core of ~800 KiB): nothing half-written is left."""
    images, root = fx
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", images, "-o", out, "--root", root,
                     preexec_fn=_small_file_size_limit)
    assert p.returncode == 2, p.stderr
    _only_error(p.stderr, "%s: cannot write: File too large" % (out / ("core.%d" % PID)))
    assert os.listdir(out) == []


def test_core_is_private_and_complete(fx, tmp_path):
    images, root = fx
    p = run_coredump("-i", images, "-o", tmp_path, "--root", root, check=0)
    assert p.stderr == ""
    st = os.stat(tmp_path / ("core.%d" % PID))
    assert stat.S_IMODE(st.st_mode) == 0o600  # as the kernel creates cores
    assert sorted(os.listdir(tmp_path)) == ["core.%d" % PID]


def test_core_is_fsynced_before_it_is_renamed(fixtures_dir, tmp_path, monkeypatch):
    """Durability: the data reaches the disk before the name appears, so a
    crash leaves the old core or the new one, never an empty file."""
    from criu_coredump import writer
    from criu_coredump.convert import generate
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src)))
        return real_replace(src, dst)
    monkeypatch.setattr(writer.os, "fsync", fsync)
    monkeypatch.setattr(writer.os, "replace", replace)
    fx = fixtures_dir("stopped_static")
    generate(os.path.join(fx, "images"), str(tmp_path),
             root=os.path.join(fx, "root"))
    kinds = [e[0] for e in events]
    i = kinds.index("replace")
    tmp = events[i][1]
    assert ("fsync", tmp) in events[:i], events
    assert (tmp_path / "core.13508").exists()
