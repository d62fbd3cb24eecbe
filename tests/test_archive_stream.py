"""A compressed checkpoint archive's pages are read from the archive again
(criu_coredump/archive_stream.py), never copied to a temporary file in the
common case; whatever the order of the members, the cores are the bytes the
same checkpoint gives as a directory."""
import glob
import gzip
import io
import lzma
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from .helpers import synth
from .helpers.paths import COREDUMP
from .helpers.tools import run_coredump, signals_at_default

pytestmark = pytest.mark.slow
P = synth.PAGE
SHM = 77


def _checkpoint(d):
    """Three processes: private pages in several runs, a shared-memory
    object mapped by two of them between their private mappings (so a core
    reads two pages images in turn), a command line on the stack, and a pc
    in anonymous memory (read by the syscall-restart check)."""
    ck = synth.Checkpoint(d)
    ck.shmem_pages(SHM, 0, synth.page_pattern(0x50000000, 64))
    for i, pid in enumerate((100, 101, 102)):
        p = ck.process(pid, ppid=0 if i == 0 else 100, comm="p%d" % i)
        base = 0x10000000 + i * 0x1000000
        p.vma(base, base + 256 * P).pages(base, nr_pages=200 + 20 * i)
        jit = 0x20000000 + i * 0x100000
        p.vma(jit, jit + 4 * P, prot=synth.RWX).pages(jit, nr_pages=4)
        p.regs = {"ip": jit + 0x100}
        if i < 2:
            p.vma(0x50000000, 0x50000000 + 64 * P, kind="anon_shared", shmid=SHM)
        top = 0x7ff000000000 + i * 0x1000000
        p.vma(top, top + 128 * P).pages(top, nr_pages=128)
        stack = top + 128 * P
        p.vma(stack, stack + 8 * P)
        cmd = b"prog-%d --flag\0arg\0" % pid
        page = bytearray(synth.page_pattern(stack + 7 * P, 1))
        page[:len(cmd)] = cmd
        p.pages(stack + 7 * P, bytes(page))
        p.cmdline(stack + 7 * P, stack + 7 * P + len(cmd))
    return ck.write()


def _tar(src, names, compress, prefix=""):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for n in names:
            t.add(os.path.join(src, n), arcname=prefix + n, recursive=False)
    raw = buf.getvalue()
    if compress == "zstd":
        import zstandard
        return zstandard.ZstdCompressor(level=1).compress(raw)
    if compress == "xz":
        return lzma.compress(raw, preset=0)
    return gzip.compress(raw, compresslevel=1)


def _orders(names):
    pages = sorted(n for n in names if n.startswith("pages-"))
    rest = sorted(n for n in names if not n.startswith("pages-"))
    return {
        # Podman's: the pages before pstree.img, in name order
        "podman": sorted(names),
        # the last process's pages first, shared memory's between
        "reversed": sorted(names, reverse=True),
        # pages last, the shared memory's pages first
        "pages-last": rest + pages[::-1],
    }


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("stream")
    src = _checkpoint(str(d / "ck"))
    ref = d / "ref"
    ref.mkdir()
    run_coredump("-q", "-j", "1", "-i", src, "-o", ref, check=0)
    return src, {n: (ref / n).read_bytes() for n in os.listdir(ref)}


def _cores(out):
    return {n: (out / n).read_bytes() for n in os.listdir(out)}


