"""Shared test helpers: where the real fixtures are, running the CLI, tools.

The fixtures live in ../shared/fixtures (beside the repository, as CI lays
them out); CCD_FIXTURES overrides that.  Copies of shared/ may have turned
the root filesystems' symlinks (lib -> usr/lib) into small regular files that
hold the link target; `fixture()` makes a private copy with those links
restored, so gdb's sysroot resolves as it did on the machine that made them.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("CCD_FIXTURES",
                          os.path.join(os.path.dirname(REPO), "shared", "fixtures"))
GDBCHECK = os.path.join(os.path.dirname(FIXTURES), "tools", "gdbcheck.py")
COREDUMP = os.path.join(REPO, "bin", "coredump")

FIRST_PID = {"threads": 13466, "stopped_static": 13508, "tree": 13544,
             "shmem": 13585}


def need(tool):
    """Fail loudly (never skip) when a tool the test needs is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s is not installed: run scripts/setup.sh" % tool)
    return path


def _restore_links(root):
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p) or os.path.getsize(p) > 255:
                continue
            with open(p, "rb") as fh:
                target = fh.read()
            if b"\0" in target or b"\n" in target or not target:
                continue
            t = target.decode(errors="replace")
            if t.startswith("/"):
                # an absolute link (lib64/ld-linux... -> /lib/...) must stay
                # inside the root: debuggers given it as sysroot follow it
                t = os.path.relpath(os.path.join(root, t.lstrip("/")), d)
            if not os.path.exists(os.path.join(d, t)):
                continue
            os.unlink(p)
            os.symlink(t, p)


_cache = {}
DEBUG_FILES = os.path.join(REPO, "examples", "threads", "root", "usr", "lib",
                           "debug", ".build-id")


def _add_debug_files(root):
    """The fixtures' Debian 12 libc (build-id 93ac61ec...) with its debug
    file, which the bundled example carries: gdb finds it below the
    sysroot by build-id, so it unwinds (inlined frames, lines) as gdb 13
    did with Debian 12's libc6-dbg when the zdtm fixtures' answers were
    made, on any distribution.  Only the zdtm fixtures get it: their
    frames 0 are inlined libc functions; the others are compared with
    readers (lldb, eu-stack) that do not read it."""
    for d, _, files in os.walk(DEBUG_FILES):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), DEBUG_FILES)
            dst = os.path.join(root, "usr", "lib", "debug", ".build-id", rel)
            if not os.path.exists(dst):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(os.path.join(d, f), dst)


def fixture_copy(name, base):
    """A private, writable copy of a fixture with its symlinks restored."""
    if name not in _cache:
        src = os.path.join(FIXTURES, name)
        if not os.path.isdir(src):
            pytest.fail("fixture %s not found in %s" % (name, FIXTURES))
        dst = os.path.join(base, name)
        shutil.copytree(src, dst, symlinks=True)
        for d, dirs, files in os.walk(dst):
            os.chmod(d, 0o755)
            for f in files:
                p = os.path.join(d, f)
                if not os.path.islink(p):
                    os.chmod(p, 0o644 if not os.access(p, os.X_OK) else 0o755)
        _restore_links(os.path.join(dst, "root"))
        if name.startswith("zdtm/"):
            _add_debug_files(os.path.join(dst, "root"))
        _cache[name] = dst
    return _cache[name]


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("fixtures"))
    return lambda name: fixture_copy(name, base)


def run_coredump(*args, check=None, **kw):
    """Run bin/coredump as a user would; returns CompletedProcess (text)."""
    p = subprocess.run([sys.executable, COREDUMP] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **dict({"timeout": 600}, **kw))
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture(scope="session")
def cores(fixtures_dir, tmp_path_factory):
    """Cores made once per session from each fixture (name -> out dir)."""
    made = {}

    def get(name):
        if name not in made:
            fx = fixtures_dir(name)
            out = str(tmp_path_factory.mktemp("out-" + name.replace("/", "-")))
            run_coredump("-i", os.path.join(fx, "images"), "-o", out,
                         "--root", os.path.join(fx, "root"), check=0)
            made[name] = out
        return made[name]
    return get


@pytest.fixture(scope="session")
def plain_core_pattern():
    """The kernel writes cores as 'core' in the crashing process's cwd."""
    from .helpers.kernelcore import plain_core_pattern as plain
    with plain():
        yield


def gdbcheck(fixture, core):
    need("gdb")
    return subprocess.run([sys.executable, GDBCHECK, fixture, core, "--show"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def real_criu_status():
    """(collect, why) for tests/test_real_criu.py, which checkpoints live
    processes with the real CRIU: collected where CRIU 4.0 or later is
    installed, we are root and `criu check` says the kernel allows it
    (Debian 12's criu 3.17 cannot checkpoint on today's kernels), and always
    where CCD_REAL_CRIU=1 requires them: there a CRIU that cannot run fails
    the tests, loudly."""
    required = os.environ.get("CCD_REAL_CRIU") == "1"
    criu = shutil.which("criu")
    version = None
    if criu:
        out = subprocess.run([criu, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True).stdout
        m = re.search(r"Version: (\d+)\.(\d+)(?:\.(\d+))?", out)
        if m:
            version = tuple(int(x or 0) for x in m.groups())
    have = "criu %s" % ".".join(map(str, version)) if version else "no criu"
    if required:
        return True, "required (CCD_REAL_CRIU=1), %s" % have
    if version is None or version < (4, 0):
        return False, "%s: needs CRIU 4.0 or later, not collected" % have
    if os.geteuid() != 0:
        return False, "%s: needs root, not collected" % have
    check = subprocess.run([criu, "check"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    if check.returncode != 0:
        last = (check.stdout.strip().splitlines() or ["?"])[-1]
        return False, "%s: `criu check` fails (%s), not collected" % (have, last)
    return True, have + ", criu check: ok"


REAL_CRIU = real_criu_status()
collect_ignore = [] if REAL_CRIU[0] else ["test_real_criu.py"]


def pytest_report_header(config):
    return "real CRIU tests (tests/test_real_criu.py): %s" % REAL_CRIU[1]
