"""The architectures a core can be written for: one module each, exporting
an `Arch` description (base.py).  The arch of a process comes from its
images (core `mtype`, and on x86 the register mode), never from the host
running the conversion.

Adding an architecture: a module in this package and one line below
(MODULES).  Every machine type CRIU writes (core_entry.march) has one.
"""
import importlib

from ..errors import BadImage
from .base import Arch, Regs  # noqa: F401

# the registry: one line per arch module, in the order by_mtype() tries
# them (x86_64 before ia32: they share an mtype)
MODULES = (
    "x86_64",
    "ia32",
    "aarch64",
    "arm",
    "ppc64",
    "s390",
    "mips",
    "riscv64",
    "loongarch64",
)
ARCHES = tuple(importlib.import_module("." + m, __name__).ARCH for m in MODULES)

_BY_NAME = {a.name: a for a in ARCHES}


def by_name(name):
    """The Arch called `name` (Process.arch, Thread.arch), or None."""
    return _BY_NAME.get(name)


_BY_MTYPE = {}


def by_mtype(mtype):
    """The Archs CRIU marks with core_entry.march `mtype` (x86_64 and ia32
    share one)."""
    found = _BY_MTYPE.get(mtype)
    if found is None:
        found = tuple(a for a in ARCHES if a.mtype == mtype)
        if len(_BY_MTYPE) < 64:  # an image's mtype is any number
            _BY_MTYPE[mtype] = found
    return found


def identify(path, mtype, thread_info_of):
    """The Arch of a core image: `thread_info_of(arch)` gives the image's
    thread_info for that arch (None when absent).  Raises BadImage for a
    machine we do not convert."""
    candidates = by_mtype(mtype)
    if not candidates:
        raise BadImage(path, "machine type missing or unknown")
    if len(candidates) == 1:
        return candidates[0]
    ti = thread_info_of(candidates[0])
    if ti is None:
        return candidates[0]   # the first is the native one; no registers
    for a in candidates:
        if a.accepts is None or a.accepts(ti):
            return a
    return candidates[0]


def for_process(proc, path="core"):
    """The Arch of a loaded process."""
    arch = by_name(proc.arch)
    if arch is None:
        raise BadImage(path, "architecture %s is not supported" % proc.arch)
    return arch
