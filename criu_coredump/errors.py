"""Exception types, one per kind of failure, and the exit codes they map to.

The CLI catches these once and prints `coredump: error: <file>: <what>`; no
other module prints or exits, so the library can be used without a process.
"""

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

# ImportError's text where pycriu (or the protobuf it brings) is missing
PYCRIU_MISSING = ("pycriu is not importable: install the distribution package "
                  "that ships it ('python3-pycriu' on Debian 13+, 'criu' on "
                  "Debian 12/Ubuntu, 'python3-criu' on Fedora)")


def one_line(text):
    """text with control characters escaped: a file name taken from an
    image must not be able to break a message over lines or forge one."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   # a byte that was not UTF-8 (surrogateescape) as \xNN
                   "\\x%02x" % (ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else
                   c.encode("unicode_escape").decode("ascii")
                   for c in text)


class CoredumpError(Exception):
    """Base: something about a named file is wrong."""
    exit_code = EXIT_BAD_INPUT

    def __init__(self, path, what):
        super().__init__("%s: %s" % (path, what))
        self.path = str(path)
        self.what = what

    def __reduce__(self):
        # pickled with its two arguments: results come back from the
        # children of --jobs through a pipe
        return (type(self), (self.path, self.what))


class BadImage(CoredumpError):
    """An image file is missing, truncated, of the wrong kind or inconsistent."""


class OutputError(CoredumpError):
    """The core could not be written (disk full, permissions, ...)."""
    exit_code = EXIT_BAD_INPUT


class UsageError(CoredumpError):
    """The command line asks for something that cannot be done."""
    exit_code = EXIT_USAGE
