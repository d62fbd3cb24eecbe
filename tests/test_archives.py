"""Container checkpoint archives as -i: the real Podman archives (plain, gzip,
zstd), CRI-O/kubelet and containerd archives assembled from them at test
time (tests/helpers/archives.py says from which sources), and bad archives.

What a user sees is asserted: gdb's answers on the core (gdbcheck against
the gcore of the same moment), exit codes, the one error line, the listing,
and that nothing is left behind in OUTDIR or the temporary directory.
"""
import errno
import glob
import gzip
import json
import lzma
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest

from .helpers.paths import FIXTURES
from .helpers.tools import gdbcheck, need, run_coredump, signals_at_default
from .helpers import archives as A

pytestmark = pytest.mark.slow
PODMAN = os.path.join(FIXTURES, "podman")
ARCHIVES = ("victim.tar", "victim.tar.gz", "victim.tar.zst")


@pytest.fixture(scope="module")
def podman_fx(tmp_path_factory):
    return A.podman_fixture(tmp_path_factory.mktemp("podman-fx"))


@pytest.fixture(scope="module")
def members():
    return A.podman_members(os.path.join(PODMAN, "victim.tar"))


def _env(tmp_path):
    """TMPDIR of our own: what the run leaves there is seen."""
    t = tmp_path / "tmpdir"
    t.mkdir(exist_ok=True)
    return dict(os.environ, TMPDIR=str(t)), t


def _nothing_left(*dirs):
    for d in dirs:
        left = [n for n in os.listdir(d) if n.startswith(".coredump")]
        assert not left, (d, left)


@pytest.mark.parametrize("name", ARCHIVES)
def test_podman_archive_gdbcheck(name, podman_fx, tmp_path):
    """Done-when: coredump -i ARCHIVE -o OUT --root ROOTFS writes core.1 on
    which gdbcheck (against ref.core.xz) passes, exit 0."""
    out = tmp_path / "out"
    out.mkdir()
    env, tmpdir = _env(tmp_path)
    p = run_coredump("-i", os.path.join(PODMAN, name), "-o", out, "--root",
                     os.path.join(PODMAN, "image-rootfs.tar.gz"), env=env)
    assert p.returncode == 0, p.stderr
    assert "no warnings" in p.stdout
    assert sorted(os.listdir(out)) == ["core.1"]
    r = gdbcheck(podman_fx, str(out / "core.1"))
    assert r.returncode == 0, r.stdout
    _nothing_left(out, tmpdir)


def test_root_as_directory_gives_the_same_core(podman_fx, tmp_path):
    """--root as the unpacked directory, and the plain archive read in
    place, give the bytes the unpacked image directory gives."""
    ck = tmp_path / "ck"
    ck.mkdir()
    subprocess.run(["tar", "xf", os.path.join(PODMAN, "victim.tar"), "-C", str(ck)],
                   check=True)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    run_coredump("-q", "-i", ck / "checkpoint", "-o", tmp_path / "a", "--root",
                 os.path.join(podman_fx, "root"), check=0)
    run_coredump("-q", "-i", os.path.join(PODMAN, "victim.tar"), "-o",
                 tmp_path / "b", "--root", os.path.join(podman_fx, "root"), check=0)
    assert (tmp_path / "a" / "core.1").read_bytes() == \
        (tmp_path / "b" / "core.1").read_bytes()


