"""Per-architecture note builders, chosen from the images (core `mtype` and,
on x86, the register mode), never from the host running the conversion."""
from ..errors import BadImage


def for_process(proc, path="core"):
    """The arch module for a process's images."""
    name = proc.arch
    if name == "x86_64":
        from . import x86_64 as mod
    elif name == "ia32":
        from . import ia32 as mod
    elif name == "aarch64":
        from . import aarch64 as mod
    elif name == "arm":
        from . import arm as mod
    else:
        raise BadImage(path, "architecture %s is not supported" % name)
    return mod
