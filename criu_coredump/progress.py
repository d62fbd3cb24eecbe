"""A progress bar per core on a terminal, drawn by tqdm.

convert.generate() calls start(proc, total_bytes), advance(nbytes) as page
data is copied, and finish(proc).  The bar lives on stderr and only when
stderr is a terminal: in a pipe, a log file or CI it would be noise, so
`for_stream()` then returns None and nothing is drawn.  `-q` asks for none
either.  Messages printed while a bar is shown go through `write()`, which
clears the bar, prints the line and redraws it, so lines never mix.

tqdm is imported only when a bar is drawn: a run without a terminal (the
common case in scripts, and every worker of a tree) does not pay for it.
"""
import sys


# tqdm's default without the unit after the counts would read "12.0M/40.0M"
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}B/{total_fmt}B "
              "[{elapsed}<{remaining}, {rate_fmt}]")


class TqdmProgress:
    """One bar at a time: bytes of page data copied into the current core."""

    def __init__(self, stream):
        from tqdm import tqdm
        self._tqdm = tqdm
        self.stream = stream
        self.bar = None

    def start(self, proc, total_bytes):
        self.bar = self._tqdm(total=total_bytes, desc="core.%d (%s)" % (proc.pid, proc.comm),
                        unit="B", unit_scale=True, unit_divisor=1024,
                        file=self.stream, leave=False, dynamic_ncols=True,
                        mininterval=0.2, bar_format=BAR_FORMAT)

    def advance(self, nbytes):
        if self.bar is not None:
            self.bar.update(nbytes)

    def finish(self, proc):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, line):
        self._tqdm.write(line, file=self.stream)


def for_stream(stream=None, quiet=False):
    """A TqdmProgress on `stream` (stderr) when it is a terminal, else None."""
    stream = sys.stderr if stream is None else stream
    if quiet:
        return None
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return TqdmProgress(stream) if tty else None
