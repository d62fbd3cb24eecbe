"""Tar archives, plain or compressed: recognised by content, checked member
by member, read in place or streamed once.

Container runtimes hand a checkpoint over as a tar archive (Podman: plain,
gzip or zstd; kubelet through CRI-O: plain; containerd: an OCI layout).
This module knows tar and the compressions, never a runtime's layout
(container.py does).  Why a reader of our own rather than `tarfile`: we need
each member's data offset (to copy pages straight from a plain archive),
an archive that ends early must be an error (tarfile takes a missing end for
the end), and a member must be judged before a byte of it is written.

What an archive may not do, whoever wrote it: name a member absolutely or
with `..`, hold a symlink or hard link leading out of it, or hold sparse
members (no container runtime writes them; a few bytes of one can claim
terabytes: a tar bomb).  Each is a BadArchive, reported on one line.
"""
from __future__ import annotations

import bz2
import errno
import lzma
import os
import posixpath
import shutil
import signal
import stat
import zlib

from .errors import CoredumpError
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing is not imported at run time
    from typing import Iterator

BLOCK = 512
STEP = 4 << 20        # bytes decompressed (or copied) per step: bounded memory
CHUNK = 1 << 20       # compressed bytes read at a time
COPY_BUF = 1 << 20    # the one buffer member data is copied through
SMALL_STEP = 256 << 10  # gzip/xz/bzip2 output per step (new objects each)

