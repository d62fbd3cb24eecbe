"""Where things are: the repository, the real fixtures, the command.

The fixtures live in ../shared/fixtures (beside the repository, as CI lays
them out); CCD_FIXTURES overrides that.  Copies of shared/ may have turned
the root filesystems' symlinks (lib -> usr/lib) into small regular files that
hold the link target; `fixture_copy()` makes a private copy with those links
restored, so gdb's sysroot resolves as it did on the machine that made them.
"""
import os
import shutil

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.environ.get("CCD_FIXTURES",
                          os.path.join(os.path.dirname(REPO), "shared", "fixtures"))
GDBCHECK = os.path.join(os.path.dirname(FIXTURES), "tools", "gdbcheck.py")
COREDUMP = os.path.join(REPO, "bin", "coredump")
PROGS = os.path.join(REPO, "tests", "progs")

FIRST_PID = {"threads": 13466, "stopped_static": 13508, "tree": 13544,
             "shmem": 13585}

DEBUG_FILES = os.path.join(REPO, "examples", "threads", "root", "usr", "lib",
                           "debug", ".build-id")


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


_cache = {}


def fixture_copy(name, base):
    """A private, writable copy of a fixture with its symlinks restored
    (made once per base directory)."""
    if (name, base) not in _cache:
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
        _cache[(name, base)] = dst
    return _cache[(name, base)]


def fixture_exe(fixture):
    """The fixture's program, below its root."""
    root = os.path.join(fixture, "root")
    return next(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f == "prog")
