"""Binaries not at hand, fetched by build-id from a real debuginfod server
(Debian's `debuginfod -F DIR`) on the loopback, serving the Podman
fixture's binaries; the checkpoint converted without --root.

Asserted as a user sees it: gdb's answers (gdbcheck against the gcore of the
same moment), the warnings and exit codes when a server is wrong, down or
silent, and the cache reused when the server is gone.
"""
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from .helpers.paths import FIXTURES
from .helpers.tools import gdbcheck, need, run_coredump
from .helpers import archives as A

pytestmark = pytest.mark.slow
PODMAN = os.path.join(FIXTURES, "podman")
ARCHIVE = os.path.join(PODMAN, "victim.tar")
PROG_ID = "7564bb69244c539535c40444bbdc53b255005d03"
BINARIES = ("opt/victim/prog", "usr/lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def podman_fx(tmp_path_factory):
    return A.podman_fixture(tmp_path_factory.mktemp("podman-fx"))


class Server:
    """debuginfod -F over a directory of the fixture's binaries."""

    def __init__(self, fx, tmp):
        need("debuginfod")
        self.dir = tmp / "served"
        self.dir.mkdir()
        for b in BINARIES:
            shutil.copy(os.path.join(fx, "root", b), self.dir)
        self.port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.log = open(tmp / "debuginfod.log", "wb")
        self.proc = subprocess.Popen(
            ["debuginfod", "-F", "-p", str(self.port), "-d", str(tmp / "db.sqlite"),
             "-t", "0", "-g", "0", "-c", "1", "--disable-source-scan", str(self.dir)],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:  # ready once it has scanned the directory
            try:
                with urllib.request.urlopen("%s/buildid/%s/executable"
                                            % (self.url, PROG_ID), timeout=5):
                    break
            except Exception:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    pytest.fail("debuginfod did not start serving")
                time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def server(podman_fx, tmp_path):
    s = Server(podman_fx, tmp_path)
    yield s
    s.stop()


def _env(tmp_path, **kw):
    env = dict(os.environ, DEBUGINFOD_CACHE_PATH=str(tmp_path / "cache"))
    env.pop("DEBUGINFOD_URLS", None)
    env.update(kw)
    return env


def _out(tmp_path, name="out"):
    d = tmp_path / name
    d.mkdir()
    return d


def test_no_root_with_debuginfod_gives_the_same_gdb_answers(server, podman_fx, tmp_path):
    out = _out(tmp_path)
    p = run_coredump("-i", ARCHIVE, "-o", out, "--debuginfod", server.url,
                     env=_env(tmp_path), check=0)
    assert "no warnings" in p.stdout
    assert gdbcheck(podman_fx, str(out / "core.1")).returncode == 0
    # the cache is elfutils' layout, each file the recorded build
    assert os.path.getsize(tmp_path / "cache" / PROG_ID / "executable") == \
        os.path.getsize(os.path.join(podman_fx, "root", "opt/victim/prog"))


def test_debuginfod_urls_alone_turns_it_on_and_cache_is_reused(server, podman_fx, tmp_path):
    out = _out(tmp_path)
    env = _env(tmp_path, DEBUGINFOD_URLS=server.url)
    run_coredump("-q", "-i", ARCHIVE + ".zst", "-o", out, env=env, check=0)
    server.stop()
    again = _out(tmp_path, "again")
    p = run_coredump("-i", ARCHIVE, "-o", again, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert gdbcheck(podman_fx, str(again / "core.1")).returncode == 0


def test_list_json_gives_mapped_elf_files(tmp_path):
    j = json.loads(run_coredump("-i", ARCHIVE, "--list", "--json", check=0).stdout)
    files = j["processes"][0]["mapped_elf_files"]
    assert files[0] == {"path": "/opt/victim/prog", "build_id": PROG_ID}
    assert [f["path"] for f in files[1:]] == [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"]


def test_gdb_with_debuginfod_loads_the_fetched_files(server, tmp_path):
    need("gdb")
    p = run_coredump("-i", ARCHIVE, "--debuginfod", server.url, "--gdb", "1", "--",
                     "-batch", "-ex", "info sharedlibrary", "-ex", "bt",
                     env=_env(tmp_path))
    assert p.returncode == 0, p.stderr
    cache = str(tmp_path / "cache")
    libs = [l for l in p.stdout.splitlines() if ".so" in l or "/executable" in l]
    assert sum(1 for l in libs if "Yes" in l and cache in l) == 2, p.stdout
    # frame 0 by libc's symbols (gdb 13 names the alias __libc_pause, later
    # ones pause): libc was loaded, from the fetched file
    assert re.search(r"^#0  0x[0-9a-f]+ in (__libc_)?pause \(\)", p.stdout, re.M), p.stdout
    assert "deep_wait (depth=2, marker=42)" in p.stdout


class _Wrong(http.server.BaseHTTPRequestHandler):
    """Serves /bin/true whatever build-id is asked for."""

    def do_GET(self):
        data = open("/bin/true", "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_a_wrong_file_served_is_refused(tmp_path):
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Wrong)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = "http://127.0.0.1:%d" % srv.server_port
        out = _out(tmp_path)
        p = run_coredump("-i", ARCHIVE, "-o", out, "--debuginfod", url,
                         env=_env(tmp_path), check=3)
    finally:
        srv.shutdown()
    assert "%s/buildid/%s/executable: the server sent a file that is not of " \
        "build-id %s: refused" % (url, PROG_ID, PROG_ID) in p.stderr
    assert "/opt/victim/prog: cannot read mapped file" in p.stderr
    assert not os.path.exists(tmp_path / "cache" / PROG_ID / "executable")
    assert os.listdir(tmp_path / "cache" / PROG_ID) == []  # no half file either


def test_server_down_warns_and_leaves_holes(tmp_path):
    url = "http://127.0.0.1:%d" % _free_port()   # nothing listens there
    out = _out(tmp_path)
    p = run_coredump("-i", ARCHIVE, "-o", out, "--debuginfod", url,
                     env=_env(tmp_path), check=3)
    assert p.stderr.count("debuginfod server not reachable") == 1
    assert "/opt/victim/prog: cannot read mapped file" in p.stderr
    assert os.path.exists(out / "core.1")


def test_server_never_answering_times_out(tmp_path):
    """A server that accepts and says nothing: DEBUGINFOD_TIMEOUT bounds the
    wait, the run goes on with holes."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)          # connections complete in the backlog, never answered
    try:
        url = "http://127.0.0.1:%d" % s.getsockname()[1]
        out = _out(tmp_path)
        t0 = time.time()
        p = run_coredump("-i", ARCHIVE, "-o", out, "--debuginfod", url,
                         env=_env(tmp_path, DEBUGINFOD_TIMEOUT="2"), check=3)
        assert time.time() - t0 < 30
    finally:
        s.close()
    assert "debuginfod server not reachable (timed out)" in p.stderr
    assert os.path.exists(out / "core.1")


def test_debuginfod_without_servers_is_a_usage_error(tmp_path):
    p = run_coredump("-i", ARCHIVE, "-o", _out(tmp_path), "--debuginfod",
                     env=_env(tmp_path), check=1)
    assert p.stderr == "coredump: error: --debuginfod: no server: give URLS or set " \
                       "DEBUGINFOD_URLS\n"


def test_maxsize_bounds_what_is_fetched(server, tmp_path):
    out = _out(tmp_path)
    p = run_coredump("-i", ARCHIVE, "-o", out, "--debuginfod", server.url,
                     env=_env(tmp_path, DEBUGINFOD_MAXSIZE="1000"), check=3)
    assert "%s/buildid/%s/executable: " % (server.url, PROG_ID) in p.stderr
    assert "more than DEBUGINFOD_MAXSIZE" in p.stderr
    assert not os.path.exists(tmp_path / "cache" / PROG_ID / "executable")
