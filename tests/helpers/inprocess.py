"""Run the CLI's main() inside the test process.

Why this exists: the fuzz test converts thousands of images, and tests that
inject a fault into the writer (a full disk) must patch functions in the
same process; a subprocess per run would be too slow or unpatchable.  Output
is caught at the file descriptors, so that anything C code writes to fd 2
(protobuf's C++ library logs there) counts as output too.
"""
import contextlib
import io
import os
import signal
import tempfile

from criu_coredump import cli


@contextlib.contextmanager
def _fd_captured(fd):
    """What is written to file descriptor fd (by Python or by C code such as
    protobuf's C++ library) meanwhile; yields a list filled at exit."""
    got = []
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield got
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            got.append(tmp.read().decode("utf-8", "backslashreplace"))


def run_main(argv):
    """cli.main in-process: (exit code, stdout, stderr), the streams caught
    at the file descriptors.  Handlers main installs for SIGINT/SIGTERM are
    put back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with _fd_captured(2) as raw_err, _fd_captured(1) as raw_out:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli.main(argv)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
    return rc, out.getvalue() + raw_out[0], err.getvalue() + raw_err[0]