MAGICS = (  # (offset, bytes, kind); kinds we read, then kinds we name only
    (0, b"\x1f\x8b", "gzip"), (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"\xfd7zXZ\x00", "xz"), (0, b"BZh", "bzip2"),
    (0, b"\x04\x22\x4d\x18", "lz4"), (0, b"\x02\x21\x4c\x18", "lz4"),
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"))
COMPRESSED = ("gzip", "zstd", "xz", "bzip2")
UNSUPPORTED = {"lz4": "lz4-compressed: decompress it first (lz4 -d)",
               "zip": "a zip archive: checkpoints are tar archives",
               "7z": "a 7z archive: checkpoints are tar archives"}


class BadArchive(CoredumpError):
    """An archive is truncated, corrupt, of an unknown kind, or holds a
    member that could write or point outside where it is unpacked."""


def _tar_header_ok(block: bytes) -> bool:
    """A ustar/GNU/v7 header: its checksum (bytes 148-155 counted as
    spaces) matches."""
    if len(block) < BLOCK or block == bytes(BLOCK):
        return False
    try:
        want = int(block[148:156].split(b"\0")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    total = sum(block[:148]) + 8 * 32 + sum(block[156:BLOCK])
    return want == total


def sniff_bytes(head: bytes) -> str | None:
    """The kind of data starting with `head`: tar, a compression, or None."""
    for off, magic, kind in MAGICS:
        if head[off:off + len(magic)] == magic:
            return kind
    if _tar_header_ok(head[:BLOCK]):
        return "tar"
    return None


def sniff(path: str) -> str:
    """What the file at `path` is: "tar" or one of COMPRESSED; BadArchive
    for anything else, naming what it is when we know."""
    try:
        with open(path, "rb") as f:
            head = f.read(BLOCK)
    except OSError as e:
        raise BadArchive(path, "cannot read: %s" % (e.strerror or e)) from None
    if not head:
        raise BadArchive(path, "empty file: neither an image directory nor "
                         "a checkpoint archive")
    kind = sniff_bytes(head)
    if kind in UNSUPPORTED:
        raise BadArchive(path, UNSUPPORTED[kind])
    if kind is None:
        raise BadArchive(path, "neither an image directory nor a checkpoint "
                         "archive (tar, or tar compressed with gzip, zstd, xz "
                         "or bzip2)")
    return kind


# -- byte streams ------------------------------------------------------------

class RangeReader:
    """Sequential reads of bytes [base, base + size) of an open file, with
    seeks: a plain tar (or a member of one) read in place."""

    seekable = True

    def __init__(self, fd: int, base: int = 0, size: int | None = None):
        self.fd = fd
        self.base = base
        self.size = os.fstat(fd).st_size - base if size is None else size
        self.pos = 0

    def read(self, n: int) -> bytes:
        n = max(0, min(n, self.size - self.pos))
        data = os.pread(self.fd, n, self.base + self.pos) if n else b""
        self.pos += len(data)
        return data

    def readinto(self, view) -> int:
        n = max(0, min(len(view), self.size - self.pos))
        k = os.preadv(self.fd, [view[:n]], self.base + self.pos) if n else 0
        self.pos += k
        return k

    def skip(self, n: int) -> int:
        k = max(0, min(n, self.size - self.pos))
        self.pos += k
        return k


class Decompressed:
    """Sequential reads of a compressed stream, decompressed in steps of at
    most STEP bytes whatever the ratio (a bomb costs time, not memory).
    Data that ends before the stream does, or is not the format, is a
    BadArchive naming `name`."""

    seekable = False

    def __init__(self, src: RangeReader, kind: str, name: str):
        self.src = src
        self.kind = kind
        self.name = name
        self.pos = 0
        self._buf = b""
        self._in = b""
        self._eof = False
        self._zr = None
        self._skipbuf = None
        if kind == "zstd":
            try:
                import zstandard
            except ImportError:
                raise BadArchive(name, "zstd-compressed, and the Python module "
                                 "zstandard is not installed (Debian: "
                                 "python3-zstandard)") from None
            self._zr = zstandard.ZstdDecompressor().stream_reader(
                _FileLike(src), read_size=1 << 20, read_across_frames=True)
            self._zerr = zstandard.ZstdError
        else:
            self._new()

    def _new(self):
        self._d = {"gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
                   "xz": lzma.LZMADecompressor,
                   "bzip2": bz2.BZ2Decompressor}[self.kind]()
        self._member_done = False

    def _input(self):
        data, self._in = self._in or self.src.read(CHUNK), b""
        if not data:
            raise BadArchive(self.name, "truncated %s data (the archive ends "
                             "early)" % self.kind)
        return data

    def _step(self, want):
        """Up to `want` bytes from the current gzip member or xz/bzip2
        stream (b"" when it needed input and made no output yet)."""
        d = self._d
        if self.kind == "gzip":
            data = d.unconsumed_tail or self._input()
        else:
            data = self._input() if d.needs_input else b""
        out = d.decompress(data, want)
        if d.eof:
            self._in = d.unused_data
            self._member_done = True
        return out

    def _fill(self, want):
        if self._zr is not None:
            try:
                return self._zr.read(want)
            except self._zerr as e:
                raise BadArchive(self.name, "corrupt zstd data: %s" % e) from None
        while True:
            if self._member_done:
                # another gzip member or stream (pigz, cat a b), or the end
                # (zeros: a tape's padding)
                rest = self._in or self.src.read(CHUNK)
                while rest and not rest.strip(b"\0"):
                    rest = self.src.read(CHUNK)
                if not rest:
                    return b""
                self._new()
                self._in = rest
            try:
                out = self._step(want)
            except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
                raise BadArchive(self.name, "corrupt %s data: %s"
                                 % (self.kind, e)) from None
            if out:
                return out

    def read(self, n: int) -> bytes:
        parts = []
        got = 0
        if self._buf:
            take = self._buf[:n]
            self._buf = self._buf[n:]
            parts.append(take)
            got = len(take)
        while got < n and not self._eof:
            data = self._fill(min(STEP, n - got))
            if not data:
                self._eof = True
                break
            if len(data) > n - got:
                self._buf = data[n - got:]
                data = data[:n - got]
            parts.append(data)
            got += len(data)
        self.pos += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, view) -> int:
        """Up to len(view) bytes into view: the bulk path (member data),
        through one reused buffer rather than a new object per step, whose
        page faults cost more than the decompression."""
        if self._buf:
            k = min(len(view), len(self._buf))
            view[:k] = self._buf[:k]
            self._buf = self._buf[k:]
        elif self._eof:
            k = 0
        elif self._zr is not None:
            try:
                k = self._zr.readinto(view)
            except self._zerr as e:
                raise BadArchive(self.name, "corrupt zstd data: %s" % e) from None
        else:
            data = self._fill(min(len(view), SMALL_STEP))
            k = len(data)
            view[:k] = data
        if not k:
            self._eof = True
        self.pos += k
        return k

    def skip(self, n: int) -> int:
        """Decompress n bytes and drop them, through one reused buffer (a
        pages member unpacked sized and empty is skipped so)."""
        done = 0
        if self._buf:
            k = min(n, len(self._buf))
            self._buf = self._buf[k:]
            self.pos += k
            done = k
        if done < n and self._skipbuf is None:
            self._skipbuf = memoryview(bytearray(COPY_BUF))
        while done < n:
            k = self.readinto(self._skipbuf[:min(COPY_BUF, n - done)])
            if not k:
                break
            done += k
        return done


class _FileLike:
    """The read() zstandard wants, over a RangeReader."""

    def __init__(self, src):
        self.src = src

    def read(self, n=-1):
        return self.src.read(n if n >= 0 else 1 << 20)


def open_stream(fd: int, name: str, base: int = 0, size: int | None = None):
    """(kind, stream) of the bytes [base, base+size) of fd: a RangeReader
    when they are a plain tar, else a Decompressed stream of the tar."""
    src = RangeReader(fd, base, size)
    head = os.pread(fd, min(BLOCK, src.size), base)
    kind = sniff_bytes(head)
    if kind in UNSUPPORTED:
        raise BadArchive(name, UNSUPPORTED[kind])
    if kind is None:
        raise BadArchive(name, "not a tar archive (nor gzip, zstd, xz or "
                         "bzip2 compressed)" if head else "empty")
    if kind == "tar":
        return kind, src
    return kind, Decompressed(src, kind, name)


# -- tar members --------------------------------------------------------------

REG, DIR, SYMLINK, HARDLINK, OTHER = "file", "dir", "symlink", "hardlink", "other"
_TYPES = {b"0": REG, b"\0": REG, b"7": REG, b"5": DIR, b"2": SYMLINK,
          b"1": HARDLINK, b"3": OTHER, b"4": OTHER, b"6": OTHER}


class Member(Record):
    """One member of a tar archive, as the index keeps it."""

    def __init__(self, name: str, type: str, size: int, offset: int,
                 linkname: str = "", mtime: int = 0, mode: int = 0o644):
        self.name = name          # normalised: relative, no "./", no trailing "/"
        self.type = type          # REG, DIR, SYMLINK, HARDLINK or OTHER
        self.size = size          # bytes of data in the archive
        self.offset = offset      # where the data starts in the (decompressed) stream
        self.linkname = linkname
        self.mtime = mtime
        self.mode = mode


def _number(field: bytes, what: str, name: str) -> int:
    if field and field[0] & 0x80:  # GNU base-256 (sizes of 8 GiB and more)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0")[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise BadArchive(name, "bad %s field in a tar header" % what) from None


def _pax(data: bytes, name: str) -> dict[str, str]:
    out = {}
    pos = 0
    while pos < len(data):
        sp = data.find(b" ", pos)
        try:
            n = int(data[pos:sp])
        except ValueError:
            raise BadArchive(name, "bad pax extended header") from None
        rec = data[sp + 1:pos + n]
        if n <= 0 or not rec.endswith(b"\n") or b"=" not in rec:
            raise BadArchive(name, "bad pax extended header")
        k, v = rec[:-1].split(b"=", 1)
        out[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
        pos += n
    return out


def normalise(raw: str, where: str, what: str = "member") -> str:
    """A member name made relative and plain; BadArchive when it is
    absolute or goes through `..`."""
    if raw.startswith("/"):
        raise BadArchive(where, "%s %r has an absolute name: refused" % (what, raw))
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadArchive(where, "%s %r goes up with '..': refused" % (what, raw))
    return "/".join(parts)


def _link_inside(name: str, target: str) -> bool:
    """Whether a symlink `name` -> `target` stays inside the archive."""
    if target.startswith("/"):
        return False
    path = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return not (path == ".." or path.startswith("../"))


class TarReader:
    """The members of a tar stream, in order, each checked before it is
    yielded.  After a member is yielded, its data may be read with
    copy_to() or read_all(); what is not read is skipped.

    links_out: whether symlinks leading out of the archive are allowed (the
    root file system of an image holds absolute ones: they are resolved
    below the root when used, never followed while unpacking)."""

    def __init__(self, stream, name: str, links_out: bool = False):
        self.s = stream
        self.name = name
        self.links_out = links_out
        self._left = 0     # unread data (with padding) of the last member
        self._copybuf = None

    def _read(self, n):
        data = self.s.read(n)
        if len(data) < n:
            raise BadArchive(self.name, "truncated: the archive ends inside "
                             "a member or its header")
        return data

    def _skip_rest(self):
        if self._left:
            if self.s.skip(self._left) < self._left:
                raise BadArchive(self.name, "truncated: the archive ends "
                                 "inside a member")
            self._left = 0

    def members(self) -> Iterator[Member]:
        pax_global = {}
        while True:
            self._skip_rest()
            pax = dict(pax_global)
            longname = longlink = None
            while True:
                hdr = self.s.read(BLOCK)
                if len(hdr) < BLOCK:
                    raise BadArchive(self.name, "truncated: no end-of-archive "
                                     "marker (the archive ends early)")
                if hdr == bytes(BLOCK):
                    # the end: two zero blocks (POSIX; every runtime's
                    # writer makes both), so a cut there is seen too
                    if self.s.read(BLOCK) != bytes(BLOCK):
                        raise BadArchive(self.name, "truncated: the "
                                         "end-of-archive marker is cut short")
                    return
                if not _tar_header_ok(hdr):
                    raise BadArchive(self.name, "corrupt tar header at byte %d"
                                     % (self.s.pos - BLOCK))
                tflag = hdr[156:157]
                size = _number(hdr[124:136], "size", self.name)
                padded = -(-size // BLOCK) * BLOCK
                if tflag in (b"x", b"g", b"L", b"K"):
                    if size > 1 << 20:
                        raise BadArchive(self.name, "extended header of %d "
                                         "bytes: refused" % size)
                    data = self._read(padded)[:size]
                    if tflag == b"x":
                        pax.update(_pax(data, self.name))
                    elif tflag == b"g":
                        pax_global.update(_pax(data, self.name))
                        pax.update(pax_global)
                    elif tflag == b"L":
                        longname = data.split(b"\0")[0].decode("utf-8", "surrogateescape")
                    else:
                        longlink = data.split(b"\0")[0].decode("utf-8", "surrogateescape")
                    continue
                break
            raw = hdr[0:100].split(b"\0")[0]
            if hdr[257:262] == b"ustar" and hdr[345:500].strip(b"\0"):
                raw = hdr[345:500].split(b"\0")[0] + b"/" + raw
            rawname = longname or pax.get("path") or raw.decode("utf-8", "surrogateescape")
            link = longlink or pax.get("linkpath") or \
                hdr[157:257].split(b"\0")[0].decode("utf-8", "surrogateescape")
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise BadArchive(self.name, "bad pax size") from None
                padded = -(-size // BLOCK) * BLOCK
            offset = self.s.pos
            self._left = padded
            if tflag == b"S" or any(k.startswith("GNU.sparse") for k in pax):
                real = pax.get("GNU.sparse.realsize") or pax.get("GNU.sparse.size")
                if real is None and tflag == b"S":
                    real = _number(hdr[483:495], "size", self.name)
                raise BadArchive(self.name, "sparse member %r (%s bytes stored, "
                                 "%s bytes when unpacked): container runtimes "
                                 "write none; refused as a possible tar bomb"
                                 % (rawname, size, real if real is not None else "?"))
            mtype = _TYPES.get(tflag)
            if mtype is None:
                raise BadArchive(self.name, "member %r is of unknown tar type %r"
                                 % (rawname, tflag.decode("latin-1")))
            name = normalise(rawname, self.name)
            if mtype == SYMLINK and not self.links_out and not _link_inside(name, link):
                raise BadArchive(self.name, "symlink member %r points out of "
                                 "the archive (-> %s): refused" % (rawname, link))
            if mtype == HARDLINK:
                link = normalise(link, self.name, "hard link target of %r" % rawname)
            if not name:
                continue  # "./": the archive's own top directory
            yield Member(name=name, type=mtype, size=size if mtype == REG else 0,
                         offset=offset, linkname=link,
                         mtime=_number(hdr[136:148], "mtime", self.name),
                         mode=_number(hdr[100:108], "mode", self.name))

    def copy_to(self, m: Member, fd: int):
        """Write member m's data (it was just yielded) to fd."""
        if self._copybuf is None:
            self._copybuf = memoryview(bytearray(COPY_BUF))
        buf = self._copybuf
        left = m.size
        while left:
            got = self.s.readinto(buf[:min(len(buf), left)])
            if not got:
                raise BadArchive(self.name, "truncated: the archive ends "
                                 "inside member %s" % m.name)
            view = buf[:got]
            while view:
                k = os.write(fd, view)
                view = view[k:]
            left -= got
        self._left -= m.size

    def read_all(self, m: Member, limit: int = 64 << 20) -> bytes:
        if m.size > limit:
            raise BadArchive(self.name, "member %r is %d bytes: too big for "
                             "what it should hold" % (m.name, m.size))
        data = self._read(m.size)
        self._left -= m.size
        return data


# -- unpacking below a directory ---------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Unpacker:
    """Writes members below `dest` and nowhere else: every directory on the
    way is opened with O_NOFOLLOW, so a symlink unpacked earlier (or planted)
    cannot redirect a later member; files are created 0600, directories
    0700, whatever modes the archive gives (we only read them)."""

    def __init__(self, dest: str, name: str):
        self.dest = dest
        self.name = name
        self._root = os.open(dest, _DIR_FLAGS)

    def close(self):
        if self._root is not None:
            os.close(self._root)
            self._root = None

    def _parent(self, relpath: str, create: bool = True) -> tuple[int, str]:
        parts = relpath.split("/")
        fd = os.dup(self._root)
        try:
            for comp in parts[:-1]:
                if create:
                    try:
                        os.mkdir(comp, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise BadArchive(self.name, "member %r goes through "
                                         "a symlink or a file (%s): refused"
                                         % (relpath, comp)) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def add(self, reader: TarReader, m: Member):
        dfd, base = self._parent(m.name)
        try:
            if m.type == DIR:
                try:
                    os.mkdir(base, 0o700, dir_fd=dfd)
                except FileExistsError:
                    st = os.lstat(base, dir_fd=dfd)
                    if not stat.S_ISDIR(st.st_mode):
                        raise BadArchive(self.name, "directory member %r "
                                         "replaces a file or symlink: refused"
                                         % m.name) from None
            elif m.type == REG:
                self._clear(dfd, base, m)
                fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                             | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
                try:
                    reader.copy_to(m, fd)
                finally:
                    os.close(fd)
            elif m.type == SYMLINK:
                self._clear(dfd, base, m)
                os.symlink(m.linkname, base, dir_fd=dfd)
            elif m.type == HARDLINK:
                self._clear(dfd, base, m)
                sfd, sbase = self._parent(m.linkname, create=False)
                try:
                    os.link(sbase, base, src_dir_fd=sfd, dst_dir_fd=dfd,
                            follow_symlinks=False)
                except FileNotFoundError:
                    raise BadArchive(self.name, "hard link %r names %r, which "
                                     "is not before it" % (m.name, m.linkname)) from None
                finally:
                    os.close(sfd)
            # OTHER (devices, FIFOs): never unpacked, never opened
        finally:
            os.close(dfd)

    def _clear(self, dfd, base, m):
        """A later member of the same name replaces the earlier one (as tar
        does), unless the earlier one is a directory."""
        try:
            st = os.lstat(base, dir_fd=dfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise BadArchive(self.name, "member %r replaces a directory: "
                             "refused" % m.name)
        os.unlink(base, dir_fd=dfd)


def unpack(stream, name: str, dest: str, links_out: bool = False,
           keep=None, sparse_only=None) -> dict[str, Member]:
    """Unpack a whole tar stream below dest; returns its members by name.
    keep(m) -> False: the member is listed, not written; sparse_only(m) ->
    True: the file is created with its size and no data (what --list
    needs of the pages)."""
    reader = TarReader(stream, name, links_out)
    out = Unpacker(dest, name)
    members = {}
    try:
        for m in reader.members():
            members[m.name] = m
            if keep is not None and not keep(m):
                continue
            if sparse_only is not None and m.type == REG and sparse_only(m):
                dfd, base = out._parent(m.name)
                try:
                    fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                 | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
                    os.ftruncate(fd, m.size)
                    os.close(fd)
                finally:
                    os.close(dfd)
                continue
            out.add(reader, m)
        reader._skip_rest()
    finally:
        out.close()
    return members


def index(stream, name: str, links_out: bool = False) -> dict[str, Member]:
    """The members of a tar stream by name, read without writing anything
    (a plain archive: headers only, its data is skipped by seeking)."""
    return {m.name: m for m in TarReader(stream, name, links_out).members()}


# -- the private directory members go to -------------------------------------

TMP_PREFIX = ".coredump-archive-"
_dirs = {}
_old_handlers = {}
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum, frame):
    remove_all()
    old = _old_handlers.get(signum)
    if callable(old):
        old(signum, frame)
    else:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def remove_all():
    """Remove the private directories this process made (never a child's
    copy of the list: a worker of --jobs leaves them to its parent)."""
    for d, pid in list(_dirs.items()):
        if pid == os.getpid():
            shutil.rmtree(d, ignore_errors=True)
            _dirs.pop(d, None)


def _remove_stale(parent: str):
    """Directories of ours left by a run that was killed (SIGKILL, a
    crash): their owner's pid is in the name."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for n in names:
        if not n.startswith(TMP_PREFIX):
            continue
        try:
            pid = int(n[len(TMP_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
            continue
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(parent, n), ignore_errors=True)


def private_dir(parent: str | None) -> str:
    """A new directory, mode 0700, inside `parent` (OUTDIR: on XFS or btrfs
    the copy of its pages into the core can share blocks), removed by
    remove_all() and on SIGINT/SIGTERM/SIGHUP."""
    import tempfile  # only an archive run needs it
    parent = parent or tempfile.gettempdir()
    _remove_stale(parent)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)
    try:
        for s in CLEANUP_SIGNALS:
            cur = signal.getsignal(s)
            if cur is not _on_signal and cur != signal.SIG_IGN:
                _old_handlers[s] = cur
                signal.signal(s, _on_signal)
        try:
            d = tempfile.mkdtemp(prefix="%s%d-" % (TMP_PREFIX, os.getpid()),
                                 dir=parent)
        except OSError as e:
            raise CoredumpError(parent, "cannot create a temporary directory "
                                "for the archive: %s" % e.strerror) from None
        _dirs[d] = os.getpid()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return d
