"""--root confinement: mapped files resolve as if DIR were `/`, with
openat2(RESOLVE_IN_ROOT) and with the component walk, and nothing outside
DIR is ever read, whatever the images or the root's symlinks say.

Every escape is set up so that a shadow file inside the root sits where a
confined resolution lands, and a file outside the root where an escaping
one would: the content read (and, end to end, the bytes in the core) tells
which one was opened.
"""
import errno
import os
import shutil

import pytest

from criu_coredump.rootfs import RootFS

from .helpers.tools import run_coredump
from .helpers.imgedit import edit_image

pytestmark = pytest.mark.slow

RESOLVERS = ("openat2", "walk")
INSIDE = b"INSIDE-THE-ROOT."
OUTSIDE = b"OUTSIDE-THE-ROOT"


@pytest.fixture
def tree(tmp_path):
    """tmp/outside.bin, tmp/outdir/f (outside), and root/ holding shadows at
    the places confined resolutions of the escapes land on."""
    base = tmp_path
    (base / "outside.bin").write_bytes(OUTSIDE)
    (base / "outdir").mkdir()
    (base / "outdir" / "f").write_bytes(OUTSIDE)
    root = base / "root"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "outside.bin").write_bytes(INSIDE)             # ../ lands here
    shadow = root / str(base).lstrip("/")                   # absolute host path
    shadow.mkdir(parents=True)
    (shadow / "outside.bin").write_bytes(INSIDE)
    (shadow / "outdir").mkdir()
    (shadow / "outdir" / "f").write_bytes(INSIDE)
    links = {
        "abs": str(base / "outside.bin"),                   # absolute, to outside
        "rel": "../outside.bin",                            # ../ from the root
        "dir/sub/deep": "../../../../../../../outside.bin",  # many ../
        "dirlink": str(base / "outdir"),                    # a directory, absolute
        "chain": "abs",                                     # link to a link
        "proc": "/proc/self/root" + str(base / "outside.bin"),  # magic link
        "loop": "loop",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    os.mkfifo(root / "fifo")
    return base, str(root)


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("path", [
    "/abs", "/rel", "/dir/sub/deep", "/dirlink/f", "/chain", "abs",
    "/../outside.bin", "/../../../outside.bin", "/dir/../../outside.bin",
    "../outside.bin", "/{base}/outside.bin",
])
def test_escapes_resolve_inside_the_root(tree, resolver, path):
    base, root = tree
    fs = RootFS(root, resolver=resolver)
    try:
        fd = fs.open(path.format(base=str(base).lstrip("/")))
        try:
            assert os.read(fd, 100) == INSIDE
        finally:
            os.close(fd)
    finally:
        fs.close()


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("path,err", [
    # /proc/self/root/... resolved in the root comes back to the link itself
    ("/proc", {errno.ELOOP}),
    ("/loop", {errno.ELOOP}),
    ("/missing", {errno.ENOENT}),
    ("/fifo", {errno.EINVAL}),   # not a regular file; opened without blocking
    ("/dir", {errno.EINVAL}),
    ("/", {errno.EINVAL, errno.EISDIR}),
    ("/a\0b", {errno.EINVAL}),
])
def test_what_cannot_be_opened(tree, resolver, path, err):
    _, root = tree
    fs = RootFS(root, resolver=resolver)
    try:
        with pytest.raises(OSError) as e:
            os.close(fs.open(path))
        assert e.value.errno in err
    finally:
        fs.close()


def test_resolver_from_the_environment(tree, monkeypatch):
    _, root = tree
    monkeypatch.setenv("CRIU_COREDUMP_RESOLVE", "walk")
    fs = RootFS(root)
    assert fs.resolver == "walk"
    fs.close()


def test_bad_resolver_in_the_environment_is_a_usage_error(tree, tmp_path, fixtures_dir):
    fx = fixtures_dir("stopped_static")
    env = dict(os.environ, CRIU_COREDUMP_RESOLVE="magic")
    p = run_coredump("-i", os.path.join(fx, "images"), "-o", tmp_path,
                     "--root", os.path.join(fx, "root"), env=env)
    assert p.returncode == 1
    assert p.stderr == ("coredump: error: CRIU_COREDUMP_RESOLVE: must be one of auto, "
                        "openat2, walk, not 'magic'\n")


def test_without_root_files_are_read_from_slash(tmp_path):
    (tmp_path / "f").write_bytes(INSIDE)
    fs = RootFS(None)
    fd = fs.open(str(tmp_path / "f"))
    assert os.read(fd, 100) == INSIDE
    os.close(fd)


# -- end to end: the program's own file replaced by an escape ---------------------

PROG = "opt/ccd/stopped_static/prog"
PID = 13508


def _marker_file(path, mark, size):
    with open(path, "wb") as f:
        f.write((mark * (size // len(mark) + 1))[:size])


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize("escape", ["absolute-link", "relative-link", "directory-link",
                                    "dotdot-in-image"])
def test_escape_from_root_never_reaches_the_core(fixtures_dir, tmp_path, resolver, escape):
    """The mapped executable is made an escape to a file outside --root; its
    mappings are dumped from the file (--filter 0x3f), so the core holds
    whichever file was read: the shadow inside the root, never the outside."""
    fx = fixtures_dir("stopped_static")
    images = tmp_path / "images"
    shutil.copytree(os.path.join(fx, "images"), images)
    root = tmp_path / "root"
    shutil.copytree(os.path.join(fx, "root"), root, symlinks=True)
    size = os.path.getsize(root / PROG)
    outside = tmp_path / "outside"
    (outside / "ccd" / "stopped_static").mkdir(parents=True)
    _marker_file(outside / "prog", OUTSIDE, size)
    _marker_file(outside / "ccd" / "stopped_static" / "prog", OUTSIDE, size)
    shadow = root / str(outside).lstrip("/")
    (shadow / "ccd" / "stopped_static").mkdir(parents=True)
    _marker_file(shadow / "prog", INSIDE, size)
    _marker_file(shadow / "ccd" / "stopped_static" / "prog", INSIDE, size)
    (root / "outside").mkdir()
    _marker_file(root / "outside" / "prog", INSIDE, size)
    os.unlink(root / PROG)
    if escape == "absolute-link":
        os.symlink(outside / "prog", root / PROG)
    elif escape == "relative-link":
        # from root/opt/ccd/stopped_static, 4 levels up is tmp_path
        os.symlink("../../../../outside/prog", root / PROG)
    elif escape == "directory-link":
        shutil.rmtree(root / "opt")
        os.symlink(outside, root / "opt")

    def edit(m):
        # the marker files are no ELF files: the build-id CRIU recorded
        # for the program is dropped, so that what is read is decided by
        # the resolver alone (test_current_criu covers build-ids)
        for e in m:
            if e.HasField("reg") and e.reg.name == "/" + PROG:
                del e.reg.build_id[:]
                if escape == "dotdot-in-image":
                    e.reg.name = "/../outside/prog"
    edit_image(str(images / "files.img"), edit)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, CRIU_COREDUMP_RESOLVE=resolver)
    p = run_coredump("-i", images, "-o", out, "--root", root, "--filter", "0x3f", env=env)
    assert p.returncode == 0, p.stderr
    with open(out / ("core.%d" % PID), "rb") as f:
        core = f.read()
    assert OUTSIDE not in core
    assert core.count(INSIDE) > 10000  # the mapped file's pages came from the shadow


def test_auto_falls_back_to_the_walk_without_openat2(tree, monkeypatch):
    """A kernel (or seccomp filter) without openat2: "auto" walks, with the
    same confinement; "openat2" refuses rather than walk silently."""
    import criu_coredump.rootfs as rootfs_mod

    def no_openat2(*a):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    monkeypatch.setattr(rootfs_mod, "_openat2", no_openat2)
    _, root = tree
    fs = RootFS(root, resolver="auto")
    fd = fs.open("/rel")
    assert os.read(fd, 100) == INSIDE
    os.close(fd)
    assert fs._have_openat2 is False
    fs.close()
    fs = RootFS(root, resolver="openat2")
    with pytest.raises(OSError) as e:
        fs.open("/rel")
    assert e.value.errno == errno.ENOSYS
    fs.close()
