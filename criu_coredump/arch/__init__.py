"""The architectures a core can be written for: one module each, exporting
an `Arch` description (base.py).  The arch of a process comes from its
images (core `mtype`, and on x86 the register mode), never from the host
running the conversion.

Adding an architecture: a module in this package and one line below
(MODULES: its name and the core_entry.march CRIU marks it with).  Every
machine type CRIU writes (core_entry.march) has one.

An arch's module is imported when that arch is first asked for: a run
converting x86_64 processes does not build the register structures and
message declarations of the eight others (tests/test_arch_seam.py checks
that each module's Arch has the mtype its line here gives).  `ARCHES`, all
of them, imports every module.
"""
import importlib

from ..errors import BadImage
from .base import Arch, Regs  # noqa: F401

# the registry: (module, core_entry.march) per arch module, in the order
# by_mtype() tries them (x86_64 before ia32: they share an mtype)
MODULES = (
    ("x86_64", 1),
    ("ia32", 1),
    ("aarch64", 3),
    ("arm", 2),
    ("ppc64", 4),
    ("s390", 5),
    ("mips", 6),
    ("riscv64", 8),
    ("loongarch64", 7),
)
NAMES = tuple(name for name, _ in MODULES)
_MTYPE = dict(MODULES)
_loaded = {}


def _load(name):
    """The Arch of module `name` (one of NAMES), imported on first use."""
    arch = _loaded.get(name)
    if arch is None:
        arch = _loaded[name] = importlib.import_module("." + name, __name__).ARCH
    return arch


def __getattr__(attr):
    # ARCHES: every Arch, in MODULES' order (each module imported)
    if attr == "ARCHES":
        return tuple(_load(name) for name in NAMES)
    raise AttributeError("module %r has no attribute %r" % (__name__, attr))


def by_name(name):
    """The Arch called `name` (Process.arch, Thread.arch), or None."""
    return _load(name) if name in _MTYPE else None


_BY_MTYPE = {}


def by_mtype(mtype):
    """The Archs CRIU marks with core_entry.march `mtype` (x86_64 and ia32
    share one)."""
    found = _BY_MTYPE.get(mtype)
    if found is None:
        found = tuple(_load(name) for name, m in MODULES if m == mtype)
        if len(_BY_MTYPE) < 64:  # an image's mtype is any number
            _BY_MTYPE[mtype] = found
    return found


def identify(path, mtype, thread_info_of):
    """The Arch of a core image: `thread_info_of(arch)` gives the image's
    thread_info for that arch (None when absent).  Raises BadImage for a
    machine we do not convert.  The candidates after the first are loaded
    only when the first does not accept the registers."""
    names = [name for name, m in MODULES if m == mtype]
    if not names:
        raise BadImage(path, "machine type missing or unknown")
    first = _load(names[0])
    if len(names) == 1:
        return first
    ti = thread_info_of(first)
    if ti is None:
        return first   # the first is the native one; no registers
    for name in names:
        a = _load(name)
        if a.accepts is None or a.accepts(ti):
            return a
    return first


def for_process(proc, path="core"):
    """The Arch of a loaded process."""
    arch = by_name(proc.arch)
    if arch is None:
        raise BadImage(path, "architecture %s is not supported" % proc.arch)
    return arch
