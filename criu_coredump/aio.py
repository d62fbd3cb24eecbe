"""Many small positioned writes in one system call: Linux native AIO.

A sparsely touched heap is hundreds of thousands of one-page runs, each
written at its own offset of the core.  Where the holes between them are
kept (a file system in memory, writer._copy_batch_holes), that was one
pwrite() per page: a system call and a Python call each, more than half of
the conversion's time besides the kernel's copy itself.  io_submit() takes
a batch of writes at once, built from arrays (no Python step per page).

The writes are buffered (no O_DIRECT): the kernel performs each inside
io_submit(), so they are complete when it returns and their source buffers
need only live through the call; io_getevents() then only collects the
results.  Python has no binding for AIO (no io_uring either), so the four
system calls are made through libc's syscall() with ctypes.

AIO is optional: an unknown machine, a kernel without it, a seccomp filter
refusing it, or fs.aio-max-nr reached makes get() None, and the caller
writes page by page as before.
"""
from __future__ import annotations

import ctypes
import errno
import os
import sys
from array import array

from . import libc

# (io_setup, io_destroy, io_getevents, io_submit) by machine; the iocb
# layout below is the little-endian 64-bit one
_SYSCALLS = {"x86_64": (206, 207, 208, 209),
             "aarch64": (0, 1, 4, 2)}
DEPTH = 256        # writes per io_submit(); a context counts twice that
                   # against fs.aio-max-nr (65,536 for the whole system)
_IOCB = 64         # bytes of a struct iocb, in 8 u64 words
_EVENT = 32        # bytes of a struct io_event, in 4 u64 words
_PWRITE = 1        # IOCB_CMD_PWRITE

_state = {}        # pid -> Writes or None: a context is not inherited by fork


class Writes:
    """One AIO context with room for DEPTH writes, and the iocbs, their
    pointers and the completion events, allocated once."""

    def __init__(self, numbers):
        self._setup, self._destroy, self._getevents, self._submit = numbers
        self._call = libc.function("syscall", None, ctypes.c_long)
        if self._call is None:
            raise OSError(errno.ENOSYS, "syscall")
        self._ctx = ctypes.c_ulong(0)
        if self._call(ctypes.c_long(self._setup), ctypes.c_long(DEPTH),
                      ctypes.byref(self._ctx)) != 0:
            raise OSError(ctypes.get_errno(), "io_setup")
        self._iocbs = (ctypes.c_uint64 * (DEPTH * _IOCB // 8))()
        self._words = memoryview(self._iocbs).cast("B").cast("Q")
        base = ctypes.addressof(self._iocbs)
        self._ptrs = (ctypes.c_uint64 * DEPTH)(*range(base, base + DEPTH * _IOCB,
                                                      _IOCB))
        self._events = (ctypes.c_uint64 * (DEPTH * _EVENT // 8))()
        self._ev = memoryview(self._events).cast("B").cast("q")
        self._fd = None
        self._index = array("Q", range(DEPTH))

    def close(self):
        if self._ctx.value:
            self._call(ctypes.c_long(self._destroy), self._ctx)
            self._ctx.value = 0

    def write(self, fd, bufs, lengths, offsets):
        """Write lengths[i] bytes from address bufs[i] at offsets[i] of fd,
        for every i (arrays of 'Q', at most DEPTH long).  Returns the
        results in that order: bytes written, or -errno."""
        k = len(bufs)
        w = self._words
        if fd != self._fd:
            w[2::8] = array("Q", [_PWRITE | fd << 32]) * DEPTH
            self._fd = fd
        end = 8 * k
        w[0:end:8] = self._index[:k]
        w[3:end:8] = bufs
        w[4:end:8] = lengths
        w[5:end:8] = offsets
        call, ctx = self._call, self._ctx
        try:
            _until(k, lambda done: call(
                ctypes.c_long(self._submit), ctx, ctypes.c_long(k - done),
                ctypes.byref(self._ptrs, 8 * done)))
            _until(k, lambda got: call(
                ctypes.c_long(self._getevents), ctx, ctypes.c_long(k - got),
                ctypes.c_long(k - got), ctypes.byref(self._events, _EVENT * got),
                None))
        except BaseException:
            # a signal's exception, or a refusal: the context may hold
            # writes not collected; this process makes a new one if asked
            self.close()
            _state.pop(os.getpid(), None)
            raise
        ev = self._ev
        order, res = ev[0:4 * k:4], ev[2:4 * k:4]
        if order.tolist() == self._index[:k].tolist():
            return res.tolist()
        out = [0] * k
        for i, r in zip(order.tolist(), res.tolist()):
            out[i] = r
        return out


def _until(k, call):
    """call(done) until the counts it returns come to k (io_submit takes
    some of the writes, io_getevents gives some of the results), again
    when a signal interrupted it; another error is an OSError."""
    done = 0
    while done < k:
        n = call(done)
        if n < 0:
            e = ctypes.get_errno()
            if e == errno.EINTR:
                continue
            raise OSError(e, os.strerror(e))
        done += n


def get():
    """This process's Writes, or None where AIO cannot be had here."""
    pid = os.getpid()
    if pid not in _state:
        w = None
        numbers = _SYSCALLS.get(os.uname().machine)
        if numbers is not None and sys.byteorder == "little" \
                and ctypes.sizeof(ctypes.c_void_p) == 8:
            try:
                w = Writes(numbers)
            except OSError:
                w = None
        _state[pid] = w
    return _state[pid]