def test_plain_archive_is_read_in_place(monkeypatch, tmp_path):
    """No temporary file of the pages' size: the private directory holds
    the small images only, the pages are copied from the archive."""
    from criu_coredump import cli, container
    seen = []
    close = container.Input.close

    def spy(self):
        if self.tmp:
            for d, _, files in os.walk(self.tmp):
                for f in files:
                    p = os.path.join(d, f)
                    if not os.path.islink(p):
                        st = os.stat(p)
                        seen.append((f, st.st_size, st.st_blocks))
        close(self)
    monkeypatch.setattr(container.Input, "close", spy)
    out = tmp_path / "out"
    out.mkdir()
    code = cli.main(["-q", "-i", os.path.join(PODMAN, "victim.tar"), "-o", str(out),
                     "--root", os.path.join(PODMAN, "image-rootfs.tar.gz")])
    assert code == 0
    pages = [m for m in A.podman_members(os.path.join(PODMAN, "victim.tar"))
             if m[0].name == "checkpoint/pages-1.img"][0][0].size
    names = [n for n, _, _ in seen]
    assert "pstree.img" in names and "libc.so.6" in names  # it was looked at
    assert not any(n.startswith("pages-") for n in names)
    ours = [s for n, s, _ in seen if n.endswith(".img")]
    assert max(ours) < pages
    # the compressed one has its pages image sized and empty: the pages are
    # read from the archive again (test_archive_stream.py)
    seen.clear()
    assert cli.main(["-q", "-i", os.path.join(PODMAN, "victim.tar.zst"), "-o",
                     str(out), "--root", os.path.join(PODMAN, "image-rootfs.tar.gz")]) == 0
    assert ("pages-1.img", pages, 0) in seen


def test_plain_archive_on_another_file_system(monkeypatch, tmp_path):
    """copy_file_range refuses two file systems of different types (EXDEV,
    Linux 5.19 and later): a plain archive on disk converted into a tmpfs
    OUTDIR (Debian 13's /tmp) was "Invalid cross-device link", exit 2.
    The kernel's refusal, made here for every copy, gives the same core
    as the copies the kernel makes."""
    from criu_coredump import cli
    refused = []

    def copy_file_range(src, dst, count, offset_src=None, offset_dst=None):
        refused.append(count)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
    argv = ["-q", "-i", os.path.join(PODMAN, "victim.tar"), "--root",
            os.path.join(PODMAN, "image-rootfs.tar.gz"), "-o"]
    for d in ("same", "other"):
        (tmp_path / d).mkdir()
    assert cli.main(argv + [str(tmp_path / "same")]) == 0
    monkeypatch.setattr(os, "copy_file_range", copy_file_range)
    assert cli.main(argv + [str(tmp_path / "other")]) == 0
    assert refused  # the small images' copies and the pages'
    assert (tmp_path / "same" / "core.1").read_bytes() == \
        (tmp_path / "other" / "core.1").read_bytes()
    _nothing_left(tmp_path / "other")


def test_list_and_json_show_the_container(tmp_path):
    p = run_coredump("-i", os.path.join(PODMAN, "victim.tar.zst"), "--list", check=0)
    first = p.stdout.splitlines()[0]
    assert first == ("container victim (podman), image localhost/ccd-victim:1, "
                     "runtime runc, checkpointed 2026-11-25T03:59:07Z")
    assert "prog" in p.stdout.splitlines()[2]
    j = json.loads(run_coredump("-i", os.path.join(PODMAN, "victim.tar"), "--list",
                                "--json", check=0).stdout)
    assert j["container"]["name"] == "victim"
    assert j["container"]["engine"] == "podman"
    assert j["container"]["created"] == "2026-11-25T03:59:06.779484372Z"
    assert j["processes"][0]["threads"] == 4
    out = tmp_path / "o"
    out.mkdir()
    j = json.loads(run_coredump("-i", os.path.join(PODMAN, "victim.tar.gz"), "-o", out,
                                "--json", check=3).stdout)
    # without --root the libraries are missing (warned, holes, exit 3) and
    # the warnings name files as the process saw them
    assert j["container"]["image"] == "localhost/ccd-victim:1"
    assert j["cores"][0]["warnings"][0] == (
        "/opt/victim/prog: cannot read mapped file (not in the container's "
        "changes, and no --root given); its pages are holes")


