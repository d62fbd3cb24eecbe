"""Command line: argument parsing, messages and exit codes.

Errors are caught here, once, and printed as one line
`coredump: error: <file>: <what>`; no traceback reaches the user.
"""
import argparse
import io
import os
import sys

from . import __version__, report, stdfds
from .errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_USAGE, CoredumpError, one_line
from .lifecycle import install_signal_cleanup
from .writer import check_out_dir

PROG = "coredump"

EPILOG = """\
what it does:
  by default      write OUTDIR/core.<pid> for every process of the checkpoint
                  (or only those given with --pid) and print one line per core
  --list          print the checkpoint's process tree; write nothing
  --gdb PID       write that process's core (to a temporary directory unless
                  -o is given) and start gdb on it with the process's
                  executable and, with --root, `set sysroot`; arguments after
                  `--` are passed to gdb

exit codes:
  0    every requested core was written completely
  1    usage error (bad options)
  2    bad input: an image is missing, truncated or inconsistent, or the
       output cannot be written; no core is left half-written
  3    cores written but incomplete: a process failed while others were
       written, lazy pages missing from the images, or mapped files missing
       (their pages are holes)
  130  interrupted by SIGINT (Ctrl-C): the unfinished core is removed and
       the program dies of the signal (a shell shows 128 + its number)
  143  terminated by SIGTERM: the same
  129  hung up (SIGHUP, the terminal closed): the same
  --gdb exits with gdb's own code, or 127 when gdb is not installed

examples:
  coredump -i /var/lib/ckpt/1234 -o /tmp/cores
  coredump -i IMGDIR -o OUTDIR --pid 1234 --root /var/lib/containers/abc/rootfs
  coredump -i IMGDIR --list
  coredump -i IMGDIR -o OUTDIR --json > cores.json
  coredump -i IMGDIR --gdb 1234 --root ROOTFS
  coredump -i IMGDIR --gdb 1234 -- -batch -ex 'thread apply all bt'
  coredump -i checkpoint.tar.zst -o /tmp/cores --root image-rootfs.tar.gz
  coredump -i checkpoint.tar --gdb 1 --debuginfod https://debuginfod.debian.net
"""


def _jobs(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return v


def _filter(text):
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("not a number: %r" % text)
    if not 0 <= v < 1 << 10:
        raise argparse.ArgumentTypeError("coredump_filter bits are 0x0-0x3ff")
    return v


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter, told the terminal's width: argparse would ask
    shutil (and import it, with bz2, lzma, ...) at every start, since
    add_argument() makes a formatter even when no help is printed."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        if width is None:  # as shutil.get_terminal_size() finds it
            try:
                width = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                width = 0
            if width <= 0:
                try:
                    width = os.get_terminal_size(sys.__stdout__.fileno()).columns
                except (AttributeError, ValueError, OSError):
                    width = 0
            if width <= 0:
                width = 80
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (PROG, message))
        sys.exit(EXIT_USAGE)


def build_parser():
    from .policy import DEFAULT_FILTER
    p = _Parser(prog=PROG, formatter_class=_Formatter,
                usage="%(prog)s -i IMGDIR [-o OUTDIR] [--pid N] [--root DIR] "
                "[--filter MASK] [-q] [--json]\n"
                "       %(prog)s -i IMGDIR --list [--json]\n"
                "       %(prog)s -i IMGDIR --gdb PID [-o OUTDIR] [--root DIR] "
                "[-- GDB-ARGS...]",
                description="Turn a CRIU checkpoint (an image directory written "
                "by `criu dump`) into ELF core files, one per process, that gdb, "
                "lldb and elfutils read like the kernel's.",
                epilog=EPILOG)
    p.add_argument("-i", "--images-dir", metavar="IMGDIR", required=True,
                   help="the checkpoint's image directory, or a container "
                   "checkpoint archive (Podman, CRI-O/kubelet, containerd: tar, "
                   "plain or compressed with gzip, zstd, xz or bzip2)")
    p.add_argument("-o", "--out-dir", metavar="OUTDIR",
                   help="where core.<pid> files are written (default: the "
                   "current directory; with --gdb: a temporary directory "
                   "removed when gdb exits)")
    p.add_argument("--pid", type=int, action="append", metavar="N",
                   help="only this process (repeatable)")
    p.add_argument("--root", metavar="DIR",
                   help="read mapped files below DIR as if it were / (a "
                   "container's root filesystem); nothing outside it is read")
    p.add_argument("--debuginfod", nargs="?", const="", metavar="URLS",
                   help="fetch mapped executables and libraries missing below "
                   "--root (or of another build) from these debuginfod "
                   "servers by the build-id CRIU recorded, verified and cached "
                   "as elfutils does (default servers: DEBUGINFOD_URLS, which "
                   "alone also turns this on)")
    p.add_argument("--filter", type=_filter, default=DEFAULT_FILTER, metavar="MASK",
                   help="coredump_filter bits deciding which mappings are dumped "
                   "(default 0x%x: the kernel's 0x33 plus shared files)" % DEFAULT_FILTER)
    p.add_argument("-j", "--jobs", type=_jobs, metavar="N",
                   help="convert up to N processes at once, each in its own "
                   "worker (default: the number of CPUs)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true",
                      help="print the process tree (pid, ppid, state, threads, "
                      "mapped size, dumped pages) and write nothing")
    mode.add_argument("--gdb", type=int, metavar="PID",
                      help="write the core of PID and open it in gdb")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON document on stdout "
                   "(with --list: the process tree)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar, no summary, no notes: only warnings "
                   "and errors")
    p.add_argument("--version", action="version", version="%s %s" % (PROG, __version__))
    return p


