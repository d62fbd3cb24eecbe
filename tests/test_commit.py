"""Cores are committed (made durable, then renamed into place) a batch at a
time (criu_coredump/batch.py): no core is ever renamed before its own
fsync or its batch's syncfs, a core the file system could not write is
an error of its process only, and the cores a --jobs worker wrote before
it was killed are still committed."""
import errno
import os
import signal
import time

import pytest

from criu_coredump import batch, convert, lifecycle, parallel
from criu_coredump.convert import generate

from .helpers import synth

P = synth.PAGE
BASE = 0x70000000


def small_tree(path, count=12, first=100):
    ck = synth.Checkpoint(path)
    for k in range(count):
        ck.process(first + k, ppid=0 if k == 0 else first, comm="p%d" % k) \
            .vma(BASE, BASE + 4 * P).pages(BASE, nr_pages=2)
    return ck.write()


def cores(d):
    return {f: open(os.path.join(d, f), "rb").read()
            for f in os.listdir(d) if f.startswith("core.")}


def reference(images, tmp_path):
    out = tmp_path / "ref"
    out.mkdir()
    generate(images, str(out))
    return cores(str(out))


def fd_path(fd):
    return os.readlink("/proc/self/fd/%d" % fd)


def hook_syncs(monkeypatch, record, before=lambda: None):
    """record(kind, paths) after each fsync ("fsync", its file) and each
    syncfs ("syncfs", the temporaries in the file's directory then: all
    made durable); before() first."""
    real_fsync, real_syncfs = os.fsync, batch._libc_syncfs()

    def fsync(fd):
        before()
        real_fsync(fd)
        record("fsync", [fd_path(fd)])

    def syncfs(fd):
        before()
        d = os.path.dirname(fd_path(fd))
        present = [os.path.join(d, f) for f in os.listdir(d)
                   if f.startswith(".core.")]
        done = real_syncfs(fd)
        if done == 0:
            record("syncfs", present)
        return done
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(batch, "_libc_syncfs", lambda: syncfs)


def refuse_syncfs(monkeypatch):
    """syncfs fails, as on a file system that reports an error."""
    monkeypatch.setattr(batch, "_libc_syncfs", lambda: lambda fd: -1)


