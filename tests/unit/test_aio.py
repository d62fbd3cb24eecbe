"""aio.py: batches of positioned writes by io_submit, and what a caller
sees when one fails, when AIO is refused, and after fork."""
import ctypes
import errno
import os
from array import array

import pytest

from criu_coredump import aio


@pytest.fixture
def writes():
    w = aio.get()
    # this project's CI machine (x86_64 Linux) has AIO: a None here would
    # silently test only the fallback
    assert w is not None, "no Linux AIO on this machine"
    return w


def _buffer(data):
    buf = ctypes.create_string_buffer(data, len(data))
    return buf, ctypes.addressof(buf)


def test_writes_land_at_their_offsets_holes_kept(tmp_path, writes):
    data = os.urandom(3 * 4096)
    buf, a = _buffer(data)
    path = tmp_path / "core"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        res = writes.write(fd, array("Q", [a, a + 4096, a + 8192]),
                           array("Q", [4096, 4096, 100]),
                           array("Q", [0, 1 << 20, 5 << 20]))
    finally:
        os.close(fd)
    assert res == [4096, 4096, 100]
    got = path.read_bytes()
    assert len(got) == (5 << 20) + 100
    assert got[:4096] == data[:4096]
    assert got[1 << 20:(1 << 20) + 4096] == data[4096:8192]
    assert got[5 << 20:] == data[8192:8292]
    assert got[4096:1 << 20] == bytes((1 << 20) - 4096)
    assert os.stat(path).st_blocks * 512 < 1 << 20  # the holes stay holes


def test_an_unreadable_buffer_is_minus_efault(tmp_path, writes):
    data = os.urandom(4096)
    buf, a = _buffer(data)
    fd = os.open(tmp_path / "core", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # address 4096 is never mapped: that write fails, not the others
        res = writes.write(fd, array("Q", [a, 4096, a]),
                           array("Q", [4096, 4096, 4096]),
                           array("Q", [0, 4096, 8192]))
    finally:
        os.close(fd)
    assert res == [4096, -errno.EFAULT, 4096]


def test_a_refused_batch_raises_and_the_next_gets_a_new_context(tmp_path,
                                                                 writes):
    buf, a = _buffer(b"x" * 4096)
    (tmp_path / "ro").write_bytes(b"")
    ro = os.open(tmp_path / "ro", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            writes.write(ro, array("Q", [a]), array("Q", [4096]),
                         array("Q", [0]))
    finally:
        os.close(ro)
    assert e.value.errno == errno.EBADF
    again = aio.get()
    assert again is not None and again is not writes
    fd = os.open(tmp_path / "core", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        assert again.write(fd, array("Q", [a]), array("Q", [10]),
                           array("Q", [0])) == [10]
    finally:
        os.close(fd)


def test_a_forked_child_makes_its_own_context(tmp_path, writes):
    """An AIO context is not inherited: a --jobs worker must not use its
    parent's."""
    buf, a = _buffer(b"child" * 10)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            w = aio.get()
            fd = os.open(tmp_path / "core", os.O_RDWR | os.O_CREAT, 0o600)
            ok = w is not None and w is not writes and \
                w.write(fd, array("Q", [a]), array("Q", [50]),
                        array("Q", [0])) == [50]
            os.close(fd)
            code = 0 if ok else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (tmp_path / "core").read_bytes() == b"child" * 10
    assert aio.get() is writes


@pytest.mark.parametrize("refuse", ["unknown machine", "io_setup refused"])
def test_no_aio_here_is_none(monkeypatch, refuse):
    monkeypatch.setattr(aio, "_state", {})
    if refuse == "unknown machine":
        monkeypatch.setattr(aio, "_SYSCALLS", {})
    else:
        def refused(self, numbers):
            raise OSError(errno.EAGAIN, "io_setup")  # fs.aio-max-nr reached
        monkeypatch.setattr(aio.Writes, "__init__", refused)
    assert aio.get() is None
