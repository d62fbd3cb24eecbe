"""Open the files a process had mapped, optionally confined below a root.

With a root (a container's filesystem), paths are resolved as if the root
were `/`: absolute symlinks and `..` cannot leave it.  The kernel does this
for us with openat2(RESOLVE_IN_ROOT) where it has it (Linux 5.6+); elsewhere
a component-by-component walk with O_NOFOLLOW does the same, so nothing
outside the root is ever opened whatever the images or the root's links say.

Which of the two is used can be forced (RootFS(resolver=...), or the
environment variable CRIU_COREDUMP_RESOLVE=openat2|walk), so that both are
tested on any kernel.  Files are opened non-blocking and must be regular
files: a FIFO or device planted in the root neither hangs nor is read.
"""
import ctypes
import errno
import os
import posixpath
import stat

from .errors import UsageError

_SYS_openat2 = {"x86_64": 437, "aarch64": 437, "armv7l": 437, "i686": 437}
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10
_MAX_LINKS = 40
RESOLVERS = ("auto", "openat2", "walk")
RESOLVE_ENV = "CRIU_COREDUMP_RESOLVE"


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = None


def _openat2(dirfd, path, flags, resolve):
    global _libc
    nr = _SYS_openat2.get(os.uname().machine)
    if nr is None:
        raise OSError(errno.ENOSYS, "openat2")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    how = _OpenHow(flags, 0, resolve)
    fd = _libc.syscall(nr, dirfd, os.fsencode(path), ctypes.byref(how),
                       ctypes.sizeof(how))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return fd


# Read-only, and non-blocking: a FIFO or device put where a file was
# expected (even after every check) must neither hang nor be read.
READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY


class NotRegular(OSError):
    """What was opened is not a regular file (a FIFO, a device, ...)."""


def regular(fd, path):
    """`fd` when it is a regular file; else it is closed and OSError raised.
    The check is made on the opened descriptor, never before the open."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path):
    """A read-only descriptor of the regular file at `path` (an image file)."""
    return regular(os.open(path, READ_FLAGS), path)


class RootFS:
    """Opens mapped files by their path in the checkpointed process's view."""

    def __init__(self, root=None, resolver=None):
        """resolver: "auto" (openat2 where the kernel has it, else the walk),
        "openat2" (only it) or "walk" (only the walk); default from the
        environment variable CRIU_COREDUMP_RESOLVE, else "auto"."""
        if resolver is None:
            resolver = os.environ.get(RESOLVE_ENV) or "auto"
            if resolver not in RESOLVERS:
                raise UsageError(RESOLVE_ENV, "must be one of %s, not %r"
                                 % (", ".join(RESOLVERS), resolver))
        if resolver not in RESOLVERS:
            raise ValueError("resolver must be one of %s, not %r"
                             % (", ".join(RESOLVERS), resolver))
        self.root = root
        self.resolver = resolver
        self._rootfd = None
        self._have_openat2 = resolver != "walk"
        if root is not None:
            self._rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self):
        if self._rootfd is not None:
            os.close(self._rootfd)
            self._rootfd = None

    def display(self, path):
        """How to name the file in messages: the host path we tried."""
        if self.root is None:
            return path
        # lexically, as RESOLVE_IN_ROOT treats "..": never above the root
        return os.path.join(self.root, posixpath.normpath("/" + path).lstrip("/"))

    def open(self, path):
        """A read-only fd of a regular file, or OSError."""
        if "\0" in path:
            raise OSError(errno.EINVAL, "NUL byte in the file name", path)
        flags = READ_FLAGS
        if self._rootfd is None:
            fd = os.open("/" + path.lstrip("/"), flags)
        else:
            fd = None
            if self._have_openat2:
                fd = self._openat2(path, flags)
            if fd is None:
                fd = self._walk(path, flags)
        return regular(fd, path)

    def _openat2(self, path, flags):
        """openat2(RESOLVE_IN_ROOT); None when the kernel (or a seccomp
        filter) does not allow it and the walk may be used instead."""
        for _ in range(8):
            try:
                return _openat2(self._rootfd, path.lstrip("/") or ".", flags,
                                RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue  # a rename raced with a ".." lookup: retry
                if e.errno not in (errno.ENOSYS, errno.EPERM) \
                        or self.resolver == "openat2":
                    raise
                self._have_openat2 = False
                return None
        raise OSError(errno.EAGAIN, "the root kept changing while resolving", path)

    def _walk(self, path, flags):
        """Resolve path below the root one component at a time (no openat2)."""
        todo = [c for c in path.split("/") if c not in ("", ".")]
        todo.reverse()
        dirs = [os.dup(self._rootfd)]  # dirs[-1] is the current directory
        links = 0
        try:
            while todo:
                comp = todo.pop()
                if comp == "..":
                    if len(dirs) > 1:
                        os.close(dirs.pop())
                    continue
                cur = dirs[-1]
                try:
                    target = os.readlink(comp, dir_fd=cur)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    target = None
                if target is not None:
                    links += 1
                    if links > _MAX_LINKS:
                        raise OSError(errno.ELOOP, "too many symlinks", path)
                    if target.startswith("/"):
                        while len(dirs) > 1:
                            os.close(dirs.pop())
                    todo.extend(reversed([c for c in target.split("/")
                                          if c not in ("", ".")]))
                    continue
                if todo:
                    dirs.append(os.open(comp, os.O_RDONLY | os.O_DIRECTORY |
                                        os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=cur))
                else:
                    return os.open(comp, flags | os.O_NOFOLLOW, dir_fd=cur)
            raise OSError(errno.EISDIR, "is the root directory", path)
        finally:
            for d in dirs:
                os.close(d)