def parse_args(argv=None):
    """Options, plus `args.gdb_args`: what follows `--`, handed to gdb."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    gdb_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, gdb_args = argv[:i], argv[i + 1:]
    p = build_parser()
    args = p.parse_args(argv)
    args.gdb_args = gdb_args
    if gdb_args and args.gdb is None:
        p.error("arguments after -- are passed to gdb: they need --gdb PID")
    if args.list and (args.pid or args.out_dir is not None):
        p.error("--list writes nothing: it takes neither --pid nor -o")
    if args.gdb is not None and (args.pid or args.json):
        p.error("--gdb PID opens one core: it takes neither --pid nor --json")
    return args


STDOUT = "<stdout>"  # how messages name standard output


class _StdoutError(Exception):
    """Standard output could not be written (a full disk, a closed pipe)."""

    def __init__(self, err):
        super().__init__(err.strerror or str(err))


def _print(text):
    """A line on stdout, flushed now: a failure is _StdoutError, reported as
    what it is (not as an error of the images)."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except OSError as e:
        raise _StdoutError(e) from None


def _std_streams():
    """Make the standard streams safe to use whatever the caller gave us.

    * A closed descriptor 0, 1 or 2 (`2>&-`) is opened on /dev/null
      (stdfds.reserve(): else the first file opened, an image, a core,
      would get its number and messages would be written into it), and
      Python, which then has no sys.stdout or sys.stderr, gets them.
    * Text that the stream's encoding cannot carry (PYTHONIOENCODING=ascii,
      a C locale, a non-ASCII OUTDIR) is written as backslash escapes, not
      a UnicodeEncodeError after the cores are written."""
    stdfds.reserve()  # every entry point did it first; again for callers of main()
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _drop_stdout():
    """After a failed write: what is left in stdout's buffer goes to
    /dev/null, so that the interpreter's last flush does not fail again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


# how a message names files: an archive's members by the archive's name,
# not by the private directory they were unpacked into (container.Input)
_show = [lambda text: text]


def _say(kind, text):
    try:
        sys.stderr.write("%s: %s: %s\n" % (PROG, kind, one_line(_show[0](text))))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # nowhere to say it: the exit code still tells


def _messages(progress):
    """say(kind, text) that does not break a progress bar being drawn."""
    if progress is None:
        return _say
    return lambda kind, text: progress.write(
        "%s: %s: %s" % (PROG, kind, one_line(_show[0](text))))


def _check_dirs(out_dir, root):
    if out_dir is not None:
        check_out_dir(out_dir)
    if root is not None and not os.path.isdir(root) and not os.path.isfile(root):
        raise CoredumpError(root, "--root is neither a directory nor a tar "
                            "archive of one")


def _open_input(args, parent, listing=False):
    """-i (and --root) opened: an archive is unpacked as far as needed into
    a private directory in `parent`; the Input removes it when closed.
    An image directory (and a --root directory) is used as it is, without
    importing the archive code."""
    from .inputs import Input, archive_file
    if not archive_file(args.images_dir) and \
            not archive_file(getattr(args, "root", None)):
        return Input(path=args.images_dir, images_dir=args.images_dir)
    from . import container
    inp = container.open_input(args.images_dir, parent, listing)
    try:
        container.root_input(getattr(args, "root", None), inp, parent)
    except BaseException:
        inp.close()
        raise
    if inp.tmp:
        _show[0] = inp.show
    return inp


def _client(args, warn):
    """The debuginfod client when --debuginfod or DEBUGINFOD_URLS asks for
    one, else None."""
    if args.debuginfod is None and not os.environ.get("DEBUGINFOD_URLS"):
        return None
    from . import debuginfod
    urls = debuginfod.urls_from(args.debuginfod)
    if not urls:
        from .errors import UsageError
        raise UsageError("--debuginfod", "no server: give URLS or set "
                         "DEBUGINFOD_URLS")
    return debuginfod.Client(urls, warn)


def _root_arg(args, inp, warn):
    """What generate() reads mapped files below: --root as given for an
    image directory (unchanged behaviour), the container's files for an
    archive or an image root given as a tar, and with debuginfod the files
    binaries.locate() picks."""
    root = inp.rootfs(args.root) if inp.tmp else args.root
    client = _client(args, warn)
    if client is None:
        return root
    from . import images
    from .binaries import Located
    from .rootfs import RootFS
    if not hasattr(root, "open"):
        if root is not None and not os.path.isdir(root):
            raise CoredumpError(root, "--root is not a directory")
        root = RootFS(root)
    return Located(root, images.open_checkpoint(inp.images_dir).files, client)


def _with_container(doc, inp):
    """A JSON answer with the archive's container added."""
    if inp.container is None:
        return inp.show(doc)
    import json
    d = json.loads(doc)
    d["container"] = inp.container.record()
    return inp.show(json.dumps(d, indent=2))


