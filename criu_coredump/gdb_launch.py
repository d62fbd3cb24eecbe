"""`coredump --gdb PID`: write one core and open it in gdb, as
`coredumpctl gdb` does for the cores systemd keeps.

The core goes to OUTDIR when one is given (and stays there), else to a
temporary directory removed when gdb exits.  gdb gets the executable the
process ran (the mm's exe_file_id, named in files.img), found below --root
with the same confinement as the mapped files, and `set sysroot DIR` for
--root.  The sysroot is set with -iex, before gdb loads the core, so the
libraries and the NT_FILE paths are looked up in the root from the start
(with -ex gdb first looks on the host and warns about every file it misses).
Arguments after `--` on the coredump command line are handed to gdb before
the executable and core: `-- -batch -ex bt` prints a backtrace and exits.

The exit code is gdb's own.  While gdb runs, Ctrl-C belongs to gdb (it
interrupts the command being run); coredump ignores it.
"""
import os
import platform
import shutil
import signal
import subprocess
import tempfile

from . import arch as arches
from . import images
from .errors import CoredumpError
from . import imagedir
from .imagedir import ImageDir
from .rootfs import RootFS

EXIT_NO_GDB = 127  # as a shell says for a command it cannot find

def find_gdb(arch=None):
    """The debugger for a core of `arch` (an arch/ name): the host's gdb
    when it reads that architecture (the Arch's native_hosts), else
    gdb-multiarch (Debian, Ubuntu), which reads them all: an aarch64
    checkpoint is debugged on an x86_64 laptop with it.  Whichever is
    installed otherwise."""
    desc = arches.by_name(arch) if arch is not None else None
    native = desc is None or platform.machine() in desc.native_hosts
    names = ("gdb", "gdb-multiarch") if native else ("gdb-multiarch", "gdb")
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def executable_of(images_dir, pid, root=None, warn=None):
    """Host path of the program process `pid` ran, or None (with a warning)
    when the checkpoint does not name it or it cannot be found."""
    d = imagedir.at(images_dir)
    ckpt = images.open_checkpoint(d)
    entry, = images.select(ckpt, [pid])
    proc = images.load_process(d, entry)
    if proc.mm is None or not proc.mm.exe_file_id:
        return None
    f = ckpt.files.get(proc.mm.exe_file_id)
    if f is None or f.kind != "reg":
        if warn:
            warn(d.join(d.FILES), "no executable file "
                 "with id %d; gdb starts without it" % proc.mm.exe_file_id)
        return None
    rootfs = RootFS(root)
    try:
        if f.deleted:
            # what has that name now is not the program that ran
            if warn:
                warn(rootfs.display(f.path), "the executable was deleted while "
                     "the process ran; gdb starts without it")
            return None
        try:
            fd = rootfs.open(f.path)
        except OSError as e:
            if warn:
                warn(rootfs.display(f.path), "executable not found (%s); gdb "
                     "starts without it" % (e.strerror or e))
            return None
        try:
            # the kernel resolved it (below the root): its real host path
            return os.readlink("/proc/self/fd/%d" % fd)
        finally:
            os.close(fd)
    finally:
        rootfs.close()


def gdb_command(gdb, core, exe=None, root=None, extra=()):
    cmd = [gdb]
    if root is not None:
        cmd += ["-iex", "set sysroot %s" % os.path.abspath(root)]
    cmd += list(extra)
    if exe is not None:
        cmd.append(exe)
    else:
        cmd += ["-c"]
    cmd.append(core)
    return cmd


def run_gdb(cmd):
    """Run gdb in the foreground and return its exit code."""
    def ignore(signum, frame):
        pass  # gdb has the terminal; a caught handler is reset in gdb by exec
    old = signal.signal(signal.SIGINT, ignore)
    try:
        return subprocess.call(cmd)
    finally:
        signal.signal(signal.SIGINT, old)


def debug(args, gdb_args, convert, say):
    """Convert process args.gdb (with `convert(out_dir) -> CoreResult`), start
    gdb on its core, and return gdb's exit code (or the conversion's error
    code when no core could be written)."""
    if find_gdb() is None:
        say("error", "gdb: not found in PATH; install gdb to use --gdb")
        return EXIT_NO_GDB
    tmp = None
    out_dir = args.out_dir
    if out_dir is None:
        tmp = out_dir = tempfile.mkdtemp(prefix="coredump-%d-" % args.gdb)
    try:
        r = convert(out_dir)
        if r.error is not None:
            raise r.error
        if r.skipped:
            raise CoredumpError(ImageDir(args.images_dir).join(ImageDir.PSTREE),
                                "process %d (%s) has no core to debug: %s"
                                % (r.pid, r.comm, r.skipped))
        exe = executable_of(args.images_dir, args.gdb, args.root,
                            lambda path, what: say("warning", "%s: %s" % (path, what)))
        cmd = gdb_command(find_gdb(r.arch), r.path, exe, args.root, gdb_args)
        code = run_gdb(cmd)
        return code if code >= 0 else 128 - code
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
