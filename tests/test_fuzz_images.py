"""Fuzz: mutated real images give a clean error or a correct core, nothing else.

The fixtures' images are mutated (bit flips, truncation, entries duplicated,
dropped or swapped, frame sizes changed, absurd numbers and hostile paths
put into protobuf fields) and converted in-process by the CLI's main().
Half of the mutations are structure-aware (tests/helpers/imagefuzz.py): the
images stay valid protobuf and their meaning breaks: VMAs or pagemap entries
unsorted, overlapping or beyond the address space, file, inode and shmem ids
that name nothing or the wrong thing, ppid cycles, impossible pids.
Acceptable outcomes only:

* exit 2 with `coredump: error: <file>: <what>` lines and no core at all;
* exit 0 or 3 with cores that are correct: well-formed ELF whose PT_LOADs are
  the VMAs of the (mutated) mm image, one NT_PRSTATUS per thread, identical
  to the unmutated conversion when nothing the process's core depends on
  changed meaning, differing only in flipped bytes when pages were flipped;
* never a traceback, a temporary file left behind, or a byte of a file
  planted outside --root (reached through absolute or ../ symlinks and paths).

Bounded by time: CCD_FUZZ_SECONDS (default 60) for CI; run longer locally,
e.g. `CCD_FUZZ_SECONDS=1800 CCD_FUZZ_KEEP_GOING=1 nice .venv/bin/python -m
pytest -s tests/test_fuzz_images.py`: with CCD_FUZZ_KEEP_GOING a failing
batch is printed (its shrunk example) and the run goes on, failing at the
end.  An input that takes more than CCD_FUZZ_HANG_SECONDS (default 60) is a
hang.  The number of inputs, the time and the mutations are printed.
"""
import os
import re
import shutil
import signal
import struct
import tempfile
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from criu_coredump.images import quiet_protobuf_log, strict_decoding
from pycriu.images import pb

from .helpers import imagefuzz as fz
from .helpers.inprocess import run_main
from .helpers import imgedit as ie
from .helpers.corefile import NT_PRSTATUS, PT_LOAD, PT_NOTE, read_core

pytestmark = pytest.mark.slow

FUZZ_SECONDS = float(os.environ.get("CCD_FUZZ_SECONDS", "60"))
HANG_SECONDS = float(os.environ.get("CCD_FUZZ_HANG_SECONDS", "60"))
KEEP_GOING = bool(os.environ.get("CCD_FUZZ_KEEP_GOING"))
NAMES = ("threads", "stopped_static", "tree", "shmem", "zdtm/memfd00")
# mutations that change how an image is written, not what it means: the
# core must be the same as from the pristine images
EQUIVALENT = ("pagemap:split",)
SECRET_MARK = b"CCD-FUZZ-SECRET-OUTSIDE-ROOT!"
# Paths a hostile files.img could name; all must stay inside --root.
HOSTILE_PATHS = ("/escape-abs", "/escape-rel", "/opt/escape-deep",
                 "/../secret.bin", "../../secret.bin", "/opt/../../../secret.bin",
                 "/escape-abs/../secret.bin", "/proc/self/root/secret.bin",
                 "/lib/../../secret.bin", "", "/", "/opt", "a\0b",
                 "/fifo", "/" + "x" * 5000)
# images the tool reads (the others are mutated too, less often)
READ = ("pstree", "files", "memfd", "core-", "mm-", "pagemap-", "pages-")
LINE = re.compile(r"coredump: (error|warning|note): (.+)")


class World:
    """Pristine copies of the fixtures, a secret outside each root reached by
    symlinks planted inside it, and the reference cores."""

    def __init__(self, base, fixtures_dir):
        self.base = base
        self.fx = {}
        for name in NAMES:
            src = fixtures_dir(name)
            d = os.path.join(base, name)
            shutil.copytree(os.path.join(src, "images"), os.path.join(d, "images"))
            root = os.path.join(d, "root")
            shutil.copytree(os.path.join(src, "root"), root, symlinks=True)
            secret = os.path.join(d, "secret.bin")
            with open(secret, "wb") as f:
                f.write(SECRET_MARK * 4096)
            os.symlink(secret, os.path.join(root, "escape-abs"))
            os.symlink("../secret.bin", os.path.join(root, "escape-rel"))
            os.symlink("../../secret.bin", os.path.join(root, "opt", "escape-deep"))
            os.mkfifo(os.path.join(root, "fifo"))
            imgs = os.path.join(d, "images")
            files = {}
            for fn in sorted(os.listdir(imgs)):
                with open(os.path.join(imgs, fn), "rb") as f:
                    files[fn] = f.read()
            ref = os.path.join(d, "ref")
            os.mkdir(ref)
            rc, _, err = run_main(["-q", "-i", imgs, "-o", ref, "--root", root])
            assert rc == 0, err
            cores = {}
            for fn in os.listdir(ref):
                cores[int(fz.CORE_NAME.match(fn).group(1))] = read_core(
                    os.path.join(ref, fn))
            tree = [pb.pstree_entry.FromString(e)
                    for e in ie.frame(files["pstree.img"])[1]]
            read = [fn for fn in files if fn.startswith(READ)]
            self.fx[name] = dict(images=imgs, root=root, files=files, ref=cores,
                                 weighted=sorted(files) + 3 * sorted(read),
                                 threads={e.pid: list(e.threads) or [e.pid]
                                          for e in tree},
                                 ctx=_context(files))