def test_gdb_on_an_archive(tmp_path):
    need("gdb")
    env, tmpdir = _env(tmp_path)
    p = run_coredump("-i", os.path.join(PODMAN, "victim.tar.zst"), "--root",
                     os.path.join(PODMAN, "image-rootfs.tar.gz"), "--gdb", "1", "--",
                     "-batch", "-ex", "p global_counter", "-ex", "thread apply all bt",
                     "-ex", "info sharedlibrary", env=env)
    assert p.returncode == 0, p.stderr
    assert "$1 = 4242003" in p.stdout
    assert p.stdout.count("deep_wait (depth=0") == 4
    libs = [l for l in p.stdout.splitlines() if "Yes" in l and ".so" in l]
    assert len(libs) == 2, p.stdout  # libc and the loader, both found
    _nothing_left(tmpdir)


def _crio(tmp_path, members, **kw):
    path = tmp_path / A.kubelet_name("counters", "default", "victim")
    A.write_tar(path, A.crio_entries(members, **kw))
    return path


def _converted_and_listed(podman_fx, path, tmp_path):
    """Convert an archive of the Podman fixture's container with the image
    root as --root: gdb says on core.1 what it says on the gcore.  Returns
    what --list --json says of the archive."""
    out = tmp_path / "out"
    out.mkdir()
    run_coredump("-q", "-i", path, "-o", out, "--root",
                 os.path.join(PODMAN, "image-rootfs.tar.gz"), check=0)
    assert gdbcheck(podman_fx, str(out / "core.1")).returncode == 0
    return json.loads(run_coredump("-i", path, "--list", "--json", check=0).stdout)


def test_crio_kubelet_archive(podman_fx, members, tmp_path):
    path = _crio(tmp_path, members)
    j = _converted_and_listed(podman_fx, path, tmp_path)
    assert j["container"] == {
        "engine": "cri-o", "name": "victim", "id": "0123456789abcdef" * 4,
        "image": "localhost/ccd-victim:1", "runtime": "runc", "pod": "counters",
        "namespace": "default", "created": "2026-11-25T03:59:06.779484372Z",
        "checkpointed": "2026-11-25T04:10:00Z"}
    p = run_coredump("-i", path, "--list", check=0)
    assert p.stdout.splitlines()[0].startswith(
        "container victim (cri-o), pod default/counters, image localhost/ccd-victim:1")


def test_deleted_files_hide_the_image_root(members, tmp_path):
    """deleted.files: what the container removed is not read from --root."""
    path = _crio(tmp_path, members, deleted=["/usr/lib/x86_64-linux-gnu/libc.so.6"])
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-q", "-i", path, "-o", out, "--root",
                     os.path.join(PODMAN, "image-rootfs.tar.gz"), check=3)
    assert "libc.so.6: cannot read mapped file (deleted in the container" in p.stderr
    assert str(tmp_path) not in p.stderr.replace(str(path), "ARCHIVE")


@pytest.mark.parametrize("how", ["several", "pod", "kubelet"])
def test_several_containers_are_refused_naming_them(members, tmp_path, how):
    """A kubelet-named tar with several containers' worth of metadata."""
    one = A.crio_entries(members, container="victim")
    two = A.crio_entries(members, container="sidecar")
    if how == "several":
        entries = [(("victim/" + n) if isinstance(n, str) else _moved(n, "victim/"), d)
                   for n, d in one] + \
                  [(("sidecar/" + n) if isinstance(n, str) else _moved(n, "sidecar/"), d)
                   for n, d in two]
    elif how == "pod":
        entries = [("pod.options", json.dumps({"version": 1, "containers":
                                               ["victim", "sidecar"]}).encode()),
                   ("pod.dump", b"{}")]
    else:
        entries = [("checkpointed.pods", json.dumps({"version": 1, "CheckpointedPods": [
            {"io.kubernetes.pod.name": "counters", "Containers": [
                {"io.kubernetes.container.name": "victim"},
                {"io.kubernetes.container.name": "sidecar"}]}]}).encode())]
    path = tmp_path / A.kubelet_name("counters", "default", "victim")
    A.write_tar(path, entries)
    out = tmp_path / "out"
    out.mkdir()
    env, tmpdir = _env(tmp_path)
    p = run_coredump("-i", path, "-o", out, env=env, check=2)
    line, = p.stderr.splitlines()
    assert line.startswith("coredump: error: %s: " % path)
    assert "holds 2 containers" in line
    assert "victim" in line and "sidecar" in line
    assert os.listdir(out) == []
    _nothing_left(tmpdir)