@pytest.mark.parametrize("order", ["podman", "reversed", "pages-last"])
@pytest.mark.parametrize("compress", ["zstd", "gzip"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_cores_are_the_directory_s(ckpt, tmp_path, order, compress, jobs):
    src, ref = ckpt
    assert sorted(ref) == ["core.100", "core.101", "core.102"]
    names = _orders(os.listdir(src))[order]
    arc = tmp_path / ("ck.tar." + compress)
    arc.write_bytes(_tar(src, names, compress, prefix="ck/"))
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-q", "-j", jobs, "-i", arc, "-o", out, check=0)
    assert p.stderr == ""
    assert _cores(out) == ref
    assert not [n for n in os.listdir(out) if n.startswith(".coredump")]


def test_xz_pages_are_unpacked_and_give_the_same_cores(ckpt, tmp_path):
    """xz (and bzip2) decompress too slowly for a second pass: their pages
    are unpacked with the small images, as before; the same cores."""
    src, ref = ckpt
    arc = tmp_path / "ck.tar.xz"
    arc.write_bytes(_tar(src, _orders(os.listdir(src))["reversed"], "xz"))
    out = tmp_path / "out"
    out.mkdir()
    run_coredump("-q", "-i", arc, "-o", out, check=0)
    assert _cores(out) == ref


def _stream_run(monkeypatch, arc, out, pids=()):
    """Convert in this process; returns the streams' stats and the bytes
    the private directory had allocated when the Input was closed."""
    from criu_coredump import archive_stream, cli, container
    seen = {"stats": [], "allocated": 0, "sparse": []}
    close = container.Input.close

    def spy(self):
        if self.tmp:
            for d, _, files in os.walk(self.tmp):
                for f in files:
                    st = os.lstat(os.path.join(d, f))
                    seen["allocated"] += st.st_blocks * 512
                    if f.startswith("pages-"):
                        seen["sparse"].append((f, st.st_size, st.st_blocks))
        seen["stats"] += [dict(s.stats) for s in self.streams]
        close(self)
    monkeypatch.setattr(container.Input, "close", spy)
    args = ["-q", "-j", "1", "-i", str(arc), "-o", str(out)]
    for pid in pids:
        args += ["--pid", str(pid)]
    out.mkdir()
    assert cli.main(args) == 0
    return seen, archive_stream


def test_no_temporary_copy_of_the_pages(ckpt, tmp_path, monkeypatch):
    """The private directory holds the pages images sized and empty; every
    core is read from the stream: one pass for the small reads of all
    processes, then the cores (a restart where a core goes back)."""
    src, ref = ckpt
    names = _orders(os.listdir(src))["podman"]
    arc = tmp_path / "ck.tar.zst"
    arc.write_bytes(_tar(src, names, "zstd"))
    pages = sum(os.path.getsize(os.path.join(src, n)) for n in names
                if n.startswith("pages-"))
    seen, _ = _stream_run(monkeypatch, arc, tmp_path / "out")
    assert _cores(tmp_path / "out") == ref
    assert sorted(f for f, _, _ in seen["sparse"]) == \
        sorted(n for n in names if n.startswith("pages-"))
    assert all(size > 0 and blocks == 0 for _, size, blocks in seen["sparse"])
    assert seen["allocated"] < pages // 4
    st, = seen["stats"]
    assert st["copied_out"] == 0
    assert 2 <= st["passes"] <= 1 + 3 * 2


def test_a_member_read_backwards_too_often_is_copied_out(ckpt, tmp_path,
                                                         monkeypatch):
    """Correctness never depends on the order: with no restart allowed,
    what is read backwards is copied into the private directory once and
    read there; the cores are the same bytes."""
    src, ref = ckpt
    from criu_coredump import archive_stream
    monkeypatch.setattr(archive_stream, "MAX_RESTARTS", 0)
    monkeypatch.setattr(archive_stream, "SMALL", 0)  # no prefetch either
    names = _orders(os.listdir(src))["reversed"]
    arc = tmp_path / "ck.tar.gz"
    arc.write_bytes(_tar(src, names, "gzip"))
    seen, _ = _stream_run(monkeypatch, arc, tmp_path / "out")
    assert _cores(tmp_path / "out") == ref
    st, = seen["stats"]
    assert st["copied_out"] >= 1


def test_one_process_of_several(ckpt, tmp_path, monkeypatch):
    """--pid: one core, and only its small reads are prefetched (from its
    own pages image), not those of the processes left out."""
    src, ref = ckpt
    names = _orders(os.listdir(src))["pages-last"]
    arc = tmp_path / "ck.tar.zst"
    arc.write_bytes(_tar(src, names, "zstd"))
    from criu_coredump import archive_stream
    fetched = set()
    prefetch = archive_stream.PagesStream.prefetch

    def spy(self, wanted):
        fetched.update(m for m, _, _ in wanted)
        return prefetch(self, wanted)
    monkeypatch.setattr(archive_stream.PagesStream, "prefetch", spy)
    seen, _ = _stream_run(monkeypatch, arc, tmp_path / "out", pids=[101])
    assert _cores(tmp_path / "out") == {"core.101": ref["core.101"]}
    assert seen["stats"][0]["copied_out"] == 0
    pages = sorted(n for n in names if n.startswith("pages-"))
    assert len(pages) == 4  # three processes' and the shared memory's
    assert len(fetched) == 1, fetched


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_while_the_pages_stream_leaves_nothing(tmp_path, signum):
    """Interrupted while the core is written from the second decompression:
    the process dies of the signal, the unfinished core and the private
    directory are removed."""
    ck = synth.Checkpoint(str(tmp_path / "ck"))
    n = (512 << 20) // P
    p = ck.process(300)
    p.vma(0x10000000, 0x10000000 + n * P).pages(0x10000000, data=bytes(P))
    src = ck.write()
    # the pagemap names one page: make it name n, over n zero pages
    synth.write_pagemap(src, "pagemap-300.img", p.pages_id,
                        [(0x10000000, n, synth.PE_PRESENT, b"", False)], ck.fmt)
    os.truncate(os.path.join(src, "pages-%d.img" % p.pages_id), n * P)
    arc = tmp_path / "big.tar.zst"
    arc.write_bytes(_tar(src, sorted(os.listdir(src)), "zstd"))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, COREDUMP, "-q", "-i", str(arc),
                             "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=signals_at_default)
    deadline = time.time() + 60
    writing = False  # the core is being written from the stream
    while not writing and time.time() < deadline and proc.poll() is None:
        tmps = glob.glob(str(out / ".core.300.*.tmp"))
        try:
            writing = bool(tmps) and os.stat(tmps[0]).st_blocks > 0
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    assert writing
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert proc.returncode == -signum
    assert os.listdir(out) == []