def _context(files):
    """Ids the images of a checkpoint use, for mutations that make one name
    another: file ids (files.img) and shmem ids (memfd.img, pagemaps)."""
    ctx = {"file_ids": set(), "shmids": set()}
    if "files.img" in files:
        for e in ie.frame(files["files.img"])[1]:
            ctx["file_ids"].add(pb.file_entry.FromString(e).id)
    if "memfd.img" in files:
        for e in ie.frame(files["memfd.img"])[1]:
            ctx["shmids"].add(pb.memfd_inode_entry.FromString(e).shmid)
    for fn in files:
        m = re.match(r"pagemap-shmem-(\d+)\.img$", fn)
        if m:
            ctx["shmids"].add(int(m.group(1)))
    return ctx


# -- mutations ----------------------------------------------------------------

def _semantic(data, framed, draw, ctx):
    """A structure-aware mutation: decode the whole image, break its
    meaning (imagefuzz.semantic_mutation), encode it again."""
    head, entries, tail = framed
    magic = ie.magic_name(head)
    try:
        with strict_decoding() as strict, quiet_protobuf_log():
            msgs = [ie.message_class(magic, i).FromString(e)
                    for i, e in enumerate(entries)]
            if strict.log:
                return data, ("undecodable",)
    except Exception:
        return data, ("undecodable",)
    try:
        what = fz.semantic_mutation(magic, msgs, draw, ctx)
    except ValueError:  # a closed (proto2) enum refuses the value
        return data, ("unsettable",)
    if what is None:
        return data, ("no-sem",)
    try:
        with quiet_protobuf_log():
            blob = ie.unframe(head, [m.SerializeToString() for m in msgs], tail)
    except Exception:
        return data, ("unencodable",)
    return blob, (what,)


def _mutate(data, name, draw, ctx=None):
    """One mutation of an image's bytes; returns (bytes, description)."""
    framed = ie.frame(data) if not name.startswith("pages-") else None
    kinds = ["flip", "truncate", "extend"]
    if framed and framed[1]:
        kinds += ["dup", "drop", "swap", "size", "int", "int", "int", "str"]
        if name in ("files.img", "memfd.img"):
            kinds += ["str"] * 4  # hostile paths: --root confinement
            kinds += ["utf8"] * 2  # names that are not UTF-8
        if ie.magic_name(framed[0]) in fz.SEMANTIC:
            kinds += ["sem"] * (len(kinds) + 4)  # about half of them
    kind = draw(st.sampled_from(kinds))
    if kind == "sem":
        return _semantic(data, framed, draw, ctx or {})
    if kind == "flip":
        out = bytearray(data)
        flips = draw(st.lists(st.tuples(st.integers(0, max(0, len(data) - 1)),
                                         st.integers(0, 7)), min_size=1, max_size=4))
        for pos, bit in flips:
            if out:
                out[pos] ^= 1 << bit
        return bytes(out), ("flip", len(flips))
    if kind == "truncate":
        return data[:draw(st.integers(0, max(0, len(data) - 1)))], ("truncate",)
    if kind == "extend":
        return data + draw(st.binary(min_size=1, max_size=64)), ("extend",)
    head, entries, tail = framed
    entries = list(entries)
    i = draw(st.integers(0, len(entries) - 1))
    if kind == "dup":
        entries.insert(draw(st.integers(0, len(entries))), entries[i])
    elif kind == "drop":
        del entries[i]
    elif kind == "swap":
        j = draw(st.integers(0, len(entries) - 1))
        entries[i], entries[j] = entries[j], entries[i]
    elif kind == "utf8":
        # set the high bit of a byte in a run of printable ASCII (a name)
        runs = [m.start() for m in re.finditer(rb"[ -~]{4,}", entries[i])]
        if not runs:
            return data, ("no-utf8",)
        pos = runs[draw(st.integers(0, len(runs) - 1))] + draw(st.integers(0, 3))
        e = bytearray(entries[i])
        e[pos] |= 0x80
        entries[i] = bytes(e)
    elif kind == "size":
        blob = ie.unframe(head, entries[:i])
        rest = ie.unframe(b"", entries[i:], tail)
        size = draw(st.sampled_from([0, 1, len(entries[i]) + 1, 0x7FFFFFFF,
                                     0xFFFFFFFF, max(0, len(entries[i]) - 1)]))
        return blob + struct.pack("<I", size) + rest[4:], ("size",)
    else:
        cls = ie.message_class(ie.magic_name(head), i)
        if cls is None:
            return data, ("none",)
        try:
            with strict_decoding(), quiet_protobuf_log():
                msg = cls.FromString(entries[i])
        except Exception:
            return data, ("undecodable",)
        slots = fz.slots(msg, kind)
        if not slots:
            return data, ("no-" + kind,)
        slot = slots[draw(st.integers(0, len(slots) - 1))]
        if kind == "int":
            value = draw(st.one_of(st.sampled_from(fz.INTERESTING),
                                   st.integers(0, (1 << 64) - 1)))
        else:
            value = draw(st.sampled_from(HOSTILE_PATHS))
        fz.set_slot(slot, value)
        try:
            with quiet_protobuf_log():
                entries[i] = msg.SerializeToString()
        except Exception:
            return data, ("unencodable",)
    return ie.unframe(head, entries, tail), (kind,)


