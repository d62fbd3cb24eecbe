"""Convert the processes of a checkpoint into core files (the library entry).

`generate()` is what `coredump` runs, importable so that other tools can
build cores without a subprocess.  Each process is independent: a failure in
one is recorded in its result and the others are still written.
"""
from __future__ import annotations

import os

from . import arch as arches
from . import elf, imagedir, images, notes, parallel, syscall_restart
from .batch import Pending
from .errors import BadImage, CoredumpError, OutputError
from .lifecycle import TMP_SUFFIX, tmp_prefix
from .memory import MemoryPlan
from .policy import DEFAULT_FILTER
from .record import Record
from .rootfs import RootFS
from .writer import CoreWriter, check_out_dir, fsync_dir


class CoreResult(Record):
    def __init__(self, pid: int,
                 comm: str,
                 arch: str = "",
                 path: str | None = None,
                 threads: int = 0,
                 segments: int = 0,
                 dumped: int = 0,
                 holes: int = 0,
                 lazy_pages: int = 0,
                 warnings: list[str] | None = None,
                 skipped: str | None = None,
                 error: CoredumpError | None = None):
        self.pid = pid
        self.comm = comm
        self.arch = arch                  # from the images: an arch/ name (x86_64, ia32, ...)
        self.path = path
        self.threads = threads
        self.segments = segments
        self.dumped = dumped              # bytes of memory in the core (holes included)
        self.holes = holes                # bytes of those that are holes
        self.lazy_pages = lazy_pages
        self.warnings = [] if warnings is None else warnings
        self.skipped = skipped
        self.error = error

    @property
    def incomplete(self):
        return bool(self.lazy_pages or self.warnings)


def core_name(pid):
    return "core.%d" % pid


def notes_blob(proc, plan, files, arch, threads=None, then=None):
    """The notes, one note's bytes at a time: the writer streams them.
    `threads` as notes.build_notes takes them; `then()` is called once the
    last note is made (every thread read)."""
    endian = arch.endian
    for n, t, d in notes.build_notes(proc, plan, files, arch, threads):
        yield elf.note_bytes(n, t, d, endian)
    if then is not None:
        then()


def convert_process(ckpt, proc, out_dir, rootfs, dump_filter=DEFAULT_FILTER,
                    shmem_cache=None, progress=None, warn=None, pending=None):
    """Write one process's core; returns its CoreResult.  With `pending`
    (a batch.Pending), the core is left there to be committed (fsynced and
    renamed) with others, and the result is final once it is."""
    res = CoreResult(pid=proc.pid, comm=proc.comm, arch=proc.arch,
                     threads=len(proc.threads))
    # The threads are read as their notes are written (images.Threads), after
    # the memory plan has warned; until the last is read, warnings wait here:
    # a broken thread image is then one error and nothing else, as when every
    # thread was read before anything else.  Any other failure shows them.
    held = []
    thread_failed = []

    def _warn(path, what):
        res.warnings.append("%s: %s" % (path, what))
        if warn:
            if held is not None:
                held.append((path, what))
            else:
                warn(path, what)

    def _release():
        nonlocal held
        waiting, held = held, None
        for w in waiting:
            warn(*w)

    if proc.is_zombie:
        res.skipped = ("zombie (exited, not reaped): no memory or registers "
                       "are left to dump")
        return res
    d = ckpt.images
    arch = arches.for_process(proc, d.join(d.core(proc.pid)))
    try:
        plan = MemoryPlan(ckpt, proc, rootfs, dump_filter, shmem_cache, _warn)
    except BaseException:
        if warn and held:
            _release()
        raise
    try:
        for notice in proc.mm.notices:
            _warn(d.join(d.mm(proc.pid)), notice)
        if plan.stats.lazy_pages:
            _warn(plan.index.path, "%d pages were left for lazy restore and are "
                  "not in the images; they are holes" % plan.stats.lazy_pages)
        # registers as the kernel's core shows them (CRIU saves them
        # rewound), each thread's as it is read
        blob = notes_blob(proc, plan, ckpt.files, arch, syscall_restart.undone(
                              _noting_failure(proc.threads, thread_failed), plan),
                          then=_release if warn else None)
        path = os.path.join(out_dir, core_name(proc.pid))
        if pending is not None:
            pending.before(sum(s.dump_size for s in plan.segments))
        if progress:
            # the bytes that are copied (holes cost nothing): what progress
            # counts; a pass over the index, so only when a bar is shown
            progress.start(proc, sum(ext.length for s in plan.segments
                                     for ext in s.extents()))
        # the directory is fsynced once, by generate(), after the last core
        with CoreWriter(path, progress=progress.advance if progress else None,
                        sync_dir=False, defer=pending is not None) as w:
            data = w.write(arch.ELF, arch, blob, plan.segments)
        if pending is not None:
            pending.add(w, res, data)
        res.path = path
        res.segments = len(plan.segments)
        res.dumped = sum(s.dump_size for s in plan.segments)
        res.holes = res.dumped - data
        res.lazy_pages = plan.stats.lazy_pages
    except BaseException:
        if warn and held and not thread_failed:
            _release()
        raise
    finally:
        plan.close()
        if progress:
            progress.finish(proc)
    return res