def _moved(ti, prefix):
    c = tarfile.TarInfo(prefix + ti.name)
    c.size, c.mode, c.mtime, c.type = ti.size, ti.mode, ti.mtime, ti.type
    return c


@pytest.mark.parametrize("compress", [None, "zst"])
def test_containerd_oci_layout(podman_fx, members, tmp_path, compress):
    """ctr checkpoint + ctr image export; the CRIU layer found by media type,
    its rw layer (tar+gzip) laid over --root."""
    path = tmp_path / "victim-checkpoint.tar"
    A.write_tar(path, A.containerd_entries(members))
    if compress:
        subprocess.run(["zstd", "-q", "--rm", str(path)], check=True)
        path = tmp_path / "victim-checkpoint.tar.zst"
    j = _converted_and_listed(podman_fx, path, tmp_path)
    assert j["container"]["engine"] == "containerd"
    assert j["container"]["name"] == "victim"
    assert j["container"]["image"] == "localhost/ccd-victim:1"
    assert j["container"]["runtime"] == "io.containerd.runc.v2"
    assert j["container"]["checkpointed"] == "2026-11-25T04:10:00Z"


def test_containerd_rw_layer_alone_holds_the_files(podman_fx, members, tmp_path):
    """No --root: the container's changes (here the whole image root, as a
    container that installed its program writes it) are where the mapped
    files are read from."""
    rootfs = gzip.decompress(open(os.path.join(PODMAN, "image-rootfs.tar.gz"), "rb").read())
    path = tmp_path / "c.tar"
    A.write_tar(path, A.containerd_entries(members, rw_tar=rootfs))
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", path, "-o", out, check=0)
    assert "no warnings" in p.stdout
    assert gdbcheck(podman_fx, str(out / "core.1")).returncode == 0


def test_any_encoding_is_protobufs():
    from google.protobuf import any_pb2
    a = any_pb2.Any(type_url="t/u", value=b"{\"x\": 1}")
    assert A._any("t/u", b"{\"x\": 1}") == a.SerializeToString()


# -- bad archives ---------------------------------------------------------------