def run(args):
    if args.list:
        return list_tree(args)
    if args.gdb is not None:
        return open_in_gdb(args)
    from .convert import generate
    from .progress import for_stream

    out_dir = args.out_dir if args.out_dir is not None else "."
    _check_dirs(out_dir, args.root)
    with _open_input(args, out_dir) as inp:
        return _convert(args, out_dir, inp, generate, for_stream)


def _convert(args, out_dir, inp, generate, for_stream):
    progress = for_stream(sys.stderr, quiet=args.quiet)
    say = _messages(progress)
    warn = (lambda path, what: say("warning", "%s: %s" % (path, what)))
    from .parallel import default_jobs
    try:
        results = generate(inp.images_dir, out_dir, pids=args.pid,
                           root=_root_arg(args, inp, warn), dump_filter=args.filter,
                           progress=progress, warn=warn,
                           jobs=args.jobs or default_jobs())
    except CoredumpError as e:
        if args.json:
            _print(_with_container(report.json_document(
                [], e.exit_code, args.images_dir, out_dir, error=str(e)), inp))
        raise
    for r in results:
        if r.error is not None:
            say("error", str(r.error))
        elif r.skipped:
            if not args.quiet:
                say("note", "process %d (%s) skipped: %s" % (r.pid, r.comm, r.skipped))
        elif not args.quiet and not args.json:
            _print(report.summary_line(r))
    code = report.exit_code(results)
    if args.json:
        _print(_with_container(report.json_document(
            results, code, args.images_dir, out_dir), inp))
    return code


def list_tree(args):
    from . import listing
    with _open_input(args, None, listing=True) as inp:
        rows = listing.list_processes(inp.images_dir)
        for r in rows:
            for w in r.warnings:
                _say("warning", str(w))
            if r.error is not None:
                _say("error", str(r.error))
        code = report.exit_code(rows)
        if args.json:
            _print(_with_container(listing.json_document(
                rows, code, args.images_dir), inp))
        else:
            if inp.container is not None:
                _print(inp.container.line())
            _print(listing.format_table(rows))
        return code


def open_in_gdb(args):
    from .convert import generate
    from .gdb_launch import debug
    from .progress import for_stream

    _check_dirs(args.out_dir, args.root)
    progress = for_stream(sys.stderr, quiet=args.quiet)
    say = _messages(progress)
    warn = lambda path, what: say("warning", "%s: %s" % (path, what))
    with _open_input(args, args.out_dir) as inp:
        root = _root_arg(args, inp, warn)

        def convert(out_dir):
            r, = generate(inp.images_dir, out_dir, pids=[args.gdb],
                          root=root, dump_filter=args.filter,
                          progress=progress, warn=warn)
            if r.path and not args.quiet:
                _say("note", report.summary_line(r))
            return r
        if hasattr(root, "open"):
            inp.opened_root = root
        return debug(args, args.gdb_args, convert, _say,
                     opened=inp if hasattr(root, "open") else None)


def exit_now(code):
    """Exit with `code` (main()'s) once the standard streams are flushed,
    without the interpreter's teardown: freeing every object and module of
    the run took 10-20 ms, a fifth of a small process's conversion.
    Nothing is left to it: the cores are closed and renamed, the threads
    (writeback, commits, the progress bar's) are done.  If a stream cannot
    be flushed, the interpreter's own exit says so, as before."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)
    os._exit(code if isinstance(code, int) else 1)


def main(argv=None):
    _show[0] = lambda text: text
    _std_streams()
    args = parse_args(argv)
    install_signal_cleanup()
    try:
        return run(args)
    except _StdoutError as e:
        _drop_stdout()
        _say("error", "%s: cannot write: %s" % (STDOUT, e))
        return EXIT_BAD_INPUT
    except CoredumpError as e:
        _say("error", str(e))
        return e.exit_code
    except ImportError as e:
        _say("error", str(e))
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except MemoryError:
        _say("error", "%s: out of memory" % args.images_dir)
        return EXIT_BAD_INPUT
    except OSError as e:
        _say("error", "%s: %s" % (e.filename or args.images_dir, e.strerror or e))
        return EXIT_BAD_INPUT
