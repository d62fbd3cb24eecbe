"""The fast paths of issue 16 give the cores the slow paths gave:

* small chunks gathered into one read and one write (writer._Gather) make
  the same bytes as one kernel copy per chunk, as gdb reads them;
* --jobs forks its workers once, not once per process, and still writes
  the same cores;
* a run imports only the pycriu modules it reads (criupb), and none of
  the modules whose import was most of a small run's start-up: on an
  image directory, no archive code (container.py, archive.py and their
  decompressors, JSON), and of the arch modules only the arch it converts.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from criu_coredump import arch as arches
from criu_coredump import writer
from criu_coredump.convert import generate

from .helpers import synth
from .helpers.paths import COREDUMP
from .helpers.tools import convert, gdb_memory

pytestmark = pytest.mark.slow

P = synth.PAGE
BASE = 0x7f0000000000
PID = 4300


def scattered(path):
    """Chunks of every kind the writer sorts: one-page entries one page
    apart (gathered), entries 17 pages apart (a hole too long to fill), a
    20-page entry (a kernel copy) between single pages, and a second
    process sharing nothing."""
    ck = synth.Checkpoint(path)
    p = ck.process(PID, comm="scattered")
    p.vma(BASE, BASE + 600 * P)
    for i in range(300):
        p.pages(BASE + 2 * i * P, nr_pages=1)
    b = BASE + 1024 * P
    p.vma(b, b + 200 * P)
    for i in range(10):
        p.pages(b + 18 * i * P, nr_pages=1)
    c = BASE + 2048 * P
    p.vma(c, c + 64 * P)
    p.pages(c, nr_pages=1).pages(c + 2 * P, nr_pages=20).pages(c + 23 * P, nr_pages=1)
    ck.process(PID + 1, ppid=PID).vma(BASE, BASE + 4 * P).pages(BASE + P, nr_pages=2)
    return ck.write()


def test_gathered_pages_are_the_pages_of_one_copy_each(tmp_path, monkeypatch):
    images = scattered(tmp_path / "img")
    _, cores = convert(images, tmp_path / "gathered", "--jobs", "1")
    fd = os.open(str(tmp_path), os.O_RDONLY)
    here = writer._fs_type(fd)
    os.close(fd)
    # as on tmpfs: one read, the chunks written one by one, holes kept
    monkeypatch.setattr(writer, "_fs_type", lambda fd: "tmpfs")
    (tmp_path / "in-memory").mkdir()
    generate(images, str(tmp_path / "in-memory"))
    monkeypatch.setattr(writer, "GATHER_CHUNK", 0)  # a kernel copy per chunk
    (tmp_path / "one-each").mkdir()
    generate(images, str(tmp_path / "one-each"))
    for pid in (PID, PID + 1):
        name = "core.%d" % pid
        with open(cores[pid], "rb") as f:
            gathered = f.read()
        assert gathered == (tmp_path / "one-each" / name).read_bytes(), pid
        assert gathered == (tmp_path / "in-memory" / name).read_bytes(), pid
    # holes stay holes where the chunks are written one by one; elsewhere
    # the short ones between gathered chunks are written zeros
    kept = os.stat(tmp_path / "in-memory" / ("core.%d" % PID)).st_blocks
    if here in writer._IN_MEMORY:
        assert kept == os.stat(cores[PID]).st_blocks
    else:
        assert kept < os.stat(cores[PID]).st_blocks
    # and what gdb reads there: the pages, and zeros in the holes between
    pages = [BASE, BASE + P, BASE + 598 * P, BASE + 599 * P, BASE + 1024 * P,
             BASE + 1025 * P, BASE + 2048 * P + 2 * P, BASE + 2048 * P + 23 * P]
    got = gdb_memory(cores[PID], [(a, P) for a in pages], tmp_path / "gdb")
    for a, data in zip(pages, got):
        if (a - BASE) // P in (1, 599, 1025):
            assert data == bytes(P), hex(a)
        else:
            assert data == synth.page_pattern(a, 1), hex(a)


def test_jobs_fork_each_worker_once(tmp_path, monkeypatch):
    ck = synth.Checkpoint(tmp_path / "img")
    for i in range(6):
        ck.process(50 + i, ppid=0 if i == 0 else 50).vma(BASE, BASE + 4 * P) \
            .pages(BASE, nr_pages=2)
    images = ck.write()
    forks = []
    real_fork = os.fork

    def fork():
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", fork)
    (tmp_path / "j2").mkdir()
    results = generate(images, str(tmp_path / "j2"), jobs=2)
    assert len(forks) == 2, forks
    assert [r.pid for r in results] == [50 + i for i in range(6)]
    assert all(r.error is None and r.path for r in results)
    monkeypatch.setattr(os, "fork", real_fork)
    (tmp_path / "j1").mkdir()
    generate(images, str(tmp_path / "j1"), jobs=1)
    for i in range(6):
        name = "core.%d" % (50 + i)
        assert (tmp_path / "j1" / name).read_bytes() == (tmp_path / "j2" / name).read_bytes()


# bin/coredump run as a user runs it (not with runpy: its pkgutil imports
# typing), then the modules it imported (its exit, cli.exit_now, made an
# exception so that they are listed)
_MODULES = """
import os
import sys
out, sys.argv = sys.argv[1], sys.argv[2:]


