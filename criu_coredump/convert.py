"""Convert the processes of a checkpoint into core files (the library entry).

`generate()` is what `coredump` runs, importable so that other tools can
build cores without a subprocess.  Each process is independent: a failure in
one is recorded in its result and the others are still written.
"""
import os
from dataclasses import dataclass, field
from typing import List, Optional

from . import arch as arches
from . import elf, images, notes
from .errors import BadImage, CoredumpError
from .memory import DEFAULT_FILTER, MemoryPlan
from .rootfs import RootFS
from .writer import CoreWriter, check_out_dir


@dataclass
class CoreResult:
    pid: int
    comm: str
    arch: str = ""         # from the images: x86_64, ia32, aarch64, arm
    path: Optional[str] = None
    threads: int = 0
    segments: int = 0
    dumped: int = 0        # bytes of memory in the core (holes included)
    holes: int = 0         # bytes of those that are holes
    lazy_pages: int = 0
    warnings: List[str] = field(default_factory=list)
    skipped: Optional[str] = None
    error: Optional[CoredumpError] = None

    @property
    def incomplete(self):
        return bool(self.lazy_pages or self.warnings)


def core_name(pid):
    return "core.%d" % pid


def notes_blob(proc, plan, files, arch):
    return b"".join(elf.note_bytes(n, t, d)
                    for n, t, d in notes.build_notes(proc, plan, files, arch))


def convert_process(ckpt, proc, out_dir, rootfs, dump_filter=DEFAULT_FILTER,
                    shmem_cache=None, progress=None, warn=None):
    """Write one process's core; returns its CoreResult."""
    res = CoreResult(pid=proc.pid, comm=proc.comm, arch=proc.arch,
                     threads=len(proc.threads))

    def _warn(path, what):
        res.warnings.append("%s: %s" % (path, what))
        if warn:
            warn(path, what)

    if proc.is_zombie:
        res.skipped = ("zombie (exited, not reaped): no memory or registers "
                       "are left to dump")
        return res
    arch = arches.for_process(proc, os.path.join(ckpt.dir, "core-%d.img" % proc.pid))
    plan = MemoryPlan(ckpt, proc, rootfs, dump_filter, shmem_cache, _warn)
    try:
        if plan.stats.lazy_pages:
            _warn(plan.index.path, "%d pages were left for lazy restore and are "
                  "not in the images; they are holes" % plan.stats.lazy_pages)
        blob = notes_blob(proc, plan, ckpt.files, arch)
        path = os.path.join(out_dir, core_name(proc.pid))
        # the bytes that are copied (holes cost nothing): what progress counts
        data = sum(length for s in plan.segments for (_, length, _, _) in s.chunks())
        if progress:
            progress.start(proc, data)
        with CoreWriter(path, progress=progress.advance if progress else None) as w:
            w.write(arch.ELF, arch, blob, plan.segments, plan.fds)
        res.path = path
        res.segments = len(plan.segments)
        res.dumped = sum(s.dump_size for s in plan.segments)
        res.holes = res.dumped - data
        res.lazy_pages = plan.stats.lazy_pages
    finally:
        plan.close()
        if progress:
            progress.finish(proc)
    return res


def generate(images_dir, out_dir, pids=None, root=None,
             dump_filter=DEFAULT_FILTER, progress=None, warn=None):
    """Convert every process (or those in `pids`) of a checkpoint.

    Returns a list of CoreResult.  Errors that concern the whole checkpoint
    (pstree, files) raise; errors of one process are kept in its result.
    """
    check_out_dir(out_dir)
    ckpt = images.open_checkpoint(images_dir)
    wanted = images.select(ckpt, pids)
    results = []
    try:
        rootfs = RootFS(root)
    except OSError as e:
        raise CoredumpError(root, "cannot open the root directory: %s"
                            % e.strerror) from None
    shmem_cache = {}
    try:
        for e in wanted:
            try:
                proc = images.load_process(images_dir, e)
                results.append(convert_process(ckpt, proc, out_dir, rootfs,
                                               dump_filter, shmem_cache,
                                               progress, warn))
            except CoredumpError as err:
                results.append(CoreResult(pid=e.pid, comm="", error=err))
            except OSError as err:  # anything the modules did not name
                results.append(CoreResult(pid=e.pid, comm="", error=BadImage(
                    err.filename or images_dir, err.strerror or str(err))))
    finally:
        rootfs.close()
    return results
