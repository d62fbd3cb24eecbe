"""What -i named, opened (Input): the image directory a run reads and, for a
container archive, what container.py found in it; and the container's root
file system at checkpoint time (OverlayRoot).

Apart from container.py because an image directory, the plain case, needs
only this: a run on one imports none of the archive machinery (tar,
decompressors, JSON), which was a sixth of a small run's start-up.
"""
from __future__ import annotations

import errno
import os
import posixpath
import stat

from .record import Record
from .rootfs import RootFS


def archive_file(path: str | None) -> bool:
    """Whether -i or --root names a regular file: an archive to open (a
    directory, or a name that cannot be stat'ed, is passed on as it is,
    and the image code reports on it)."""
    if path is None:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


# -- the container's files -----------------------------------------------------

def _abs(path: str) -> str:
    """A path as an absolute normal one ("//x" is "/x": POSIX keeps a leading
    double slash apart, we do not)."""
    return posixpath.normpath("/" + path.lstrip("/"))


class OverlayRoot:
    """The container's root file system at checkpoint time, read-only: the
    archive's rootfs-diff laid over the image's root (--root), minus
    deleted.files.  Each layer is a RootFS, so every lookup is confined to
    its layer as --root is.  What neither layer has is missing."""

    def __init__(self, base: RootFS | None, diff: RootFS | None,
                 deleted: list[str]):
        self.base = base
        self.diff = diff
        self.deleted = {_abs(p) for p in deleted}
        self.root = base.root if base is not None else None

    def _deleted(self, path):
        p = _abs(path)
        while p not in ("/", ""):
            if p in self.deleted:
                return True
            p = posixpath.dirname(p)
        return False

    def _in_diff(self, path):
        if self.diff is None:
            return None
        try:
            return self.diff.open(path)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None
            raise

    def open(self, path):
        if self._deleted(path):
            fd = self._in_diff(path)  # deleted, then written again
            if fd is not None:
                return fd
            raise OSError(errno.ENOENT, "deleted in the container "
                          "(deleted.files)", path)
        fd = self._in_diff(path)
        if fd is not None:
            return fd
        if self.base is None:
            raise OSError(errno.ENOENT, "not in the container's changes, and "
                          "no --root given", path)
        return self.base.open(path)

    def display(self, path):
        if self.diff is not None and self._in_diff_exists(path):
            return self.diff.display(path)
        if self.base is not None:
            return self.base.display(path)
        return path

    def _in_diff_exists(self, path):
        fd = self._in_diff(path)
        if fd is None:
            return False
        os.close(fd)
        return True

    def close(self):
        for r in (self.base, self.diff):
            if r is not None:
                r.close()


# -- an opened -i ---------------------------------------------------------------

class Input(Record):
    """What -i named, opened: the image directory to read (for an archive,
    inside the private directory) and, for an archive, its container."""

    def __init__(self, path: str, images_dir: object,
                 container: object = None, tmp: str | None = None,
                 diff_dir: str | None = None, deleted: list[str] | None = None,
                 root_dir: str | None = None, opened_root: object = None,
                 solib_dirs: list[str] | None = None,
                 shown: dict[str, str] | None = None):
        self.path = path
        self.images_dir = images_dir      # its path, or an ArchiveImageDir
        self.container = container        # container.ContainerInfo, or None
        self.tmp = tmp
        self.diff_dir = diff_dir
        self.deleted = [] if deleted is None else deleted
        self.root_dir = root_dir          # --root as a directory (unpacked tar)
        self.opened_root = opened_root    # the root mapped files were read from
        self.solib_dirs = [] if solib_dirs is None else solib_dirs  # of sysroot()
        self.shown = {} if shown is None else shown  # private dir -> name
        self.streams = []  # archive_stream.PagesStream, closed with it

    @property
    def is_archive(self):
        return self.tmp is not None

    def rootfs(self, root):
        """The RootFS mapped files are read from: --root, under the
        archive's changes when there are any."""
        base = RootFS(self.root_dir or root) if (self.root_dir or root) else None
        if not self.is_archive or (self.diff_dir is None and not self.deleted):
            return base if base is not None else RootFS(None)
        diff = RootFS(self.diff_dir) if self.diff_dir else None
        return OverlayRoot(base, diff, self.deleted)

    def sysroot(self, rootfs) -> str | None:
        """A directory for gdb's `set sysroot`: a link at each mapped file's
        path to the host file the core was made from (found through
        `rootfs`, the layers and their confinement), and the image root's
        top-level links (lib -> usr/lib, ...) so that the loader's names of
        the libraries lead to the same files."""
        from . import archive, images
        if self.tmp is None:
            self.tmp = archive.private_dir(None)
        d = os.path.realpath(os.path.join(self.tmp, "sysroot"))
        if os.path.isdir(d):
            return d
        os.mkdir(d, 0o700)
        for f in images.open_checkpoint(self.images_dir).files.values():
            if f.kind != "reg" or f.deleted:
                continue
            try:
                fd = rootfs.open(f.path)
            except OSError:
                continue
            try:
                real = os.readlink("/proc/self/fd/%d" % fd)
            finally:
                os.close(fd)
            rel = _abs(f.path).lstrip("/")
            link = os.path.join(d, rel)
            os.makedirs(os.path.dirname(link), 0o700, exist_ok=True)
            if not os.path.lexists(link):
                os.symlink(real, link)
            if os.path.dirname(link) not in self.solib_dirs:
                self.solib_dirs.append(os.path.dirname(link))
        base = self.root_dir or getattr(getattr(rootfs, "base", None), "root", None) \
            or getattr(rootfs, "root", None)
        for layer in (self.diff_dir, base):
            if layer and os.path.isdir(layer):
                _links_into(layer, d)
        return d

    def show(self, text: str) -> str:
        """A message with private paths named by the archive and member
        they stand for (victim.tar:checkpoint/core-1.img)."""
        if not self.tmp:
            return text
        for sub, name in sorted(self.shown.items(), key=lambda x: -len(x[0])):
            text = text.replace(os.path.join(self.tmp, sub, ""), name)
        return text.replace(os.path.join(self.tmp, ""), self.path + ":")

    def close(self):
        for st in self.streams:
            st.close()
        self.streams = []
        if self.tmp:
            import shutil

            from . import archive
            shutil.rmtree(self.tmp, ignore_errors=True)
            archive._dirs.pop(self.tmp, None)
            self.tmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _links_into(layer: str, sysroot: str):
    """The symlinks of a root layer, made again in the sysroot (an absolute
    target made to point into the sysroot): the names the loader gave the
    libraries (/lib64/ld-linux..., /lib/...) then reach the mapped files'
    links.  Nothing that exists there already is replaced."""
    for top, dirs, files in os.walk(layer):
        rel = os.path.relpath(top, layer)
        for n in dirs + files:
            p = os.path.join(top, n)
            if not os.path.islink(p):
                continue
            target = os.readlink(p)
            if target.startswith("/"):
                target = sysroot + _abs(target)
            elif posixpath.normpath(posixpath.join(rel, target)).startswith(".."):
                continue  # leads above the root: not made again
            dest = os.path.normpath(os.path.join(sysroot, rel, n))
            if not dest.startswith(sysroot + "/") or os.path.lexists(dest):
                continue
            parent = os.path.realpath(os.path.dirname(dest))
            if parent != sysroot and not parent.startswith(sysroot + "/"):
                continue
            try:
                os.makedirs(os.path.dirname(dest), 0o700, exist_ok=True)
                os.symlink(target, dest)
            except OSError:
                pass  # a file of ours is on the way: the mapped file wins
