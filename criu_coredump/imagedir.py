"""The image files of one checkpoint: their names, and the one way they are
opened.

CRIU names each image after what it holds (`core-<tid>.img`,
`pagemap-shmem-<shmid>.img`, ...).  Every module asks an `ImageDir` for
those names, and every image file, pages images included, is opened by
`ImageDir.open()`: that is the seam a checkpoint stored elsewhere (inside
an archive) plugs into, by a subclass that answers `open()`, `size()`,
`exists()` and `parent()` from there.  An opened image is an `ImageFile`:
a descriptor, where the image starts in it, and how long it is (None: to
the file's end), so an image can be a range of a larger file.
"""
from __future__ import annotations

import os
import stat
from collections import namedtuple

from .errors import BadImage
from .rootfs import open_regular


class ImageFile(namedtuple("ImageFile", "fd base size", defaults=(0, None))):
    """An opened image: bytes [base, base + size) of descriptor fd (size
    None: up to the file's end)."""
    # fd: int, base: int, size: int | None
    __slots__ = ()


class StreamedImage:
    """An opened image with no descriptor (fd None): its bytes come from a
    decompressing stream (archive_stream), read by pread(n, off), fastest
    at offsets that do not decrease.  What reads page data reads it through
    pread() below, which takes either kind."""

    fd = None
    base = 0

    def __init__(self, read, size: int, read_some=None):
        self._read = read         # (n, off) -> bytes
        self._read_some = read_some or read
        self.size = size

    def pread(self, n: int, off: int) -> bytes:
        return self._read(n, off)

    def pread_some(self, n: int, off: int):
        """Up to n bytes at `off`, at least one unless at the end: what
        the stream holds there without copying (a view valid until the
        next read), for a caller that reads on in a loop."""
        return self._read_some(n, off)


def length(f) -> int:
    """The bytes of an opened image: its size, or (an ImageFile of size
    None) what its file holds past its base."""
    if f.size is not None:
        return f.size
    return os.fstat(f.fd).st_size - f.base


def pread(f, n: int, off: int) -> bytes:
    """Up to n bytes at offset `off` of an opened image (an ImageFile, or a
    StreamedImage)."""
    if f.fd is None:
        return f.pread(n, off)
    return os.pread(f.fd, n, f.base + off)


class ImageReader:
    """A read-only file object over an ImageFile (read, seek, tell), by
    pread: what the image decoders read through.  Closes the descriptor.
    A read that comes short is the image's end (images are regular files),
    so reading a small image whole is one system call."""

    def __init__(self, image: ImageFile):
        self.image = image
        self.pos = 0
        self._end = image.size

    @property
    def end(self) -> int:
        """The image's size (the file's, asked once when first wanted: a
        reader that reads to the end needs no fstat)."""
        if self._end is None:
            self._end = os.fstat(self.image.fd).st_size
        return self._end

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = max(0, self.end - self.pos) if self.image.size is not None \
                else 1 << 62
        if self.image.size is not None:
            n = min(n, max(0, self.end - self.pos))
        out = []
        while n > 0:
            want = min(n, 1 << 24)
            chunk = os.pread(self.image.fd, want, self.image.base + self.pos)
            out.append(chunk)
            self.pos += len(chunk)
            n -= len(chunk)
            if len(chunk) < want:
                break  # a regular file reads short only at its end
        return b"".join(out)

    def seek(self, pos: int) -> int:
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos

    def close(self):
        if self.image.fd >= 0:
            os.close(self.image.fd)
            self.image = self.image._replace(fd=-1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class ImageDir:
    """A checkpoint's image directory: every image name, and their opening."""

    PSTREE = "pstree.img"
    FILES = "files.img"
    REG_FILES = "reg-files.img"  # before CRIU 3.x's files.img
    MEMFD = "memfd.img"
    REMAP_FPATH = "remap-fpath.img"
    PARENT = "parent"            # the previous checkpoint of a pre-dump chain

    def __init__(self, path: str):
        self.path = path
        self._prefix = os.path.join(path, "")  # join()'s, made once

    def __repr__(self):
        return "ImageDir(%r)" % self.path

    # -- names ---------------------------------------------------------------

    @staticmethod
    def core(tid: int) -> str:
        return "core-%d.img" % tid

    @staticmethod
    def mm(pid: int) -> str:
        return "mm-%d.img" % pid

    @staticmethod
    def pagemap(pid: int) -> str:
        return "pagemap-%d.img" % pid

    @staticmethod
    def shmem_pagemap(shmid: int) -> str:
        return "pagemap-shmem-%d.img" % shmid

    @staticmethod
    def pages(pages_id: int) -> str:
        return "pages-%d.img" % pages_id

    @staticmethod
    def ghost(ghost_id: int) -> str:
        return "ghost-file-%d.img" % ghost_id

    def join(self, name: str) -> str:
        """The path of an image, for messages (and for opening it here):
        os.path.join's, by a concatenation (a process's images are named
        some twenty times, mostly for messages it may never print)."""
        if name.startswith("/"):
            return os.path.join(self.path, name)
        return self._prefix + name

    # -- access: what a subclass answers from elsewhere ------------------------

    def open(self, name: str) -> ImageFile:
        """Open an image, which must be a regular file (non-blocking, checked
        on the descriptor); OSError (FileNotFoundError, rootfs.NotRegular,
        ...) as os.open raises it."""
        return ImageFile(open_regular(self.join(name)))

    def size(self, name: str) -> int:
        """The image's size in bytes (os.stat: OSError when absent)."""
        return os.stat(self.join(name)).st_size

    def exists(self, name: str) -> bool:
        """The image is there (a link to nothing is not)."""
        return os.path.exists(self.join(name))

    def lexists(self, name: str) -> bool:
        """Something has the image's name (a dangling link too); errors other
        than its absence are raised."""
        try:
            os.lstat(self.join(name))
        except FileNotFoundError:
            return False
        return True

    def parent(self) -> "ImageDir" | None:
        """The parent checkpoint's directory (its real path, so that a chain
        that loops can be told), or None when there is none."""
        pdir = self.join(self.PARENT)
        if not os.path.isdir(pdir):
            return None
        return type(self)(os.path.realpath(pdir))

    def real(self) -> str:
        """A name of this checkpoint that is the same however it is reached."""
        return os.path.realpath(self.path)

    def check(self):
        """BadImage unless this is a readable CRIU image directory (one
        holding pstree.img)."""
        d = self.path
        try:
            st = os.stat(d)
        except FileNotFoundError:
            raise BadImage(d, "no such image directory") from None
        except OSError as e:  # a parent not searchable, a loop of links
            raise BadImage(d, "cannot read: %s" % e.strerror) from None
        if not stat.S_ISDIR(st.st_mode):
            raise BadImage(d, "not a directory")
        try:
            os.lstat(self.join(self.PSTREE))
        except PermissionError as e:  # the directory is not searchable
            raise BadImage(d, "cannot read: %s" % e.strerror) from None
        except OSError:
            try:
                empty = not os.listdir(d)
            except OSError as e:
                raise BadImage(d, "cannot list: %s" % e.strerror) from None
            raise BadImage(d, "empty image directory" if empty else
                           "no pstree.img: not a CRIU image directory")


def at(path: str) -> ImageDir:
    """The ImageDir of what the user named with -i: the one place a
    checkpoint given as something other than a directory is recognised
    (container.open_input has opened an archive into an ImageDir)."""
    return path if isinstance(path, ImageDir) else ImageDir(path)


def as_imagedir(d) -> ImageDir:
    """An ImageDir for a path, or the ImageDir given."""
    return d if isinstance(d, ImageDir) else at(d)
