#!/usr/bin/env python3
"""Fingerprint every core the converter makes from the fixtures, to prove a
refactor changed no byte.

Converts each real fixture (../shared/fixtures, or CCD_FIXTURES) with and
without `--root`, plus a few synthetic checkpoints (tests/synth.py: mapped
files under every filter bit, shmem, parent chains, lazy pages, both pagemap
encodings), and prints one line per core: the case, the core's name, its
sha256; then each run's exit code and its messages (stdout and stderr, with
the temporary directories replaced by <OUT>, <FX>, <SYN>).

    scripts/core-hashes.py > before.txt
    ... change the code ...
    scripts/core-hashes.py > after.txt && diff before.txt after.txt

The fixtures are copied with the root filesystems' symlinks restored (copies
of shared/ may have turned `lib -> usr/lib` into small files holding the
target), as the tests do; the logic is repeated here so that this script
stays the same while the tests are reorganised around it.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("CCD_FIXTURES",
                          os.path.join(os.path.dirname(REPO), "shared", "fixtures"))
COREDUMP = os.path.join(REPO, "bin", "coredump")
sys.path.insert(0, REPO)

FIXTURE_NAMES = ["threads", "stopped_static", "tree", "shmem", "modern_threads"]


def fixture_names():
    zdtm = os.path.join(FIXTURES, "zdtm")
    return FIXTURE_NAMES + sorted("zdtm/" + n for n in os.listdir(zdtm)
                                  if os.path.isdir(os.path.join(zdtm, n)))


def restore_links(root):
    """Small regular files holding a link target become the link again."""
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p) or os.path.getsize(p) > 255:
                continue
            with open(p, "rb") as fh:
                target = fh.read()
            if b"\0" in target or b"\n" in target or not target:
                continue
            t = target.decode(errors="replace")
            if t.startswith("/"):
                t = os.path.relpath(os.path.join(root, t.lstrip("/")), d)
            if not os.path.exists(os.path.join(d, t)):
                continue
            os.unlink(p)
            os.symlink(t, p)


def fixture_copy(name, base):
    dst = os.path.join(base, name)
    shutil.copytree(os.path.join(FIXTURES, name), dst, symlinks=True)
    for d, _, files in os.walk(dst):
        os.chmod(d, 0o755)
        for f in files:
            p = os.path.join(d, f)
            if not os.path.islink(p):
                os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    restore_links(os.path.join(dst, "root"))
    return dst


def synthetic(base):
    """(name, images, root or None, extra args) of the synthetic cases."""
    try:
        from tests.helpers import synth
    except ImportError:  # a checkout from before tests/helpers/synth.py
        from tests import synth
    P = synth.PAGE
    cases = []

    def page(text):
        return text.encode().ljust(P, b"~")

    # mapped files, shmem, hugetlb, dontdump, JIT: every filter rule
    root = os.path.join(base, "filter-root")
    elf = b"\x7fELF\x02\x01\x01" + bytes(9)
    files = {"/bin/prog": (0o100755, elf + page("exec 0")[16:] + page("exec 1")),
             "/lib/libx.so": (0o100644, elf + page("lib 0")[16:] + page("lib 1")),
             "/data/plain": (0o100644, page("plain 0") + page("plain 1"))}
    ck = synth.Checkpoint(os.path.join(base, "filter"))
    ids = {}
    for i, (path, (mode, data)) in enumerate(sorted(files.items())):
        host = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, "wb") as f:
            f.write(data)
        ids[path] = ck.reg_file(10 + i, path, size=len(data), mode=mode)
    p = ck.process(500)
    a = 0x10000000
    p.vma(a, a + 2 * P).pages(a, page("anon 0"))
    ck.shmem_pages(77, 0, page("shm 0") + page("shm 1"))
    p.vma(a + 0x100000, a + 0x100000 + 2 * P, kind="anon_shared", shmid=77)
    p.vma(a + 0x200000, a + 0x200000 + 2 * P, prot=synth.RX, kind="file",
          shmid=ids["/bin/prog"])
    p.vma(a + 0x300000, a + 0x300000 + 2 * P, prot=synth.PROT_READ, kind="file",
          shmid=ids["/lib/libx.so"])
    p.vma(a + 0x400000, a + 0x400000 + 2 * P, kind="file",
          shmid=ids["/data/plain"]).pages(a + 0x400000 + P, page("written"))
    p.vma(a + 0x500000, a + 0x500000 + 2 * P, kind="file_shared",
          shmid=ids["/data/plain"])
    p.vma(a + 0x600000, a + 0x600000 + 2 * P, flags=synth.MAP_HUGETLB).pages(
        a + 0x600000, page("huge 0"))
    p.vma(a + 0x700000, a + 0x700000 + 2 * P,
          madv=1 << synth.MADV_DONTDUMP).pages(a + 0x700000, page("secret"))
    p.vma(a + 0x800000, a + 0x800000 + 8 * P, prot=synth.RWX).pages(
        a + 0x800000, page("jit 0")).pages(a + 0x805000, page("jit 5"))
    p.vma(a + 0x900000, a + 0x900000 + 2 * P, kind="file",
          shmid=99)  # a file the images do not name
    images = ck.write()
    for mask in (None, "0x1ff", "0x0"):
        extra = [] if mask is None else ["--filter", mask]
        cases.append(("filter%s" % ("" if mask is None else "-" + mask),
                      images, root, extra))
    cases.append(("filter-noroot", images, None, []))

    # a pre-dump chain in both encodings, lazy pages, two processes, threads
    for fmt in ("3.x", "4.2"):
        d = os.path.join(base, "chain-" + fmt)
        parent = synth.Checkpoint(os.path.join(d, "pre"), fmt=fmt)
        pp = parent.process(700)
        pp.vma(0x20000000, 0x20010000).pages(0x20000000, nr_pages=16)
        child = synth.Checkpoint(os.path.join(d, "final"), fmt=fmt, parent=parent)
        cp = child.process(700, tids=[700, 701, 702])
        cp.vma(0x20000000, 0x20010000)
        cp.in_parent(0x20000000, 4).pages(0x20004000, nr_pages=2)
        cp.in_parent(0x20006000, 2, old_style=True).lazy(0x20008000, 2)
        cp.vma(0x30000000, 0x30100000).pages(0x30080000, nr_pages=3)
        q = child.process(800, ppid=700)
        q.vma(0x40000000, 0x40004000).pages(0x40001000, nr_pages=1)
        cases.append(("chain-" + fmt, child.write(), None, []))
    return cases


def run(name, images, root, extra, out, subst):
    os.makedirs(out)
    args = [sys.executable, COREDUMP, "-i", images, "-o", out] + extra
    if root:
        args += ["--root", root]
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=900)
    lines = []
    for core in sorted(os.listdir(out)):
        h = hashlib.sha256()
        with open(os.path.join(out, core), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        lines.append("%s %s %s" % (name, core, h.hexdigest()))
    lines.append("%s exit %d" % (name, p.returncode))
    for stream, text in (("out", p.stdout), ("err", p.stderr)):
        for s, r in subst:
            text = text.replace(s, r)
        for line in text.splitlines():
            lines.append("%s %s| %s" % (name, stream, line))
    shutil.rmtree(out)
    return lines


def main():
    with tempfile.TemporaryDirectory(prefix="core-hashes-") as tmp:
        fx_base = os.path.join(tmp, "fx")
        syn_base = os.path.join(tmp, "syn")
        os.makedirs(syn_base)
        n = 0
        for name in fixture_names():
            fx = fixture_copy(name, fx_base)
            for root in (os.path.join(fx, "root"), None):
                case = name + ("+root" if root else "")
                out = os.path.join(tmp, "out%d" % n)
                n += 1
                for line in run(case, os.path.join(fx, "images"), root, [], out,
                                [(out, "<OUT>"), (fx_base, "<FX>")]):
                    print(line, flush=True)
            shutil.rmtree(fx)
        for case, images, root, extra in synthetic(syn_base):
            out = os.path.join(tmp, "out%d" % n)
            n += 1
            for line in run(case, images, root, extra, out,
                            [(out, "<OUT>"), (syn_base, "<SYN>")]):
                print(line, flush=True)


if __name__ == "__main__":
    main()
