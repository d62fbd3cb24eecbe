"""A live process checkpointed by the real CRIU, and gcore's core of the
same moment beside it: what the real-CRIU tests (tests/test_real_criu*.py)
hold our cores to."""
import difflib
import os
import subprocess
import time

import pytest

from .tools import convert, need


class Live:
    """A program running in its own session, stdout to a file."""

    def __init__(self, argv, work, env=None):
        self.out = os.path.join(work, "prog.out")
        with open(self.out, "w") as o, open(os.devnull) as i:
            self.proc = subprocess.Popen(argv, stdin=i, stdout=o, stderr=subprocess.STDOUT,
                                         cwd=work, start_new_session=True, close_fds=True,
                                         env=env)

    def wait_output(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.out) as f:
                text = f.read()
            if text.strip():
                return text
            assert self.proc.poll() is None, "program exited: %r" % text
            time.sleep(0.05)
        raise AssertionError("program printed nothing")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def checkpoint(pid, work, *options):
    """criu dump --leave-running: the images directory."""
    images = os.path.join(work, "images")
    os.mkdir(images)
    p = subprocess.run([need("criu"), "dump", "-t", str(pid), "-D", images, "--shell-job",
                        "--leave-running", "-v4", "-o", "dump.log", *options],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300, close_fds=True)
    if p.returncode != 0:
        with open(os.path.join(images, "dump.log")) as f:
            log = f.read()
        pytest.fail("criu dump failed (%d): %s\n...\n%s"
                    % (p.returncode, p.stdout, log[-4000:]))
    return images


def take_gcore(pid, work):
    """gcore of the live process: the reference core."""
    q = subprocess.run([need("gcore"), "-o", os.path.join(work, "gcore"), str(pid)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    ref = os.path.join(work, "gcore.%d" % pid)
    assert q.returncode == 0 and os.path.exists(ref), q.stdout
    return ref


def checkpoint_and_gcore(pid, work):
    """criu dump --leave-running, then gcore at once: (images dir, gcore)."""
    images = checkpoint(pid, work)
    return images, take_gcore(pid, work)


def convert_one(images, pid, work):
    """Our core of process pid, converted (exit 0) into work/out."""
    return convert(images, os.path.join(work, "out"), "-q")[1][pid]


def differences(want, got):
    """What a failure shows: gcore's answers against ours, as a diff."""
    return "\n".join(difflib.unified_diff(want, got, "gcore", "ours", lineterm="", n=1))