@pytest.mark.parametrize("syncfs", ["syncfs", "refused"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_every_core_is_synced_before_its_rename(tmp_path, monkeypatch, jobs,
                                                syncfs):
    """Each core is made durable, by its own fsync or by its batch's
    syncfs, before it is renamed into place."""
    images = small_tree(tmp_path / "img", count=40)
    out = tmp_path / "out"
    out.mkdir()
    log = str(tmp_path / "log")
    real_replace = os.replace

    def record(kind, paths):  # O_APPEND: the workers' lines do not mix
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, ("%s %s\n" % (kind, " ".join(paths))).encode())
        os.close(fd)

    def replace(src, dst):
        record("rename", [src, dst])
        real_replace(src, dst)

    hook_syncs(monkeypatch, record)
    if syncfs == "refused":
        refuse_syncfs(monkeypatch)
    monkeypatch.setattr(os, "replace", replace)
    results = generate(images, str(out), jobs=jobs)
    monkeypatch.undo()
    assert [r.error for r in results] == [None] * 40
    synced, renamed, by = set(), {}, set()
    for line in open(log).read().splitlines():
        kind, *args = line.split()
        if kind == "rename":
            assert args[0] in synced, line  # its data and inode are durable
            renamed[os.path.basename(args[1])] = args[0]
        else:
            synced.update(args)
            by.add((kind, len(args) > 1))
    assert sorted(renamed) == sorted(cores(str(out))) == \
        sorted("core.%d" % pid for pid in range(100, 140))
    assert cores(str(out)) == reference(images, tmp_path)
    # batches of cores went by one syncfs each, unless it was refused
    if syncfs == "syncfs":
        assert ("syncfs", True) in by
    else:
        assert by == {("fsync", False)}


@pytest.mark.parametrize("fails", ["fsync", "data"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_a_core_the_disk_refuses_is_an_error_of_its_process(tmp_path,
                                                            monkeypatch, jobs,
                                                            fails):
    """fsync: the file system reports an error (its syncfs fails, then
    the core's own fsync); data: the core's data could not be written
    (its writeback reports it, whether or not syncfs follows)."""
    images = small_tree(tmp_path / "img")
    out = tmp_path / "out"
    out.mkdir()
    real_fsync, real_written = os.fsync, batch._wait_written

    def fsync(fd):
        if os.path.basename(fd_path(fd)).startswith(".core.105."):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    def wait_written(fd):
        if os.path.basename(fd_path(fd)).startswith(".core.105."):
            return errno.EIO
        return real_written(fd)

    if fails == "fsync":
        refuse_syncfs(monkeypatch)
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        monkeypatch.setattr(batch, "_wait_written", wait_written)
    results = generate(images, str(out), jobs=jobs)
    monkeypatch.undo()
    bad = [r for r in results if r.error is not None]
    assert [(r.pid, r.path, str(r.error)) for r in bad] == [
        (105, None, "%s: cannot write: Input/output error" % (out / "core.105"))]
    assert sorted(os.listdir(str(out))) == sorted(
        "core.%d" % pid for pid in range(100, 112) if pid != 105)


def test_cores_a_killed_worker_handed_over_are_committed(tmp_path,
                                                        monkeypatch):
    images = small_tree(tmp_path / "img", count=30)
    ref = reference(images, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # every job handed out at once (the even ones to one worker, the odd
    # ones to the other), and no core committed until the worker
    # converting 120 has died: the cores of 100, 102, ... 118, which it
    # wrote and handed over, wait for their commit
    monkeypatch.setattr(parallel, "DEPTH", 30)
    died = tmp_path / "died"
    real_convert = convert.convert_process
    committed_by = set()

    def convert_process(ckpt, proc, *args, **kw):
        if proc.pid == 120:
            died.write_text("")
            os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would
        return real_convert(ckpt, proc, *args, **kw)

    def before():
        deadline = time.monotonic() + 10
        while not died.exists() and time.monotonic() < deadline:
            time.sleep(0.001)
        committed_by.add(os.getpid())

    monkeypatch.setattr(convert, "convert_process", convert_process)
    hook_syncs(monkeypatch, lambda kind, paths: None, before)
    results = generate(images, str(out), jobs=2)
    monkeypatch.undo()
    assert committed_by == {os.getpid()}  # this process: the parent
    assert [r.pid for r in results] == list(range(100, 130))
    errors = {r.pid: str(r.error) for r in results if r.error is not None}
    assert errors == {120: "%s: the conversion was killed by SIGKILL; no core "
                      "was written" % (out / "core.120")}
    written = cores(str(out))
    del ref["core.120"]
    assert written == ref  # every other core, complete
    assert sorted(os.listdir(str(out))) == sorted(ref)  # no temporary left


@pytest.mark.parametrize("jobs", [1, 2])
def test_cores_waiting_are_committed_before_a_large_one_is_written(
        tmp_path, monkeypatch, jobs):
    ck = synth.Checkpoint(tmp_path / "img")
    for pid in range(300, 310):
        ck.process(pid).vma(BASE, BASE + 4 * P).pages(BASE, nr_pages=2)
    ck.process(310).vma(BASE, BASE + 64 * P).pages(BASE, nr_pages=2)  # large
    images = ck.write()
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(batch, "MAX_BYTES", 32 * P)
    monkeypatch.setattr(batch, "MAX_WAIT", 1000.0)
    real_enter = convert.CoreWriter.__enter__
    log = str(tmp_path / "log")

    def enter(self):
        # which process writes which core; the large one waits (a while)
        # for those its process wrote before to be in place: their commit
        # does not wait for it
        mine = [ln.split()[1] for ln in open(log).read().splitlines()
                if int(ln.split()[0]) == os.getpid()] \
            if os.path.exists(log) else []
        if self.path.endswith("core.310"):
            deadline = time.monotonic() + 10
            while (not set(mine) <= set(os.listdir(str(out)))
                   and time.monotonic() < deadline):
                time.sleep(0.001)
        with open(log, "a") as f:
            f.write("%d %s %s\n" % (os.getpid(), os.path.basename(self.path),
                                    ",".join(sorted(os.listdir(str(out))))))
        return real_enter(self)

    monkeypatch.setattr(convert.CoreWriter, "__enter__", enter)
    results = generate(images, str(out), jobs=jobs)
    assert [r.error for r in results] == [None] * 11
    lines = [ln.split(" ") for ln in open(log).read().splitlines()]
    writer, _, in_place = next(ln for ln in lines if ln[1] == "core.310")
    before = [core for pid, core, _ in lines[:lines.index([writer, "core.310", in_place])]
              if pid == writer]
    assert before  # the same worker wrote others before it
    assert set(before) <= set(in_place.split(","))


@pytest.mark.parametrize("jobs", [1, 2])
def test_batches_commit_by_a_thread_only_when_large(tmp_path, monkeypatch, jobs):
    """A batch of small cores is committed by the converting thread itself
    (a thread for it cost more than it saved); one of THREAD_BYTES or more
    by a thread of its own, overlapping the next conversions.  Either
    way every core is the one-job, one-batch reference."""
    images = small_tree(str(tmp_path / "img"), count=12)
    want = reference(images, tmp_path)
    threaded = []
    real = batch.Pending._background

    def background(self, items):
        threaded.append(len(items))
        real(self, items)
    monkeypatch.setattr(batch.Pending, "_background", background)
    monkeypatch.setattr(batch, "MAX_CORES", 3)
    for name, thread_bytes in (("small", batch.THREAD_BYTES), ("large", 1)):
        monkeypatch.setattr(batch, "THREAD_BYTES", thread_bytes)
        del threaded[:]
        out = tmp_path / name
        out.mkdir()
        results = generate(images, str(out), jobs=jobs)
        assert all(r.path and not r.error for r in results)
        assert cores(str(out)) == want
        if name == "small":
            assert threaded == []
        else:
            assert threaded and sum(threaded) <= 12


@pytest.mark.parametrize("syncfs", ["syncfs", "refused"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_renames_hold_the_cleanup_signals_once_a_batch(tmp_path, monkeypatch,
                                                       jobs, syncfs):
    """Each rename into place comes with SIGINT/SIGTERM/SIGHUP held (the
    core renamed and forgotten as a temporary, or neither), held once for
    a batch's renames, not once for each core; never through an fsync
    (where syncfs is refused, each core's), which a signal would wait for."""
    images = small_tree(str(tmp_path / "img"), count=12)
    monkeypatch.setattr(batch, "MAX_CORES", 4)
    holds, active, renames, fsyncs = [0], [], [], []
    real_enter, real_exit = lifecycle.signals_held.__enter__, lifecycle.signals_held.__exit__

    def enter(self):
        holds[0] += 1
        active.append(holds[0])
        return real_enter(self)

    def exit_(self, *exc):
        active.pop()
        return real_exit(self, *exc)

    def held():
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        return set(lifecycle.CLEANUP_SIGNALS) <= set(blocked)
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        renames.append((active[-1] if active else None, held()))
        real_replace(src, dst)

    def fsync(fd):
        fsyncs.append(held())
        real_fsync(fd)
    batches, real_commit = [], batch.Pending._commit

    def commit(self, items):  # (with --jobs, the parent's: seen here)
        batches.append(len(items))
        return real_commit(self, items)
    monkeypatch.setattr(batch.Pending, "_commit", commit)
    monkeypatch.setattr(lifecycle.signals_held, "__enter__", enter)
    monkeypatch.setattr(lifecycle.signals_held, "__exit__", exit_)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    if syncfs == "refused":
        refuse_syncfs(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    results = generate(images, str(out), jobs=jobs)
    monkeypatch.undo()
    assert all(r.path and not r.error for r in results)
    assert len(renames) == 12 and all(h for _, h in renames)
    # a hold a batch (with one job, batches of 4: 3 of them), not one a core
    assert len({hold for hold, _ in renames}) == len(batches)
    if jobs == 1:
        assert batches == [4, 4, 4]
    if syncfs == "refused":  # (with --jobs, the parent's fsyncs: seen here)
        assert len(fsyncs) >= 12 and not any(fsyncs)


def test_a_handed_cores_holes_do_not_count_as_data(tmp_path):
    """The parent of --jobs sizes a batch by the data of its cores, not by
    the holes in them (which are not written): a core of 1 GiB of holes
    and one page of data is not worth a commit thread."""
    pending = batch.Pending()
    res = convert.CoreResult(7, "c", path=str(tmp_path / "core.7"),
                             dumped=1 << 30, holes=(1 << 30) - P)
    tmp = str(tmp_path / ".core.7.tmp")
    pending.add_handed(res, tmp, 1)
    try:
        assert pending.bytes == P and not pending.worth_a_thread()
    finally:
        lifecycle.unregister_tmp(tmp)
