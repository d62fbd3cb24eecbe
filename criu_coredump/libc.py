"""libc's functions by ctypes, each looked up once a run.

A lookup builds a ctypes library and a function class: a tree of small
processes paid it once per core when each use looked its function up
again.  The functions keep errno (ctypes.get_errno()).
"""
from __future__ import annotations

import ctypes
import functools


@functools.lru_cache(maxsize=None)
def function(name, argtypes=None, restype=ctypes.c_int):
    """libc's `name`, or None when this libc has none.  argtypes: a tuple,
    or None for a variadic function (syscall)."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if argtypes is not None:
        fn.argtypes = list(argtypes)
    fn.restype = restype
    return fn
