"""The pages images of a compressed archive (zstd or gzip: container.
STREAMED), read from the archive itself by decompressing it again, never
from a copy on disk (in the common case).

Why: a compressed checkpoint archive is streamed once into the private
directory (archive.unpack) for its small images; writing the pages images
there too, then copying them into the core, writes every page twice.  Podman
puts pages-N.img before pstree.img, so where a page goes in the core is not
known while it streams past.  So the first pass writes the pages images
with their size and no data (sparse), and the core's pages are read from a
second decompression of the archive (`PagesStream`), forward only, in a
background thread (zstandard, zlib and lzma release the GIL) that fills a
few reused buffers: decompression overlaps the writing of the core, memory
stays bounded, and it stops after the last pages member.

Order is a matter of speed, never of correctness: a read is served by the
decompression nearest behind it; one that every decompression has passed
starts another from the start (up to PUMPS at once: a core that reads its
own pages and a shared-memory object's in turn keeps one for each); a
member read backwards more than MAX_RESTARTS times is copied once into the
private directory (what the first pass used to do for every member) and
read from there.  The few small reads made before a core is written (the ELF check of
each mapping's first bytes, the command line, the instructions at each
thread's pc) would each cost a restart: `prefetch` fetches the bytes they
will ask for, for every process of the checkpoint, in one partial pass
(stopping after the last), and keeps only those bytes.
"""
from __future__ import annotations

import os
import queue
import threading
from bisect import bisect_right

from . import archive
from .errors import BadImage

BUF = 4 << 20          # bytes per decompressed buffer
BUFFERS = 4            # buffers of one decompression (16 MiB ahead at most)
PUMPS = 2              # decompressions at once (a process's own pages, and
                       # the shared memory's read between them)
MAX_RESTARTS = 2       # backward reads of a member before it is copied out
SMALL = 64 << 10       # the largest read worth prefetching
PREFETCH_BUDGET = 16 << 20  # bytes the prefetched reads may keep in memory
PC_WINDOW = 16         # bytes around a pc the restart check reads


class _Pump:
    """One decompression of the archive from its start, in a daemon thread:
    buffers go round between a free pool and a queue of filled ones, so at
    most BUFFERS buffers exist.  The consumer reads forward only."""

    def __init__(self, src, limit: int):
        self.src = src            # (fd, base, size, kind, name)
        self.limit = limit        # stop after this many bytes of the tar
        self.free = queue.Queue()
        self.full = queue.Queue()
        for _ in range(BUFFERS):
            self.free.put(bytearray(BUF))
        self.stop = threading.Event()
        self.error = None
        self.pid = os.getpid()
        self.pos = 0              # stream offset of cur[off]
        self.cur = None
        self.off = self.end = 0
        self.eof = False
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name="coredump-archive-stream")
        self.thread.start()

    def _run(self):
        fd, base, size, kind, name = self.src
        try:
            s = archive.Decompressed(archive.RangeReader(fd, base, size),
                                     kind, name)
            done = 0
            while done < self.limit and not self.stop.is_set():
                buf = self.free.get()
                if self.stop.is_set():
                    break
                view = memoryview(buf)[:min(len(buf), self.limit - done)]
                k = 0
                while k < len(view):  # whole buffers: most reads lie in one
                    got = s.readinto(view[k:])
                    if not got:
                        break
                    k += got
                if k:
                    done += k
                    self.full.put((buf, k))
                if k < len(view):
                    break
        except BaseException as e:  # given to the reader, in its thread
            self.error = e
        finally:
            self.full.put(None)

    def _next(self) -> bool:
        if self.cur is not None:
            self.free.put(self.cur)
            self.cur = None
        if self.eof:
            return False
        item = self.full.get()
        if item is None:
            self.eof = True
            if self.error is not None:
                raise self.error
            return False
        self.cur, self.end = item
        self.off = 0
        return True

    def read(self, at: int, n: int, partial=False):
        """n bytes at stream offset `at` (>= pos), fewer at the end: a view
        of the current buffer when they lie in it (valid until the next
        read), else a bytearray.  `partial`: the view of what lies in the
        current buffer, when that is not all: a core's pages read 4 MiB at
        a time from a member that does not start at a buffer's boundary
        (a tar member rarely does) lay in two buffers at every read, each
        copied into a new 4 MiB bytearray, twice (a slice, then the copy):
        about 0.1 s of a 512 MiB archive's 0.4 s on tmpfs."""
        while self.pos + (self.end - self.off) <= at:
            self.pos += self.end - self.off
            self.off = self.end
            if not self._next():
                return bytearray()
        skip = at - self.pos
        self.off += skip
        self.pos += skip
        # (the current buffer holds at least the byte at `at` now)
        if partial or self.off + n <= self.end:
            k = min(n, self.end - self.off)
            view = memoryview(self.cur)[self.off:self.off + k]
            self.off += k
            self.pos += k
            return view
        out = bytearray(n)
        got = 0
        while got < n:
            if self.off == self.end and not self._next():
                break
            k = min(n - got, self.end - self.off)
            out[got:got + k] = memoryview(self.cur)[self.off:self.off + k]
            self.off += k
            self.pos += k
            got += k
        if got < n:
            del out[got:]
        return out

    def close(self):
        if self.pid != os.getpid():
            return  # a forked worker's copy: the thread is not in this process
        self.stop.set()
        self.free.put(bytearray(0))  # wakes a producer waiting for a buffer
        while self.thread.is_alive():
            try:
                self.full.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()


