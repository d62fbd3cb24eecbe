"""Reading our cores back with the real tools: gdb for memory, readelf for
headers.  Expected bytes are compared with what these readers return, never
with our own parser."""
import os
import re
import subprocess

from .conftest import need, run_coredump

LOAD_RE = re.compile(r"^\s*LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+0x[0-9a-f]+\s+"
                     r"(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(.{3})\s+0x[0-9a-f]+$")


def convert(images_dir, out_dir, *args, check=0, **kw):
    """Run the CLI on a synthetic checkpoint; (CompletedProcess, core paths
    by pid)."""
    os.makedirs(str(out_dir), exist_ok=True)
    p = run_coredump("-i", images_dir, "-o", out_dir, *args, check=check, **kw)
    cores = {int(f.split(".")[1]): os.path.join(str(out_dir), f)
             for f in os.listdir(str(out_dir)) if re.match(r"core\.\d+$", f)}
    return p, cores


def readelf(*args):
    need("readelf")
    p = subprocess.run(["readelf"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout


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


def gdb_memory(core, ranges, tmp):
    """Memory of the core at each (addr, size), as gdb reads it (`dump binary
    memory`); None where gdb cannot access it."""
    need("gdb")
    tmp = str(tmp)
    os.makedirs(tmp, exist_ok=True)
    cmds = []
    outs = []
    for i, (addr, size) in enumerate(ranges):
        path = os.path.join(tmp, "mem%d.bin" % i)
        if os.path.exists(path):
            os.unlink(path)
        outs.append(path)
        cmds += ["-ex", "dump binary memory %s 0x%x 0x%x" % (path, addr, addr + size)]
    p = subprocess.run(["gdb", "-batch", "-nx", "-c", core] + cmds,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
    assert "not in executable format" not in p.stdout, p.stdout
    res = []
    for path in outs:
        if os.path.exists(path):
            with open(path, "rb") as f:
                res.append(f.read())
        else:
            res.append(None)
    return res