def _same_meaning(name, a, b):
    """True when two versions of an image decode to the same messages."""
    if a == b:
        return True
    if name.startswith("pages-"):
        return False
    fa, fb = ie.frame(a), ie.frame(b)
    if not fa or not fb or fa[2] or fb[2] or fa[0] != fb[0]:
        return False
    try:
        m = ie.magic_name(fa[0])
        with strict_decoding() as strict, quiet_protobuf_log():
            da = [ie.message_class(m, i).FromString(e) for i, e in enumerate(fa[1])]
            db = [ie.message_class(m, i).FromString(e) for i, e in enumerate(fb[1])]
            if strict.log:
                return False
    except Exception:
        return False
    return da == db


def _affects(fx, pid, name):
    """Whether the core of `pid` depends on image `name`."""
    if name in ("pstree.img", "files.img", "memfd.img", "remap-fpath.img",
                "reg-files.img") or name.startswith(("pages-", "pagemap-shmem-")):
        return True
    tids = fx["threads"].get(pid, [pid])
    return name in ["core-%d.img" % t for t in tids] + ["mm-%d.img" % pid,
                                                         "pagemap-%d.img" % pid]


# -- the oracle ---------------------------------------------------------------

def _judge(fx, imgdir, outdir, rc, err, changed, equivalent=()):
    """Assert the outcome is a clean error or correct cores.  `equivalent`:
    images whose changes keep their meaning (EQUIVALENT mutations only)."""
    lines = err.splitlines()
    for ln in lines:
        assert LINE.fullmatch(ln), "not a clean message: %r" % ln
    errors = [LINE.fullmatch(ln).group(2) for ln in lines if ln.startswith("coredump: error")]
    for e in errors:
        assert e.startswith((imgdir, fx["root"], outdir)), "error names no file: %r" % e
    names = os.listdir(outdir)
    for n in names:
        assert fz.CORE_NAME.match(n), "left behind: %s" % n
    assert rc in (0, 2, 3), (rc, err)
    if rc == 0:
        assert not errors, err
    if rc == 2:
        assert errors and not names, (err, names)
    if rc == 3:
        assert names and (errors or "warning" in err), (err, names)
    meaning_same = {n: n in equivalent or _same_meaning(n, fx["files"][n], b)
                    for n, b in changed.items()}
    if all(meaning_same.values()):
        # nothing means anything else: the same outcome as the pristine images
        assert rc == 0 and sorted(names) == sorted("core.%d" % p for p in fx["ref"]), \
            (rc, err)
    for n in names:
        pid = int(fz.CORE_NAME.match(n).group(1))
        core = read_core(os.path.join(outdir, n))
        phdrs, notes, data = core
        assert SECRET_MARK not in data, "a file outside --root reached the core"
        ref = fx["ref"].get(pid)
        relevant = [c for c in changed if _affects(fx, pid, c) and not meaning_same[c]]
        if ref is not None and not relevant:
            assert data == ref[2], "core changed though its images mean the same"
            continue
        if ref is not None and all(c.startswith("pages-") and
                                   len(changed[c]) == len(fx["files"][c])
                                   for c in relevant):
            flips = sum(sum(1 for a, b in zip(changed[c], fx["files"][c]) if a != b)
                        for c in relevant)
            diff = sum(1 for a, b in zip(data, ref[2]) if a != b)
            assert len(data) == len(ref[2]) and diff <= flips, (diff, flips)
            continue
        _check_structure(imgdir, pid, phdrs, notes)


