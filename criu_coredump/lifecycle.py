"""What a run leaves behind when it ends early: temporary cores and workers.

A core is written to a temporary file beside it and renamed when complete.
On SIGINT, SIGTERM or SIGHUP every temporary file still registered here is
removed, the --jobs workers are stopped (their own handlers remove theirs)
and waited for, and the process then dies of the signal, so the caller
sees it in the exit status.  Temporaries of runs killed outright (SIGKILL,
a machine crash) are recognised by the writer's pid in their name and
removed by the next run (`remove_stale_temps`).
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import stat
import threading

TMP_SUFFIX = ".tmp"

# SIGHUP: the terminal went away (the workers of --jobs, in the same
# process group, get it too, and clean up the same way)
CLEANUP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def tmp_prefix(path: str) -> str:
    """Temporary cores for `path` are named <dir>/.<name>.<writer pid>.XXXXXXXX.tmp
    (this prefix, then the pid of the process writing it)."""
    return ".%s." % os.path.basename(path)


# .core.<pid>.<writer pid>.<mkstemp's letters>.tmp
_TMP_NAME = re.compile(r"\.core\.\d+\.(\d+)\.[A-Za-z0-9_]+\.tmp\Z")


def _alive(pid):
    """Whether process pid may still write: it exists and is not a zombie
    (a killed run's workers may be zombies a while, not yet reaped by the
    process they were handed to; a zombie holds no file)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass  # EPERM: it exists
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            # the state follows the command's ")" (which may hold any byte)
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(d: str) -> list[str]:
    """Remove the temporary cores that runs killed outright (SIGKILL, a
    machine crash) left in directory d, and only those: the name carries
    the writer's pid, and a temporary is removed when that process is gone
    and no one holds the lock every writer keeps on its temporary (another
    PID namespace writing into the same directory keeps its files).
    Returns the names removed."""
    removed = []
    try:
        names = os.listdir(d)
    except OSError:
        return removed
    for name in names:
        m = _TMP_NAME.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(d, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            removed.append(name)
        except OSError:
            continue  # locked: its writer lives
        finally:
            os.close(fd)
    return removed


# -- temporary files removed on SIGINT/SIGTERM/SIGHUP ------------------------

_pending = set()


# the signal whose cleanup waits for the end of a held section (_handler),
# and how many held sections the main thread is in (handlers run there)
_deferred = None
_main_held = 0


def _forked():
    """A child forked inside a held section (a --jobs worker) never leaves
    it: the section is its parent's."""
    global _main_held, _deferred
    _main_held, _deferred = 0, None


os.register_at_fork(after_in_child=_forked)


class signals_held:
    """Hold SIGINT/SIGTERM/SIGHUP while a temporary file is created and
    registered (or renamed and unregistered), or a worker started and
    recorded, so the handler never misses one.

    A signal that came just before the section began may still have its
    Python handler run inside it (the interpreter runs handlers between
    bytecodes, after the C handler noted the signal): that handler leaves
    the cleanup to the section's end (_handler), where the file created
    meanwhile is registered and is removed with the others."""

    def __enter__(self):
        global _main_held
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)
        self.main = threading.current_thread() is threading.main_thread()
        if self.main:
            _main_held += 1

    def __exit__(self, *exc):
        global _main_held
        if self.main:
            _main_held -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
        if self.main and not _main_held and _deferred is not None:
            _clean_up_and_die(_deferred)
        return False


def register_tmp(path: str):
    _pending.add(path)


def unregister_tmp(path: str):
    _pending.discard(path)


def discard(path: str):
    """Remove a temporary file and forget it."""
    _pending.discard(path)
    try:
        os.unlink(path)
    except OSError:
        pass


def remove_pending():
    for p in list(_pending):
        discard(p)


# -- worker processes (--jobs) stopped before dying of a signal ---------------

_workers = set()


def add_worker(pid: int):
    """A child writing cores: on SIGINT/SIGTERM it is stopped (SIGTERM, its
    own handler removes its temporary core) and waited for before we die."""
    _workers.add(pid)


def remove_worker(pid: int):
    _workers.discard(pid)


def forget_workers():
    """In a new worker: its siblings are not its children."""
    _workers.clear()


def stop_workers():
    for pid in list(_workers):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in list(_workers):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    _workers.clear()


def install_signal_cleanup():
    """SIGINT/SIGTERM/SIGHUP: remove unfinished cores, then die of the
    signal (so the caller sees the signal in the exit status).  A signal
    the process was started with ignored stays ignored."""
    for s in CLEANUP_SIGNALS:
        if signal.getsignal(s) != signal.SIG_IGN:
            signal.signal(s, _handler)


def _handler(signum, frame):
    global _deferred
    if _main_held:
        # inside a held section (signals_held): it ends first
        _deferred = _deferred or signum
        return
    _clean_up_and_die(signum)


def _clean_up_and_die(signum):
    remove_pending()
    stop_workers()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signum,))
    os.kill(os.getpid(), signum)