def _exit(code):
    raise SystemExit(code)


os._exit = _exit
try:
    with open(sys.argv[0]) as f:
        code = compile(f.read(), sys.argv[0], "exec")
    exec(code, {"__name__": "__main__", "__file__": sys.argv[0]})
finally:
    with open(out, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
"""


def test_a_run_imports_only_what_it_reads(tmp_path):
    images = scattered(tmp_path / "img")
    out = tmp_path / "out"
    out.mkdir()
    listing = tmp_path / "modules.txt"
    p = subprocess.run([sys.executable, "-c", _MODULES, listing, COREDUMP, "-i",
                        images, "-o", out, "-q", "--jobs", "1"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(out)) == ["core.%d" % PID, "core.%d" % (PID + 1)]
    imported = set(listing.read_text().split())
    assert {"core_pb2", "mm_pb2", "pagemap_pb2", "pstree_pb2"} <= imported
    # What the standard library's own argparse and protobuf import on this
    # Python is not ours to avoid: Python 3.14's help formatter imports
    # _colorize, which imports dataclasses (and so inspect) as soon as an
    # option with a help text is added; sid's pure-Python protobuf imports
    # typing.  Elsewhere (Debian 12) neither does, and the check is whole.
    stdlib = subprocess.run([sys.executable, "-c", _ARGPARSE], check=True,
                            stdout=subprocess.PIPE, text=True).stdout.split()
    # pycriu's package (its RPC client, all ~70 message modules), a progress
    # bar nobody sees, and what dataclasses and tempfile bring
    for heavy in ("pycriu", "pycriu.images.pb", "pycriu.rpc_pb2", "netdev_pb2",
                  "tqdm", "dataclasses", "typing", "inspect", "tempfile",
                  "multiprocessing"):
        if heavy not in stdlib:
            assert heavy not in imported, heavy
    # and on every Python, debuginfod's client (urllib, http) only when asked
    for ours in ("criu_coredump.debuginfod", "criu_coredump.binaries"):
        assert ours not in imported, ours
    # an image directory is read as it is: the archive code (tar, gzip, xz,
    # bzip2, JSON) is not loaded
    for archive_code in ("criu_coredump.container", "criu_coredump.archive",
                         "criu_coredump.archive_stream", "bz2", "lzma", "json"):
        if archive_code not in stdlib:
            assert archive_code not in imported, archive_code
    # the processes are x86_64 ones: no other arch's module (registers,
    # message declarations, big-endian ELF structures) is loaded
    assert "criu_coredump.arch.x86_64" in imported
    others = {"criu_coredump.arch." + name for name in arches.NAMES} - {
        "criu_coredump.arch.x86_64"}
    assert others & imported == set()


# what the standard library and protobuf bring in themselves: argparse's
# help formatter's _colorize (Python 3.13 and later; it imports
# dataclasses), and the message machinery every *_pb2 module imports (the
# pure-Python protobuf of Debian sid imports typing there)
_ARGPARSE = """
import sys
try:
    import _colorize
except ImportError:
    pass
from google.protobuf import descriptor_pool, message, symbol_database
from google.protobuf.internal import builder
print("\\n".join(sorted(sys.modules)))
"""


def test_a_killed_workers_next_job_goes_to_another(tmp_path):
    """Four slow processes, two workers holding two jobs each: the worker
    killed in its first job loses that one only; the job waiting in its
    pipe is converted by a new worker."""
    ck = synth.Checkpoint(tmp_path / "img")
    stride = writer.GATHER_GAP // P + 2  # one kernel copy a page: slow
    for pid in (60, 61, 62, 63):
        p = ck.process(pid)
        p.vma(BASE, BASE + stride * 40000 * P)
        for i in range(40000):
            p.pages(BASE + stride * i * P, nr_pages=1)
    images = ck.write()
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, COREDUMP, "-i", images, "-o", out,
                             "--jobs", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len([f for f in os.listdir(out) if f.startswith(".core.60.")]) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
        workers = [int(x) for x in f.read().split()]
    writer_of_60 = int([f for f in os.listdir(out)
                        if f.startswith(".core.60.")][0].split(".")[3])
    assert writer_of_60 in workers
    os.kill(writer_of_60, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    assert err.splitlines() == ["coredump: error: %s: the conversion was killed by "
                                "SIGKILL; no core was written" % (out / "core.60")]
    assert sorted(os.listdir(out)) == ["core.61", "core.62", "core.63"]
