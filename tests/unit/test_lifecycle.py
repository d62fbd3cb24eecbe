"""lifecycle.py: temporary cores named after their writer, removed when
that writer is gone; signals held while one is created; the cleanup a
signal runs."""
import fcntl
import os
import signal
import subprocess
import sys

from criu_coredump import lifecycle


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_temporary_names_carry_the_writers_pid():
    assert lifecycle.tmp_prefix("/out/core.42") == ".core.42."


def test_stale_temporaries_of_dead_writers_only_are_removed(tmp_path):
    dead = ".core.7.%d.abcd1234.tmp" % _dead_pid()
    alive = ".core.7.%d.abcd1234.tmp" % os.getpid()
    locked = ".core.8.%d.zz.tmp" % _dead_pid()
    other = "core.7"
    for n in (dead, alive, locked, other):
        (tmp_path / n).write_bytes(b"x")
    fd = os.open(str(tmp_path / locked), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)      # a writer in another pid namespace
    try:
        assert lifecycle.remove_stale_temps(str(tmp_path)) == [dead]
    finally:
        os.close(fd)
    assert sorted(os.listdir(str(tmp_path))) == sorted([alive, locked, other])


def test_signals_are_held_while_a_temporary_is_registered(tmp_path):
    with lifecycle.signals_held():
        held = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        assert set(lifecycle.CLEANUP_SIGNALS) <= set(held)
    assert not set(lifecycle.CLEANUP_SIGNALS) & set(signal.pthread_sigmask(signal.SIG_BLOCK, []))


def test_pending_temporaries_are_removed_by_the_cleanup(tmp_path):
    kept, done = tmp_path / "a.tmp", tmp_path / "b.tmp"
    kept.write_bytes(b"x")
    done.write_bytes(b"x")
    lifecycle.register_tmp(str(kept))
    lifecycle.register_tmp(str(done))
    lifecycle.unregister_tmp(str(done))      # renamed into place: not ours to remove
    lifecycle.remove_pending()
    assert not kept.exists() and done.exists()


def test_a_signal_removes_temporaries_stops_workers_and_kills_us(tmp_path):
    """In a child: SIGTERM removes the registered file, stops the worker
    (its own SIGTERM) and the child dies of SIGTERM."""
    code = r"""
import os, signal, sys, time
from criu_coredump import lifecycle
lifecycle.install_signal_cleanup()
path = sys.argv[1]
open(path, "w").close()
lifecycle.register_tmp(path)
with lifecycle.signals_held():     # as parallel.py starts its workers
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, lifecycle.CLEANUP_SIGNALS)
        # short sleeps: a signal that lands between Python's check for
        # handlers and the sleep's system call is then handled in 50 ms,
        # not after the whole sleep (the test's own race, not the code's)
        for _ in range(1200):
            time.sleep(0.05)
        os._exit(0)
    lifecycle.add_worker(pid)
print(pid, flush=True)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(60)
"""
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "core.tmp")],
                       stdout=subprocess.PIPE, text=True, timeout=30,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode == -signal.SIGTERM
    worker = int(p.stdout.split()[0])
    assert not (tmp_path / "core.tmp").exists()
    try:
        os.kill(worker, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