class PagesStream:
    """The pages members of one compressed tar, read by decompressing it.

    `src`: (fd, base, size, kind, label) of the compressed bytes (the
    descriptor is the stream's: read with pread only, closed by close());
    `members`: member name -> (data offset in the tar stream, size);
    `tmp`: where a member read too often out of order is copied."""

    def __init__(self, src, members: dict, tmp: str):
        self.src = src
        self.members = members
        self.tmp = tmp
        self.limit = max((o + s for o, s in members.values()), default=0)
        self.pumps = []       # at most PUMPS decompressions, oldest use first
        self.cache = {}       # member -> ([offsets], [bytes]), sorted
        self.restarts = {}    # member -> backward reads
        self.local = {}       # member -> descriptor of its copy
        self.prefetched = False
        self.stats = {"passes": 0, "copied_out": 0}

    # -- the decompressions ---------------------------------------------------

    def _pump(self, at: int, member: str | None):
        """A decompression positioned at or before stream offset `at`: the
        nearest one behind it, else a new one from the start (the least
        recently used one closed to make room).  A new one for a read that
        every other has gone past is a restart of `member`: None once it
        has had MAX_RESTARTS."""
        self.pumps = [p for p in self.pumps if p.pid == os.getpid()]  # a fork's
        behind = [p for p in self.pumps if p.pos <= at]
        if behind:
            p = max(behind, key=lambda p: p.pos)
            self.pumps.remove(p)
            self.pumps.append(p)
            return p
        if member is not None and self.pumps:
            r = self.restarts[member] = self.restarts.get(member, 0) + 1
            if r > MAX_RESTARTS:
                return None
        if len(self.pumps) >= PUMPS:
            self.pumps.pop(0).close()
        p = _Pump(self.src, self.limit)
        self.pumps.append(p)
        self.stats["passes"] += 1
        return p

    def close_pumps(self):
        pumps, self.pumps = self.pumps, []
        for p in pumps:
            p.close()

    def _shown(self, member):
        return "%s:%s" % (self.src[4], member)

    # -- reading a member ---------------------------------------------------------

    def pread(self, member: str, n: int, off: int, partial=False) -> bytes:
        """Up to n bytes at `off` of a pages member (fewer at its end).
        `partial`: fewer when they lie in two of a decompression's buffers
        (at least one byte but at the member's end): the bytes of the
        first, without copying them into a new buffer (_Pump.read)."""
        moff, msize = self.members[member]
        n = max(0, min(n, msize - off))
        if n <= 0:
            return b""
        fd = self.local.get(member)
        if fd is not None:
            return os.pread(fd, n, off)
        hit = self._cached(member, off, n)
        if hit is not None:
            return hit
        p = self._pump(moff + off, member)
        if p is None:  # read backwards too often: copied out once
            fd = self._copy_out(member)
            return os.pread(fd, n, off)
        data = p.read(moff + off, n, partial)
        if len(data) < (1 if partial else n):
            raise BadImage(self._shown(member), "the archive ended inside "
                           "this member while it was read again (changed "
                           "meanwhile?)")
        return data

    def _cached(self, member, off, n):
        c = self.cache.get(member)
        if not c:
            return None
        i = bisect_right(c[0], off) - 1
        if i >= 0 and off + n <= c[0][i] + len(c[1][i]):
            start = off - c[0][i]
            return c[1][i][start:start + n]
        return None

    def _copy_out(self, member: str) -> int:
        """Copy one member into the private directory, in one pass of the
        stream (from its start when it is behind), and read it there."""
        moff, msize = self.members[member]
        p = self._pump(moff, None)
        path = os.path.join(self.tmp, "stream-%d-%s" % (
            len(self.local), member.replace("/", "_")))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        self.local[member] = fd
        done = 0
        while done < msize:
            data = p.read(moff + done, min(BUF, msize - done))
            if not data:
                raise BadImage(self._shown(member), "the archive ended "
                               "inside this member while it was read again "
                               "(changed meanwhile?)")
            os.pwrite(fd, data, done)
            done += len(data)
        self.stats["copied_out"] += 1
        return fd

    def prefetch(self, wanted):
        """Fetch the bytes of (member, off, n) ranges in one forward pass,
        stopping after the last, and keep them for pread.  Ranges larger
        than SMALL, or beyond PREFETCH_BUDGET in all, are left to pread."""
        spans = []
        for member, off, n in wanted:
            m = self.members.get(member)
            if m is None or n <= 0 or n > SMALL or member in self.local:
                continue
            off = max(0, off)
            n = min(n, m[1] - off)
            if n > 0:
                spans.append((m[0] + off, n, member))
        spans.sort()
        merged = []
        for at, n, member in spans:
            last = merged[-1] if merged else None
            if last and last[2] == member and at <= last[0] + last[1]:
                merged[-1] = (last[0], max(last[1], at + n - last[0]), member)
            else:
                merged.append((at, n, member))
        budget = PREFETCH_BUDGET
        for at, n, member in merged:
            budget -= n
            if budget < 0:
                break
            data = bytes(self._pump(at, None).read(at, n))
            offs, datas = self.cache.setdefault(member, ([], []))
            moff = self.members[member][0]
            i = bisect_right(offs, at - moff)
            offs.insert(i, at - moff)
            datas.insert(i, data)
        # stopped after the last: the cores start a pass of their own (not
        # counted as a restart), and a fork of --jobs finds no thread
        self.close_pumps()

    def close(self):
        self.close_pumps()
        for fd in self.local.values():
            os.close(fd)
        self.local.clear()
        self.cache.clear()
        if self.src[0] >= 0:
            os.close(self.src[0])
            self.src = (-1,) + self.src[1:]


