"""The session's shared fixtures: private fixture copies, their cores made
once, the kernel's core pattern, the real-CRIU gate.  Helpers the tests
call are in tests/helpers (paths, tools, synth, corefile, ...)."""
import os
import re
import shutil
import subprocess

import pytest

from .helpers.paths import fixture_copy
from .helpers.tools import run_coredump


@pytest.fixture(scope="session")
def fixtures_dir(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("fixtures"))
    return lambda name: fixture_copy(name, base)


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


@pytest.fixture(scope="module")
def kernel_core(tmp_path_factory, plain_core_pattern):
    """The kernel's core of a threaded test program, and what was seen live
    (helpers.kernelcore.crash_c2iprog)."""
    from .helpers.kernelcore import crash_c2iprog
    return crash_c2iprog(tmp_path_factory.mktemp("kcore"))


def real_criu_status():
    """(collect, why) for tests/test_real_criu*.py, which checkpoint live
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
collect_ignore = [] if REAL_CRIU[0] else ["test_real_criu.py", "test_real_criu_runtimes.py"]


def pytest_report_header(config):
    return "real CRIU tests (tests/test_real_criu*.py): %s" % REAL_CRIU[1]
