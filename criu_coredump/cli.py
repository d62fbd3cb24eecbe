"""Command line: argument parsing, messages and exit codes.

Errors are caught here, once, and printed as one line
`coredump: error: <file>: <what>`; no traceback reaches the user.
"""
import argparse
import os
import sys

from . import __version__
from .errors import (EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK,
                     EXIT_USAGE, CoredumpError, one_line)
from .writer import install_signal_cleanup

PROG = "coredump"

EPILOG = """\
exit codes:
  0  every requested core was written completely
  1  usage error (bad options)
  2  bad input: an image is missing, truncated or inconsistent, or the
     output cannot be written; no core is left half-written
  3  cores written but incomplete: a process failed while others were
     written, lazy pages missing from the images, or mapped files missing
     (their pages are holes)
  on SIGINT/SIGTERM the unfinished core is removed and the program dies of
  the signal (a shell shows 128+signal, e.g. 130)

examples:
  coredump -i /var/lib/ckpt/1234 -o /tmp/cores
  coredump -i IMGDIR -o OUTDIR --pid 1234 --root /var/lib/containers/abc/rootfs
  gdb /usr/bin/myprog OUTDIR/core.1234
"""


def _filter(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not 0 <= v < 1 << 10:
        raise argparse.ArgumentTypeError("coredump_filter bits are 0x0-0x3ff")
    return v


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (PROG, message))
        sys.exit(EXIT_USAGE)


def build_parser():
    from .memory import DEFAULT_FILTER
    p = _Parser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Turn a CRIU checkpoint (an image directory written "
                "by `criu dump`) into ELF core files, one per process, that gdb, "
                "lldb and elfutils read like the kernel's.",
                epilog=EPILOG)
    p.add_argument("-i", "--images-dir", metavar="IMGDIR", required=True,
                   help="the checkpoint's image directory")
    p.add_argument("-o", "--out-dir", metavar="OUTDIR", default=".",
                   help="where core.<pid> files are written (default: .)")
    p.add_argument("--pid", type=int, action="append", metavar="N",
                   help="only this process (repeatable)")
    p.add_argument("--root", metavar="DIR",
                   help="read mapped files below DIR as if it were / (a "
                   "container's root filesystem); nothing outside it is read")
    p.add_argument("--filter", type=_filter, default=DEFAULT_FILTER, metavar="MASK",
                   help="coredump_filter bits deciding which mappings are dumped "
                   "(default 0x%x: the kernel's 0x33 plus shared files)" % DEFAULT_FILTER)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only errors")
    p.add_argument("--version", action="version", version="%s %s" % (PROG, __version__))
    return p


def _say(kind, text):
    sys.stderr.write("%s: %s: %s\n" % (PROG, kind, one_line(text)))


def run(args):
    from .convert import generate

    if args.root is not None and not os.path.isdir(args.root):
        raise CoredumpError(args.root, "--root is not a directory")
    warn = (lambda path, what: _say("warning", "%s: %s" % (path, what)))
    results = generate(args.images_dir, args.out_dir, pids=args.pid,
                       root=args.root, dump_filter=args.filter, warn=warn)
    code = EXIT_OK
    for r in results:
        if r.error is not None:
            _say("error", str(r.error))
            code = EXIT_INCOMPLETE
        elif r.skipped:
            if not args.quiet:
                _say("note", "process %d (%s) skipped: %s" % (r.pid, r.comm, r.skipped))
        else:
            if r.incomplete and code == EXIT_OK:
                code = EXIT_INCOMPLETE
            if not args.quiet:
                print("%s: pid %d (%s), %d threads, %d segments, %d bytes of "
                      "memory (%d in holes)%s" % (
                          r.path, r.pid, r.comm, r.threads, r.segments, r.dumped,
                          r.holes, ", %d warnings" % len(r.warnings) if r.warnings else ""))
    if not any(r.path for r in results) and any(r.error for r in results):
        code = max(r.error.exit_code for r in results if r.error)
    return code


def main(argv=None):
    args = build_parser().parse_args(argv)
    install_signal_cleanup()
    try:
        return run(args)
    except CoredumpError as e:
        _say("error", str(e))
        return e.exit_code
    except ImportError as e:
        _say("error", str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as e:
        _say("error", "%s: %s" % (e.filename or args.images_dir, e.strerror or e))
        return EXIT_BAD_INPUT
