"""`coredump --list`: what a checkpoint holds, without writing anything.

One row per process of pstree.img, children under their parent (as
`ps --forest` draws them): pid, ppid, state, threads, the size of its
address space, its architecture and how many pages CRIU saved for it.  Reading the images is
all it does, so it also tells quickly whether a checkpoint is readable
before converting it; a process whose images are broken is listed with its
error and the exit code says so (the same codes as a conversion).
"""
from __future__ import annotations

import json

from . import images
from .binaries import mapped_elf_files
from .errors import CoredumpError, one_line


class TreeWarning(CoredumpError):
    """pstree.img is odd but every process is listed (exit 3)."""
from . import imagedir
from .imagedir import ImageDir
from .pagemap import LAZY, PageIndex
from .record import Record
from .report import JSON_FORMAT, human_size

STATE_NAMES = {images.TASK_ALIVE: "alive", images.TASK_DEAD: "zombie",
               images.TASK_STOPPED: "stopped", images.TASK_HELPER: "helper",
               images.TASK_THREAD: "thread"}


class ProcessRow(Record):
    def __init__(self, pid: int,
                 ppid: int,
                 depth: int = 0,
                 comm: str = "",
                 arch: str = "",
                 state: str = "?",
                 threads: int = 0,
                 mapped_bytes: int | None = None,
                 dumped_pages: int | None = None,
                 error: CoredumpError | None = None,
                 warnings: list[CoredumpError] | None = None,
                 mapped_elf_files: list | None = None):
        self.pid = pid
        self.ppid = ppid
        self.depth = depth
        self.comm = comm
        self.arch = arch                  # the arch/ name, from the images
        self.state = state
        self.threads = threads
        self.mapped_bytes = mapped_bytes  # None: no address space (zombie)
        self.dumped_pages = dumped_pages  # pages with data in the images
        self.error = error
        self.warnings = [] if warnings is None else warnings
        # [{path, build_id}]: what debuginfod can fetch (binaries.mapped_elf_files)
        self.mapped_elf_files = [] if mapped_elf_files is None else mapped_elf_files

    @property
    def incomplete(self):
        return bool(self.warnings)

    def record(self):
        return {"pid": self.pid, "ppid": self.ppid, "comm": self.comm,
                "arch": self.arch or None, "state": self.state, "threads": self.threads,
                "mapped_bytes": self.mapped_bytes,
                "dumped_pages": self.dumped_pages,
                "error": str(self.error) if self.error is not None else None,
                "warnings": [str(w) for w in self.warnings],
                "mapped_elf_files": self.mapped_elf_files}


def _dumped_pages(d: ImageDir, pid):
    """Pages that have data in this checkpoint or its parents (not lazy)."""
    idx = PageIndex(d, d.pagemap(pid))
    return sum(n for n, w in zip(idx.npages, idx.where) if w != LAZY)


def _row(d: ImageDir, entry, depth, files=None):
    row = ProcessRow(pid=entry.pid, ppid=entry.ppid, depth=depth)
    try:
        # each thread read, checked and dropped: a process of 100,000
        # threads is listed in bounded memory, its broken thread found
        proc = images.load_process(d, entry, stream_threads=True)
        row.comm = proc.comm
        row.arch = proc.arch
        row.state = STATE_NAMES.get(proc.task_state, str(proc.task_state))
        row.threads = sum(1 for _ in proc.threads)
        if proc.mm is not None:
            row.mapped_bytes = sum(v.size for v in proc.mm.vmas)
            row.dumped_pages = _dumped_pages(d, proc.pid)
            row.mapped_elf_files = mapped_elf_files(files or {}, proc)
    except CoredumpError as e:
        row.error = e
    return row


def _forest(entries):
    """pstree entries in tree order (parents first, siblings as in pstree),
    each with its depth, and the entries whose chain of parents loops (a
    ppid cycle, a process its own parent): they are listed too, at the top,
    never dropped."""
    pids = {e.pid for e in entries}
    children = {}
    for e in entries:
        children.setdefault(e.ppid, []).append(e)
    out = []
    seen = set()
    looping = []

    def walk(roots):
        todo = [(e, 0) for e in reversed(roots)]
        while todo:
            e, depth = todo.pop()
            if e.pid in seen:
                continue
            seen.add(e.pid)
            out.append((e, depth))
            todo.extend((c, depth + 1) for c in reversed(children.get(e.pid, []))
                        if c.pid not in seen)
    walk([e for e in entries if e.ppid not in pids])
    for e in entries:  # in pstree order: what no root reached
        if e.pid not in seen:
            looping.append(e)
            walk([e])
    return out, looping


def list_processes(images_dir):
    """ProcessRows of the checkpoint in tree order.  Raises CoredumpError
    when the checkpoint itself (pstree.img) cannot be read."""
    d = imagedir.at(images_dir)
    ckpt = images.open_checkpoint(d)
    order, looping = _forest(ckpt.entries)
    rows = [_row(d, e, depth, ckpt.files) for e, depth in order]
    tree = d.join(d.PSTREE)
    for e in looping:
        for r in rows:
            if r.pid == e.pid:
                r.warnings.append(TreeWarning(tree, "process %d: its chain of "
                                              "parents loops (ppid %d); listed "
                                              "at the top" % (e.pid, e.ppid)))
    return rows


HEADER = ("PID", "PPID", "STATE", "THREADS", "ARCH", "MAPPED", "DUMPED", "COMMAND")


def format_table(rows):
    """The human table: one line a process, sizes readable, pages counted."""
    lines = []
    for r in rows:
        name = "  " * r.depth + ("\\_ " if r.depth else "") + one_line(r.comm or "?")
        lines.append((str(r.pid), str(r.ppid), r.state if r.error is None else "error",
                      str(r.threads), r.arch or "-",
                      "-" if r.mapped_bytes is None else human_size(r.mapped_bytes),
                      "-" if r.dumped_pages is None else "%d pages" % r.dumped_pages,
                      name))
    widths = [max(len(x[i]) for x in lines + [HEADER]) for i in range(len(HEADER) - 1)]
    right = (True, True, False, True, False, True, True)

    def fmt(cols):
        cells = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cols, widths, right)]
        return "  ".join(cells + [cols[-1]])
    return "\n".join(fmt(x) for x in [HEADER] + lines)


def json_document(rows, code, images_dir):
    """The --list --json answer: every process of the tree, in tree order."""
    return json.dumps({"format": JSON_FORMAT, "images_dir": images_dir,
                       "exit_code": code,
                       "processes": [r.record() for r in rows]}, indent=2)