# -- what the small reads before a core will ask for ----------------------------

def small_reads(pages) -> list:
    """The (pages image name, offset, length) ranges that the reads made
    before the cores are written will ask for, for every process of the
    checkpoint of `pages` (a sources.PageSources) that are converted
    (Checkpoint.wanted, --pid's; all when not set): the first bytes of each
    file mapping (the ELF check), the command line, the bytes around each
    thread's pc.  Best effort: a process whose images cannot be read is
    left out (its conversion reports it; its reads are then served by
    restarts)."""
    from . import images
    from .sources import PageSources
    ckpt = pages.ckpt
    out = []
    for entry in ckpt.wanted or ckpt.entries:
        try:
            if entry.pid == pages.proc.pid:
                ps, own = pages, False
            else:
                # its threads read one at a time, for their pcs only
                proc = images.load_process(ckpt.images, entry, stream_threads=True)
                if proc.is_zombie or proc.mm is None:
                    continue
                ps, own = PageSources(ckpt, proc, None,
                                      shmem_cache=pages._shmem), True
            try:
                out.extend(_ranges(ps))
            finally:
                if own:
                    ps.close()
        except Exception:
            continue
    return out


def _ranges(ps):
    from . import syscall_restart
    from .model import VMA_AREA_MEMFD
    proc, mm = ps.proc, ps.proc.mm
    if mm is None or ps.index is None:
        return []
    want = [(v.start, 4) for v in mm.vmas
            if v.pgoff == 0 and (v.is_file or v.has(VMA_AREA_MEMFD))]
    if mm.arg_end > mm.arg_start:
        want.append((mm.arg_start, min(mm.arg_end - mm.arg_start, 80)))
    for th in proc.threads:
        spec = syscall_restart._spec(th.arch) if th.regs is not None else None
        if spec is None:
            continue
        pc = th.regs.gp.get(spec.pc, 0) & ((1 << spec.bits) - 1)
        want.append((max(0, pc - PC_WINDOW), 2 * PC_WINDOW))
    out = []
    for addr, n in want:
        for ext in ps.extents_in(addr, n, images_only=True):
            name = getattr(ext.source, "name", None)
            if name is not None:
                out.append((name, ext.offset, ext.length))
    return out
