"""Running the command and the real tools that judge what it wrote.

One way to run coredump as a user does (`run_coredump`, `convert`), one way
to run gdb (`gdb`: every test's gdb session goes through it), and readelf.
Expected bytes are compared with what these readers return, never with the
package's own parser.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from .paths import COREDUMP, GDBCHECK


def need(tool):
    """Fail loudly (never skip) when a tool the test needs is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s is not installed: run scripts/setup.sh" % tool)
    return path


def signals_at_default():
    """preexec_fn of a conversion a test sends SIGINT or SIGHUP: a suite
    started by nohup, or in the background of a shell without job
    control, has them ignored, and a child inherits that (the conversion
    would go on, as it should there)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)



def gdb_major(program="gdb"):
    """The major version of a gdb (13 for "GNU gdb (Debian 13.1-3) 13.1")."""
    out = subprocess.run([need(program), "--version"], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    return int(re.search(r"^GNU gdb .*?(\d+)\.\d+", out, re.M).group(1))

def run_coredump(*args, check=None, **kw):
    """Run bin/coredump as a user would; returns CompletedProcess (text)."""
    p = subprocess.run([sys.executable, COREDUMP] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       **dict({"timeout": 600}, **kw))
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def convert(images_dir, out_dir, *args, check=0, **kw):
    """Run the command on a checkpoint; (CompletedProcess, core paths by
    pid)."""
    os.makedirs(str(out_dir), exist_ok=True)
    p = run_coredump("-i", images_dir, "-o", out_dir, *args, check=check, **kw)
    cores = {int(f.split(".")[1]): os.path.join(str(out_dir), f)
             for f in os.listdir(str(out_dir)) if re.match(r"core\.\d+$", f)}
    return p, cores


def gdb(core, *commands, exe=None, sysroot=None, script=None, program="gdb",
        early=(), check=False, timeout=300):
    """gdb's output (stdout and stderr) for `commands` on a core, in batch
    mode without any init file: `exe` the program, `sysroot` set before the
    core and its libraries load (gdb 16 otherwise first loads this
    machine's libc), `script` a command file run after the commands,
    `early` commands run before anything loads (-iex), `program` another
    gdb (gdb-multiarch).  check: assert gdb exits 0."""
    args = [need(program), "-batch", "-nx"]
    if sysroot is not None:
        args += ["-iex", "set sysroot " + os.path.abspath(sysroot)]
    for c in early:
        args += ["-iex", c]
    for c in commands:
        args += ["-ex", c]
    if script is not None:
        args += ["-x", script]
    args += ([exe] if exe else []) + ([core] if exe else ["-c", core])
    # names gdb prints (files, comms) may be any bytes: kept, as os does
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, errors="surrogateescape", timeout=timeout)
    if check:
        assert p.returncode == 0, p.stdout
    return p.stdout


def gdb_memory(core, ranges, tmp):
    """Memory of the core at each (addr, size), as gdb reads it (`dump binary
    memory`); None where gdb cannot access it."""
    tmp = str(tmp)
    os.makedirs(tmp, exist_ok=True)
    cmds = []
    outs = []
    for i, (addr, size) in enumerate(ranges):
        path = os.path.join(tmp, "mem%d.bin" % i)
        if os.path.exists(path):
            os.unlink(path)
        outs.append(path)
        cmds.append("dump binary memory %s 0x%x 0x%x" % (path, addr, addr + size))
    out = gdb(core, *cmds, timeout=600)
    assert "not in executable format" not in out, out
    res = []
    for path in outs:
        if os.path.exists(path):
            with open(path, "rb") as f:
                res.append(f.read())
        else:
            res.append(None)
    return res


def gdbcheck(fixture, core):
    """The shared tools/gdbcheck.py on a core of a fixture."""
    need("gdb")
    return subprocess.run([sys.executable, GDBCHECK, fixture, core, "--show"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def readelf(*args):
    need("readelf")
    p = subprocess.run(["readelf"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


LOAD_RE = re.compile(r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+"
                     r"(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(.{3})\s+0x[0-9a-f]+$")


def loads(core):
    """{vaddr: (offset, filesz, memsz, flags)} of the PT_LOADs, per readelf."""
    out = {}
    for line in readelf("-lW", core).splitlines():
        m = LOAD_RE.match(line)
        if m:
            off, va, fsz, msz, flg = m.groups()
            out[int(va, 16)] = (int(off, 16), int(fsz, 16), int(msz, 16),
                                flg.strip())
    return out