def _noting_failure(threads, failed):
    """Iterate `threads`; an error reading one is also noted in `failed`."""
    it = iter(threads)
    while True:
        try:
            th = next(it)
        except StopIteration:
            return
        except BaseException:
            failed.append(True)
            raise
        yield th


def _convert_entry(ckpt, entry, out_dir, rootfs, dump_filter, shmem_cache,
                   progress, warn, pending):
    """Load and convert one pstree entry; its own errors go in its result."""
    try:
        proc = images.load_process(ckpt.images, entry, stream_threads=True)
        return convert_process(ckpt, proc, out_dir, rootfs, dump_filter,
                               shmem_cache, progress, warn, pending)
    except CoredumpError as err:
        return CoreResult(pid=entry.pid, comm="", error=err)
    except OSError as err:  # anything the modules did not name
        return CoreResult(pid=entry.pid, comm="", error=BadImage(
            err.filename or ckpt.dir, err.strerror or str(err)))


def _lost(out_dir, entry, signum):
    """The result of a child of --jobs that died without answering (killed
    by a signal, such as the OOM killer's): its temporary core is removed."""
    import glob  # only when a worker died
    path = os.path.join(out_dir, core_name(entry.pid))
    for tmp in glob.glob(os.path.join(glob.escape(out_dir),
                                      glob.escape(tmp_prefix(path)) + "*"
                                      + TMP_SUFFIX)):
        try:
            os.unlink(tmp)
        except OSError:
            pass
    how = ("killed by %s" % parallel.child_signal_name(signum) if signum
           else "ended without a result")
    return CoreResult(pid=entry.pid, comm="", error=OutputError(
        path, "the conversion was %s; no core was written" % how))


def generate(images_dir, out_dir, pids=None, root=None,
             dump_filter=DEFAULT_FILTER, progress=None, warn=None, jobs=1):
    """Convert every process (or those in `pids`) of a checkpoint.

    Returns a list of CoreResult, in pstree order.  Errors that concern the
    whole checkpoint (pstree, files) raise; errors of one process are kept in
    its result.  With jobs > 1, up to `jobs` processes are converted at once,
    each in a child process (parallel.py); warnings still come in pstree
    order, and `progress.start`/`finish` get an object with the process's
    `pid` and `comm` only.
    """
    check_out_dir(out_dir)
    ckpt = images.open_checkpoint(imagedir.at(images_dir))
    wanted = ckpt.wanted = images.select(ckpt, pids)
    own = not hasattr(root, "open")  # else an opened root (an archive's)
    try:
        rootfs = RootFS(root) if own else root
    except OSError as e:
        raise CoredumpError(root, "cannot open the root directory: %s"
                            % e.strerror) from None
    shmem_cache = {}
    # cores are committed a batch at a time (batch.py); each worker of
    # --jobs has its own (forked empty)
    pending = Pending()
    try:
        if jobs > 1 and len(wanted) > 1:
            from .criupb import preload
            preload()  # once here, not once in each worker

            def work(i, child_warn, child_progress):
                return _convert_entry(ckpt, wanted[i], out_dir, rootfs,
                                      dump_filter, shmem_cache, child_progress,
                                      child_warn, pending)
            results = parallel.run_ordered(
                len(wanted), work, min(jobs, len(wanted)), warn=warn,
                progress=progress,
                lost=lambda i, signum: _lost(out_dir, wanted[i], signum),
                pending=pending)
        else:
            results = []
            for e in wanted:
                if pending.due():
                    pending.commit(background=pending.worth_a_thread())
                results.append(_convert_entry(ckpt, e, out_dir, rootfs,
                                              dump_filter, shmem_cache,
                                              progress, warn, pending))
                pending.take_settled()  # final in `results` already
            pending.commit()
            pending.wait()
    finally:
        pending.discard()  # left only by an exception
        if own:
            rootfs.close()
    if any(r.path for r in results):
        fsync_dir(out_dir)  # every core's rename, at once
    return results
