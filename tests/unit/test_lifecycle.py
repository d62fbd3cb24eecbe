"""lifecycle.py: temporary cores named after their writer, removed when
that writer is gone; signals held while one is created; the cleanup a
signal runs."""
import fcntl
import os
import signal
import subprocess
import sys
import time

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


def _main_thread_state(pid):
    try:
        with open("/proc/%d/task/%d/stat" % (pid, pid), "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return None


def test_a_sigterm_that_lands_as_a_worker_waits_for_its_next_job(tmp_path):
    """A --jobs worker waiting for its next job, whose SIGTERM's handler
    is noted but the wait not interrupted (the signal landed just before
    the wait's system call; made certain here by letting another thread
    of the worker take the signal), still removes its temporary and
    exits, and the parent that stops it dies of its own SIGTERM rather
    than waiting for it forever."""
    code = r"""
import os, signal, sys, threading, time
from criu_coredump import lifecycle, parallel
lifecycle.install_signal_cleanup()
out = sys.argv[1]

def work(i, warn, progress):
    if i == 0:
        warn("job 0", "hold")  # the parent stops in warn(): no job 2 comes
        return i
    # job 1, the worker's last before it waits for job 2
    path = os.path.join(out, "worker.tmp")
    open(path, "w").close()
    lifecycle.register_tmp(path)
    threading.Thread(target=threading.Event().wait, daemon=True).start()
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])  # that thread's
    with open(os.path.join(out, "ready"), "w") as f:
        f.write(str(os.getpid()))
    return i

def warn(path, what):
    while True:
        time.sleep(0.05)

parallel.run_ordered(3, work, 1, warn=warn)
"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=root)
    worker = None
    try:
        ready = tmp_path / "ready"
        for _ in range(1000):
            if ready.exists() and ready.read_text():
                break
            time.sleep(0.01)
        worker = int(ready.read_text())
        # asleep for good: in the wait for its next job
        quiet = 0
        while quiet < 30:
            quiet = quiet + 1 if _main_thread_state(worker) == b"S" else 0
            time.sleep(0.01)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == -signal.SIGTERM
        assert not (tmp_path / "worker.tmp").exists()
        assert _main_thread_state(worker) in (None, b"Z")
    finally:
        for pid in (p.pid, worker):
            if pid is not None and _main_thread_state(pid) not in (None, b"Z"):
                os.kill(pid, signal.SIGKILL)
        p.wait()


def test_a_signal_handled_inside_a_held_section_waits_for_its_end(tmp_path):
    """A signal that lands just before a held section may have its Python
    handler run inside it (between two bytecodes, after the C handler
    noted it; called here directly, as the interpreter would): the core
    created in that section is still removed, and the process dies of the
    signal when the section ends, not after the next bytecode.  The
    handler used to clean up at once and die on the way out of the
    section, leaving the temporary created meanwhile: CI saw one left by
    SIGINT amid batches with --jobs 2."""
    code = r"""
import os, signal, sys
from criu_coredump import lifecycle, writer
signal.signal(signal.SIGINT, signal.SIG_DFL)  # as from a terminal, even when run in the background
lifecycle.install_signal_cleanup()
out = sys.argv[1]
with lifecycle.signals_held():
    signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
    w = writer.CoreWriter(os.path.join(out, "core.1")).__enter__()  # a nested section
    print("created", os.listdir(out), flush=True)
print("alive after the section", flush=True)
"""
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=30, cwd=root)
    assert p.returncode == -signal.SIGINT, (p.stdout, p.stderr)
    assert p.stdout.startswith("created ['.core.1."), p.stdout
    assert "alive" not in p.stdout
    assert os.listdir(str(tmp_path)) == []
