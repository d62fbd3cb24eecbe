"""criu-coredump: ELF core files from CRIU checkpoints, one per process.

    from criu_coredump import generate
    results = generate("IMGDIR", "OUTDIR", pids=[1234], root="/container/rootfs")
"""
__version__ = "0.1.0"


def generate(*args, **kwargs):
    """See criu_coredump.convert.generate (imported lazily: pycriu is needed)."""
    from .convert import generate as _generate
    return _generate(*args, **kwargs)