def _bad_cases(tmp_path, members):
    real = open(os.path.join(PODMAN, "victim.tar"), "rb").read()
    gz = open(os.path.join(PODMAN, "victim.tar.gz"), "rb").read()
    zst = open(os.path.join(PODMAN, "victim.tar.zst"), "rb").read()
    cases = {}

    def put(name, data, what):
        p = tmp_path / name
        p.write_bytes(data)
        cases[name] = (p, what)
    put("cut.tar", real[:len(real) // 2], "truncated")
    put("cut-header.tar", real[:-1024 - 300], "truncated")
    put("cut.tar.gz", gz[:len(gz) // 2], "truncated")
    put("cut.tar.zst", zst[:len(zst) // 2], "truncated")
    put("corrupt.tar.gz", gz[:100] + bytes(200) + gz[300:], "corrupt gzip")
    put("notar.gz", gzip.compress(b"hello " * 1000), "corrupt tar header")
    put("x.tar.lz4", b"\x04\x22\x4d\x18" + bytes(100), "lz4-compressed")
    z = tmp_path / "zipped"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("checkpoint/pstree.img", b"x")
    put("x.zip", z.read_bytes(), "a zip archive")
    put("garbage", os.urandom(4096), "neither an image directory nor a checkpoint")
    put("x.tar.xz", lzma.compress(real[:len(real) // 2]), "truncated")
    for name, member, what in (("dotdot.tar", "../evil", "goes up with '..'"),
                               ("abs.tar", "/etc/evil", "absolute name")):
        p = tmp_path / name
        with open(p, "wb") as f:
            ti = tarfile.TarInfo("x")
            ti.size = 3
            buf = ti.tobuf(tarfile.USTAR_FORMAT)
            # the name field written as given (tarfile's writer would not)
            buf = member.encode().ljust(100, b"\0") + buf[100:]
            chk = sum(buf[:148]) + 256 + sum(buf[156:512])
            buf = buf[:148] + ("%06o\0 " % chk).encode() + buf[156:]
            f.write(buf + b"abc".ljust(512, b"\0") + bytes(1024))
        cases[name] = (p, what)
    link = tarfile.TarInfo("checkpoint/core-1.img")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/shadow"
    p = tmp_path / "symlink-out.tar"
    A.write_tar(p, [(ti, d) for ti, d in members if ti.name != "checkpoint/core-1.img"]
                + [(link, None)])
    cases["symlink-out.tar"] = (p, "points out of the archive")
    p = tmp_path / "diff-symlink.tar"
    diff = tmp_path / "diff.tar"
    l2 = tarfile.TarInfo("usr")
    l2.type = tarfile.SYMTYPE
    l2.linkname = "/tmp"
    A.write_tar(diff, [(l2, None), ("usr/evil", b"x")])
    A.write_tar(p, [(ti, d) if ti.name != "rootfs-diff.tar" else (ti.name, diff.read_bytes())
                    for ti, d in members])
    cases["diff-symlink.tar"] = (p, "goes through a symlink")
    nock = tmp_path / "nock.tar"
    A.write_tar(nock, [("README", b"hello")])
    cases["nock.tar"] = (nock, "no CRIU checkpoint in this archive")
    return cases


def _sparse_bomb(tmp_path, fmt):
    d = tmp_path / ("bomb-" + fmt)
    d.mkdir()
    with open(d / "pages-1.img", "wb") as f:
        f.truncate(1 << 40)  # 1 TiB of holes
    p = tmp_path / ("bomb-%s.tar" % fmt)
    subprocess.run(["tar", "--sparse", "--format=" + fmt, "-cf", str(p), "-C", str(d),
                    "pages-1.img"], check=True)
    os.unlink(d / "pages-1.img")
    assert os.path.getsize(p) < 1 << 20
    return p


@pytest.fixture(scope="module")
def bad(tmp_path_factory, members):
    t = tmp_path_factory.mktemp("bad")
    cases = _bad_cases(t, members)
    for fmt in ("gnu", "posix"):
        cases["bomb-" + fmt] = (_sparse_bomb(t, fmt), "sparse member")
    return cases


BAD = ["cut.tar", "cut-header.tar", "cut.tar.gz", "cut.tar.zst", "corrupt.tar.gz",
       "notar.gz", "x.tar.lz4", "x.zip", "garbage", "x.tar.xz", "dotdot.tar",
       "abs.tar", "symlink-out.tar", "diff-symlink.tar", "nock.tar", "bomb-gnu",
       "bomb-posix"]


@pytest.mark.parametrize("name", BAD)
def test_bad_archive_one_line_exit_2_nothing_left(bad, name, tmp_path):
    path, what = bad[name]
    out = tmp_path / "out"
    out.mkdir()
    env, tmpdir = _env(tmp_path)
    for args in (["-o", out], ["--list"]):
        p = run_coredump("-i", path, *args, "--root",
                         os.path.join(PODMAN, "image-rootfs.tar.gz"), env=env)
        assert p.returncode == 2, (p.returncode, p.stderr)
        line, = p.stderr.splitlines()
        assert line.startswith("coredump: error: %s" % path), line
        assert what in line, line
        assert "Traceback" not in p.stderr
    assert os.listdir(out) == []
    assert os.listdir(tmpdir) == []


def test_root_tar_checked_like_any_archive(tmp_path):
    root = tmp_path / "root.tar"
    with open(root, "wb") as f:
        f.write(b"\x04\x22\x4d\x18" + bytes(100))
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", os.path.join(PODMAN, "victim.tar"), "-o", out, "--root",
                     root, check=2)
    assert p.stderr == "coredump: error: %s: lz4-compressed: decompress it first " \
                       "(lz4 -d)\n" % root
    assert os.listdir(out) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_while_streaming_leaves_nothing(members, tmp_path, signum):
    """A big compressed archive interrupted while it is unpacked: the
    private directory in OUTDIR is removed, the process dies of the signal."""
    import zstandard
    path = tmp_path / "big.tar.zst"
    ti = tarfile.TarInfo("checkpoint/zz-padding.img")
    ti.size = 1 << 30
    with open(path, "wb") as raw:
        with zstandard.ZstdCompressor(level=1).stream_writer(raw) as z:
            with tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as t:
                for m, d in members:
                    t.addfile(m, io_bytes(d))
                t.addfile(ti, _Zeros(ti.size))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), "bin", "coredump"), "-i", str(path),
        "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=signals_at_default)
    deadline = time.time() + 60
    while time.time() < deadline and not glob.glob(str(out / ".coredump-archive-*/x/checkpoint/zz*")):
        time.sleep(0.005)
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert proc.returncode == -signum
    assert os.listdir(out) == []


def io_bytes(d):
    import io
    return io.BytesIO(d) if d is not None else None


class _Zeros:
    def __init__(self, n):
        self.n = n

    def read(self, k=-1):
        k = self.n if k < 0 else min(k, self.n)
        self.n -= k
        return bytes(k)


# -- the tar reader against other writers --------------------------------------

@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT,
                                 tarfile.PAX_FORMAT])
def test_reader_names_and_offsets_as_tarfile_writes_them(tmp_path, fmt):
    """Long names (ustar prefix, GNU 'L', pax path), symlinks and data
    offsets, checked against the bytes tarfile wrote."""
    from criu_coredump import archive
    long_dir = "d" * 90 + "/" + "e" * 60
    entries = [("a.img", b"A" * 700), (long_dir + "/pages-1.img", b"P" * 4096)]
    path = tmp_path / "t.tar"
    A.write_tar(path, entries, fmt=fmt)
    raw = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        got = archive.index(archive.RangeReader(fd), str(path))
    finally:
        os.close(fd)
    for name, data in entries:
        m = got[name]
        assert raw[m.offset:m.offset + m.size] == data


def test_private_paths_are_named_by_archive_and_member(members, tmp_path):
    """An error in an image inside an archive names ARCHIVE:member, not the
    private directory it was unpacked into."""
    broken = [(ti, d) for ti, d in members]
    i = next(k for k, (ti, _) in enumerate(broken) if ti.name == "checkpoint/core-1.img")
    ti = tarfile.TarInfo(broken[i][0].name)
    ti.size = 20
    broken[i] = (ti, broken[i][1][:20])
    plain = tmp_path / "broken.tar"
    A.write_tar(plain, broken)
    subprocess.run(["zstd", "-q", "-k", str(plain)], check=True)
    for path in (plain, tmp_path / "broken.tar.zst"):
        out = tmp_path / ("out-" + path.name)
        out.mkdir()
        p = run_coredump("-i", path, "-o", out, check=2)
        assert p.stderr == "coredump: error: %s:checkpoint/core-1.img: truncated " \
                           "entry (8 of 1841 bytes)\n" % path


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_tar_of_an_image_directory_with_jobs(tmp_path, jobs):
    """A plain tar of a CRIU image directory (no runtime's metadata), with
    two processes converted by workers: the same cores as the directory's,
    pages read from the archive in place."""
    for fx in ("tree", "shmem"):
        images = os.path.join(FIXTURES, fx, "images")
        path = tmp_path / (fx + ".tar")
        subprocess.run(["tar", "-C", images, "-cf", str(path), "."], check=True)
        a, b = tmp_path / (fx + "-dir"), tmp_path / (fx + "-tar")
        a.mkdir()
        b.mkdir()
        run_coredump("-q", "-i", images, "-o", a, "--jobs", jobs)
        run_coredump("-q", "-i", path, "-o", b, "--jobs", jobs)
        names = sorted(os.listdir(a))
        assert names and names == sorted(os.listdir(b))
        for n in names:
            assert (a / n).read_bytes() == (b / n).read_bytes(), n