def _check_structure(imgdir, pid, phdrs, notes):
    """PT_LOADs are the mm image's VMAs; one NT_PRSTATUS per thread."""
    with open(os.path.join(imgdir, "mm-%d.img" % pid), "rb") as f:
        head, entries, _ = ie.frame(f.read())
    mm = pb.mm_entry.FromString(entries[0])
    # guard entries (CRIU 4.2, status bit 16) are no mappings
    vmas = sorted((v.start, v.end - v.start) for v in mm.vmas
                  if not v.status & (1 << 16))
    loads = [(p["vaddr"], p["memsz"]) for p in phdrs if p["type"] == PT_LOAD]
    assert loads == vmas
    assert phdrs[0]["type"] == PT_NOTE
    for p in phdrs:
        if p["type"] == PT_LOAD:
            assert p["filesz"] <= p["memsz"] and p["offset"] % 4096 == 0
    with open(os.path.join(imgdir, "pstree.img"), "rb") as f:
        tree = [pb.pstree_entry.FromString(e) for e in ie.frame(f.read())[1]]
    entry = [e for e in tree if e.pid == pid]
    assert len(entry) == 1
    # a thread id of 0 names no thread (CRIU writes [0] for a zombie): the
    # loader reads such a list as the main thread alone
    tids = [t for t in entry[0].threads if t] or [pid]
    prs = [struct.unpack_from("<i", d, 32)[0] for (nm, t, d) in notes
           if nm == b"CORE" and t == NT_PRSTATUS]
    assert sorted(prs) == sorted(tids)


# -- the test -----------------------------------------------------------------

class Hang(BaseException):
    """An input took more than HANG_SECONDS (not an Exception: the code
    under test must not be able to catch it)."""


class _hang_alarm:
    def __enter__(self):
        def ring(signum, frame):
            raise Hang("no answer in %.0f s" % HANG_SECONDS)
        self.old = signal.signal(signal.SIGALRM, ring)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False


def test_mutated_images_give_clean_error_or_correct_core(fixtures_dir, tmp_path):
    world = World(str(tmp_path / "world"), fixtures_dir)
    work = str(tmp_path / "work")
    os.mkdir(work)
    stats = Counter()
    messages = Counter()

    @given(st.data())
    def one(data):
        draw = data.draw
        name = draw(st.sampled_from(NAMES))
        fx = world.fx[name]
        changed = {}
        kinds = {}
        for _ in range(draw(st.integers(1, 3))):
            fn = draw(st.sampled_from(fx["weighted"]))
            img, kind = _mutate(changed.get(fn, fx["files"][fn]), fn, draw, fx["ctx"])
            changed[fn] = img
            kinds.setdefault(fn, []).append(kind[0])
            stats["mut:" + kind[0]] += 1
        equivalent = [fn for fn, ks in kinds.items() if all(k in EQUIVALENT for k in ks)]
        d = tempfile.mkdtemp(dir=work)
        try:
            imgdir, outdir = os.path.join(d, "images"), os.path.join(d, "out")
            os.mkdir(imgdir)
            os.mkdir(outdir)
            for fn in fx["files"]:
                if fn in changed:
                    with open(os.path.join(imgdir, fn), "wb") as f:
                        f.write(changed[fn])
                else:
                    os.symlink(os.path.join(fx["images"], fn), os.path.join(imgdir, fn))
            with _hang_alarm():
                rc, _, err = run_main(["-q", "-i", imgdir, "-o", outdir,
                                       "--root", fx["root"]])
            stats["rc%d" % rc] += 1
            for ln in err.splitlines():
                what = re.sub(r"0x[0-9a-f]+|\d+", "N", ln.replace(d, "D"))
                messages[what[:110]] += 1
            stats["inputs"] += 1
            _judge(fx, imgdir, outdir, rc, err, changed, equivalent)
        finally:
            shutil.rmtree(d)

    batch = settings(max_examples=200, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))(one)
    start = time.monotonic()
    batches = 0
    failures = []
    while time.monotonic() - start < FUZZ_SECONDS:
        try:
            batch()  # each call draws from a fresh random seed
        except (Exception, Hang) as exc:
            if not KEEP_GOING:
                raise
            failures.append(exc)
            print("\nfuzz: FAILURE %d after %.0f s: %s: %s"
                  % (len(failures), time.monotonic() - start,
                     type(exc).__name__, str(exc)[:2000]), flush=True)
        batches += 1
    took = time.monotonic() - start
    print("\nfuzz: %d inputs in %.0f s (%d batches); exit codes %s; mutations %s"
          % (stats["inputs"], took, batches,
             {k: v for k, v in stats.items() if k.startswith("rc")},
             {k[4:]: v for k, v in stats.items() if k.startswith("mut:")}))
    if os.environ.get("CCD_FUZZ_MESSAGES"):
        for m, n in messages.most_common():
            print("%6d  %s" % (n, m))
    assert stats["inputs"] > 0
    assert not failures, "%d failing batches" % len(failures)
