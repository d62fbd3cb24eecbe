"""Descriptors 0, 1 and 2 open before anything else is: `reserve()`.

A program started with a standard stream closed (`coredump ... >&- 2>&-`)
hands the lowest free numbers to the next files it opens.  Python 3.14's
`import ctypes` (libffi 3.5) keeps a file of its own open: with stdout
closed, that file became descriptor 1, and so not free for /dev/null when
cli.main() got to it, and the summary line was written into it.  Every
entry point (bin/coredump, `python -m criu_coredump`, the installed
`coredump` command) therefore calls reserve() first, before it imports
anything else of this package; this module imports only `os`, which the
interpreter has loaded at start-up.
"""
import os


def reserve() -> None:
    """Open /dev/null on each of descriptors 0-2 that is closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free number
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
