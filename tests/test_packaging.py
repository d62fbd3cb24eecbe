"""`pip install .` as a user runs it, into fresh virtual environments:

* made from the distribution's python with --system-site-packages (where
  Debian's pycriu is): the `coredump` command works, writes the same core as
  bin/coredump, and the man page is installed;
* made without them (pycriu not importable): `coredump --version` works and a
  conversion says which distribution package to install, exit 2, no traceback.

pip fetches the build backend and tqdm from the package index when they are
not already on the machine (scripts/setup.sh installs Debian's python3-tqdm).
"""
import os
import shutil
import subprocess

import pytest

from criu_coredump import __version__

from .helpers.paths import REPO

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's pycriu is built for


def _source_copy(dst):
    """The repository without its venv, git metadata or build output, so
    that `pip install .` neither sees nor leaves anything in the work tree."""
    shutil.copytree(REPO, dst, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__",
        ".pytest_cache", "out"))
    return dst


def _venv(path, src, system_site):
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.fail("%s is missing: run scripts/setup.sh" % SYSTEM_PYTHON)
    cmd = [SYSTEM_PYTHON, "-m", "venv", str(path)]
    if system_site:
        cmd.insert(3, "--system-site-packages")
    subprocess.run(cmd, check=True)
    p = subprocess.run([os.path.join(str(path), "bin", "pip"), "install", "-q",
                        "--disable-pip-version-check", "."], cwd=src,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=900)
    assert p.returncode == 0, p.stdout
    return os.path.join(str(path), "bin", "coredump")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("pip")
    src = _source_copy(str(base / "src"))
    return {"with_pycriu": _venv(base / "venv-system", src, True),
            "without_pycriu": _venv(base / "venv-bare", src, False)}


def _run(exe, *args):
    return subprocess.run([exe] + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=600,
                          cwd=os.path.dirname(exe))


def test_installed_command_converts(installed, fixtures_dir, cores, tmp_path):
    exe = installed["with_pycriu"]
    p = _run(exe, "--version")
    assert (p.returncode, p.stdout) == (0, "coredump %s\n" % __version__)
    fx = fixtures_dir("stopped_static")
    p = _run(exe, "-i", os.path.join(fx, "images"), "-o", tmp_path,
             "--root", os.path.join(fx, "root"))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(os.path.join(str(tmp_path), "core.13508") + ": pid 13508")
    with open(os.path.join(str(tmp_path), "core.13508"), "rb") as a, \
            open(os.path.join(cores("stopped_static"), "core.13508"), "rb") as b:
        assert a.read() == b.read()


def test_man_page_is_installed(installed):
    prefix = os.path.dirname(os.path.dirname(installed["with_pycriu"]))
    with open(os.path.join(prefix, "share", "man", "man1", "coredump.1")) as a, \
            open(os.path.join(REPO, "doc", "coredump.1")) as b:
        assert a.read() == b.read()


def test_without_pycriu_the_message_names_the_package(installed, fixtures_dir, tmp_path):
    exe = installed["without_pycriu"]
    p = _run(exe, "--version")  # needs nothing from the distribution
    assert (p.returncode, p.stdout) == (0, "coredump %s\n" % __version__)
    fx = fixtures_dir("stopped_static")
    for args in (["-o", tmp_path], ["--list"]):
        p = _run(exe, "-i", os.path.join(fx, "images"), *args)
        assert p.returncode == 2, p.stderr
        assert p.stdout == ""
        assert p.stderr == (
            "coredump: error: pycriu is not importable: install the distribution "
            "package that ships it ('python3-pycriu' on Debian 13+, 'criu' on "
            "Debian 12/Ubuntu, 'python3-criu' on Fedora)\n")
    assert os.listdir(tmp_path) == []
