#!/usr/bin/env python3
"""Benchmark: coredump against a durable copy of the same pages, per file system.

Cases (--cases, any of):
  size       processes of --sizes dumped pages (64M,1G): runs of 255 pages
  scattered  one process of --entries one-page pagemap entries, each
             followed by a one-page hole (a JVM's or a database's sparsely
             touched heap); 1,000,000 entries are 3.8 GiB of pages
  tiny       a 16-page process, --small-runs times: the fixed cost of a run,
             beside `python3 -c pass` on the same interpreter
  tree       --tree small processes in one checkpoint, --jobs 1 against
             --jobs 2: throughput and CPU time of each, beside what this
             machine gives two CPU-bound Pythons, and two one-job
             conversions of two copies at once; passes at 1.6x, or at 80%
             of the lesser of those two ceilings
  threads    processes of --threads threads (10000,100000): time and peak RSS
  holes      16 mappings of 16 MiB with one page at each end, the images
             in --workdir: the core's allocated size against its data
             (holes must stay holes)
  archive    -i of a Podman-style archive of --archive pages (512M), plain
             and --compressions (gzip,zstd,xz), against decompressing it
             once into a synced file (issue 13: compressed within 1.5x)

File systems (--fs, any of): here (a temporary directory in --workdir,
default the system's temporary directory), tmpfs (mounted for the run), xfs
and btrfs (a file of --fs-size loop-mounted for the run, in a temporary
directory outside the repository; always unmounted and deleted).  Those need
root, and mkfs.xfs / mkfs.btrfs (apt-get install xfsprogs btrfs-progs): a file
system that cannot be made is reported and skipped.

The baseline, measured in the same run on the same file system, is a durable
copy of the same pages image: `cp --reflink=never` then `sync FILE` (fsync).
Each case runs --repeat times (the tree case --tree-runs times), the copy and
the conversion paired; medians are printed, with the ratio coredump / copy,
CPU time (user + system) and peak RSS (the largest).  Every conversion is durable too: each core is
fsynced before its rename, OUTDIR once a run.

    sudo .venv/bin/python bench/bench.py --fs here,tmpfs,xfs,btrfs
    .venv/bin/python bench/bench.py --cases tiny,tree --fs here
    .venv/bin/python bench/bench.py --cases scattered --entries 250000

--before DIR/bin/coredump runs another tree's coredump beside this one in
the tiny and holes cases (a "before" for a change).
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests.helpers import synth  # noqa: E402

COREDUMP = os.path.join(REPO, "bin", "coredump")
TIME = "/usr/bin/time"  # GNU time (Debian package `time`)
# as installed: Python keeps its bytecode cache (an environment that forbids
# it would add the compilation of every module to each run)
INSTALLED_ENV = {k: v for k, v in os.environ.items()
                 if k != "PYTHONDONTWRITEBYTECODE"}
MiB = 1 << 20
GiB = 1 << 30
PAGE = synth.PAGE
VMA_SIZE = 64 * MiB          # the size cases: mappings of 64 MiB
RUN_PAGES = 255              # present pages, then a one-page hole
ALL_CASES = ("size", "scattered", "tiny", "tree", "threads", "holes", "archive")


def parse_size(text):
    units = {"K": 1 << 10, "M": MiB, "G": GiB}
    t = text.strip().upper().rstrip("B").rstrip("I")
    if t[-1:] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def human(n):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= size:
            return "%.2f %s" % (n / size, unit)
    return "%d B" % n


# -- checkpoints -------------------------------------------------------------

def build_sized(path, size):
    """One process whose dumped pages total `size` bytes: anonymous mappings
    of up to 64 MiB, each with runs of 255 present pages and one hole."""
    ck = synth.Checkpoint(path)
    p = ck.process(4242, comm="bench")
    pages_left = size // PAGE
    vma_pages = VMA_SIZE // PAGE
    addr = 0x7f0000000000
    while pages_left > 0:
        want = min(pages_left, vma_pages - vma_pages // (RUN_PAGES + 1))
        span = want + (want + RUN_PAGES - 1) // RUN_PAGES
        p.vma(addr, addr + span * PAGE)
        a, left = addr, want
        while left:
            n = min(RUN_PAGES, left)
            p.pages(a, nr_pages=n)
            a += (n + 1) * PAGE
            left -= n
        pages_left -= want
        addr += span * PAGE + 16 * MiB
    ck.write()
    return ck


def build_scattered(path, count):
    """One process with `count` one-page pagemap entries, each followed by
    a one-page hole, in one mapping."""
    ck = synth.Checkpoint(path)
    p = ck.process(4243, comm="bench-many")
    base = 0x7f0000000000
    p.vma(base, base + 2 * count * PAGE)
    for i in range(count):
        p.pages(base + 2 * i * PAGE, nr_pages=1)
    ck.write()
    return ck


def build_tiny(path):
    ck = synth.Checkpoint(path)
    p = ck.process(4244, comm="tiny")
    base = 0x7f0000000000
    p.vma(base, base + 64 * PAGE).pages(base, nr_pages=16)
    ck.write()
    return ck


def build_tree(path, count):
    """`count` processes (a parent and its children), each with a 16-page
    mapping (4 pages dumped) and a 32-page stack (8 dumped)."""
    ck = synth.Checkpoint(path)
    for i in range(count):
        p = ck.process(1000 + i, ppid=0 if i == 0 else 1000, comm="t%d" % i)
        p.vma(0x400000, 0x400000 + 16 * PAGE).pages(0x400000, nr_pages=4)
        stack = 0x7ffc00000000
        p.vma(stack, stack + 32 * PAGE).pages(stack + 24 * PAGE, nr_pages=8)
    ck.write()
    return ck


def build_threads(path, count):
    ck = synth.Checkpoint(path)
    ck.many_threads(1000, count)
    ck.write()
    return ck


def build_holes(path):
    """16 mappings of 16 MiB 1 GiB apart, each with its first and last page
    dumped: a core of 256 MiB of which 128 KiB is data."""
    ck = synth.Checkpoint(path)
    p = ck.process(4245, comm="holes")
    for i in range(16):
        a = 0x7f0000000000 + i * GiB
        p.vma(a, a + 16 * MiB).pages(a, nr_pages=1).pages(a + 16 * MiB - PAGE, nr_pages=1)
    ck.write()
    return ck


# -- measuring ---------------------------------------------------------------

def run_measured(argv, env=None):
    """Run a command under /usr/bin/time: (wall seconds, CPU seconds (user +
    system), peak RSS bytes, exit status, stderr).  GNU time forks the
    command from its own small process: a child forked straight from this
    one would count this process's memory in its peak RSS."""
    t0 = time.perf_counter()
    p = subprocess.run([TIME, "-f", "TIME-RSS-KB %M %U %S"] + argv,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       text=True, env=env)
    wall = time.perf_counter() - t0
    lines = p.stderr.splitlines()
    rss_kb, user, system = lines[-1].split()[1:]
    return (wall, float(user) + float(system), int(rss_kb) * 1024,
            p.returncode, "\n".join(lines[:-1]))


SPIN = "s = 0\nfor i in range(6000000): s += i"


def parallel_ceiling(runs=3):
    """What two CPUs give here: the throughput of two CPU-bound Pythons run
    at once against one after the other (median of `runs`).  Virtual CPUs
    that share a core, or a busy host, give well under 2x: that is the
    most `--jobs 2` can show on this machine."""
    ratios = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(2):
            subprocess.run([sys.executable, "-c", SPIN], check=True)
        one_by_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2)]
        for p in procs:
            p.wait()
        ratios.append(one_by_one / (time.perf_counter() - t0))
    return median(ratios)


def drop_dirty(path):
    """Write back what earlier steps left dirty, so it is not billed to
    the next measurement."""
    subprocess.run(["sync", "-f", path], check=False)


def durable_copy(src, dst):
    """`cp --reflink=never` + fsync of the copy: (wall, CPU) seconds."""
    drop_dirty(os.path.dirname(dst))
    wall, cpu, _, code, err = run_measured(
        ["sh", "-c", 'cp --reflink=never "$0" "$1" && sync "$1"', src, dst])
    if code != 0:
        sys.exit("bench: the copy failed: %s" % err)
    os.unlink(dst)
    return wall, cpu


def convert(coredump, images, out, *extra):
    """One conversion into an empty `out`: (wall, CPU, peak RSS, apparent
    size, allocated size) (sizes of the first core)."""
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    drop_dirty(out)
    wall, cpu, rss, code, err = run_measured(
        [sys.executable, coredump, "-i", images, "-o", out, "-q"] + list(extra),
        env=INSTALLED_ENV)
    if code != 0:
        sys.exit("bench: coredump failed (%d): %s" % (code, err.strip()))
    cores = sorted(f for f in os.listdir(out) if f.startswith("core."))
    st = os.stat(os.path.join(out, cores[0]))
    return wall, cpu, rss, st.st_size, st.st_blocks * 512


def median(xs):
    return statistics.median(xs)


# -- archives (issue 13) ------------------------------------------------------

ARCHIVERS = {  # kind: (command compressing stdin, command decompressing)
    "tar": (None, ["cat"]),
    "gzip": (["gzip", "-6"], ["gzip", "-dc"]),
    "zstd": (["zstd", "-q", "-3", "-c"], ["zstd", "-q", "-dc"]),
    "xz": (["xz", "-1", "-T0", "-c"], ["xz", "-dc"]),
}


def build_archive(base, size, kind):
    """A Podman-style archive (config.dump, spec.dump, checkpoint/) of a
    synthetic checkpoint with `size` bytes of pages, compressed as `kind`."""
    import json
    root = os.path.join(base, "ctr")
    build_sized(os.path.join(root, "checkpoint"), size)
    with open(os.path.join(root, "config.dump"), "w") as f:
        json.dump({"id": "bench", "name": "bench", "runtime": "runc"}, f)
    with open(os.path.join(root, "spec.dump"), "w") as f:
        json.dump({"annotations": {"io.container.manager": "libpod"}}, f)
    path = os.path.join(base, "bench.tar" + ("" if kind == "tar" else "." + kind))
    tar = subprocess.Popen(["tar", "-C", root, "-cf", "-", "config.dump",
                            "spec.dump", "checkpoint"], stdout=subprocess.PIPE)
    with open(path, "wb") as out:
        comp = ARCHIVERS[kind][0]
        if comp is None:
            shutil.copyfileobj(tar.stdout, out, 4 * MiB)
        else:
            subprocess.run(comp, stdin=tar.stdout, stdout=out, check=True)
    if tar.wait() != 0:
        sys.exit("bench: tar failed")
    shutil.rmtree(root)
    return path


def time_decompress(archive, kind, dst):
    """Decompressing the archive once into a file, synced: (wall, CPU)."""
    drop_dirty(os.path.dirname(dst))
    wall, cpu, _, code, err = run_measured(
        ["sh", "-c", " ".join(ARCHIVERS[kind][1]) + ' "$0" > "$1" && sync "$1"',
         archive, dst])
    if code != 0:
        sys.exit("bench: decompressing failed: %s" % err)
    os.unlink(dst)
    return wall, cpu


# -- file systems -------------------------------------------------------------

class FileSystem:
    """A directory on the file system to measure, made and removed here."""

    def __init__(self, kind, workdir, size):
        self.kind = kind
        self.workdir = workdir
        self.size = size
        self.top = None     # our temporary directory
        self.mount = None   # where we mounted something, to unmount
        self.image = None   # the loop-mounted file
        self.dir = None     # where the cases run
        self.name = kind

    def __enter__(self):
        self.top = tempfile.mkdtemp(prefix="ccd-bench-%s-" % self.kind,
                                    dir=self.workdir)
        try:
            if self.kind == "here":
                self.dir = self.top
                self.name = fs_type(self.dir)
            elif self.kind == "tmpfs":
                self.mount = os.path.join(self.top, "mnt")
                os.mkdir(self.mount)
                self._run(["mount", "-t", "tmpfs", "-o", "size=%d" % self.size,
                           "ccd-bench", self.mount])
                self.dir = self.mount
            elif self.kind in ("xfs", "btrfs"):
                mkfs = shutil.which("mkfs." + self.kind)
                if mkfs is None:
                    raise OSError("mkfs.%s is missing: apt-get install %s"
                                  % (self.kind, {"xfs": "xfsprogs",
                                                 "btrfs": "btrfs-progs"}[self.kind]))
                self.image = os.path.join(self.top, "fs.img")
                with open(self.image, "wb") as f:
                    f.truncate(self.size)
                self._run([mkfs, "-q", "-f", self.image])
                self.mount = os.path.join(self.top, "mnt")
                os.mkdir(self.mount)
                self._run(["mount", "-o", "loop", self.image, self.mount])
                self.dir = self.mount
            else:
                raise OSError("unknown file system %r" % self.kind)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    @staticmethod
    def _run(argv):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        if p.returncode != 0:
            raise OSError("%s: %s" % (" ".join(argv[:3]), p.stdout.strip()))

    def __exit__(self, *exc):
        if self.mount and os.path.ismount(self.mount):
            subprocess.run(["umount", self.mount], check=False)
        shutil.rmtree(self.top, ignore_errors=True)
        return False


def fs_type(path):
    p = subprocess.run(["stat", "-f", "-c", "%T", path], stdout=subprocess.PIPE,
                       text=True)
    return (p.stdout.strip() or "?").replace("ext2/ext3", "ext4")


# -- cases --------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.rows = []      # (fs, case, text, ok or None)

    def row(self, fs, case, text, ok=None):
        self.rows.append((fs.name, case, text, ok))
        mark = "" if ok is None else ("  PASS" if ok else "  FAIL")
        print("%-6s %-22s %s%s" % (fs.name, case, text, mark), flush=True)

    def copy_case(self, fs, label, build, target=None):
        """A conversion against a durable copy of its pages image."""
        a = self.args
        d = os.path.join(fs.dir, "img")
        ck = build(d)
        pages = os.path.join(d, "pages-%d.img" % ck.procs[0].pages_id)
        runs = []
        for _ in range(a.repeat):
            cp = durable_copy(pages, os.path.join(fs.dir, "pages.copy"))
            runs.append(cp + convert(a.coredump, d, os.path.join(fs.dir, "out"),
                                     "--jobs", "1"))
        cp_wall, cp_cpu, wall, cpu = (median([r[i] for r in runs]) for i in range(4))
        rss = max(r[4] for r in runs)
        apparent, alloc = runs[-1][5:7]
        ratio = wall / cp_wall
        self.row(fs, label, "%6.2fs  copy %6.2fs  %5.2fx  CPU %6.2fs (copy %5.2fs)"
                 "  RSS %s  core %s, allocated %s" % (
                     wall, cp_wall, ratio, cpu, cp_cpu, human(rss),
                     human(apparent), human(alloc)),
                 None if target is None else ratio <= target and rss < 64 * MiB)
        shutil.rmtree(d)
        shutil.rmtree(os.path.join(fs.dir, "out"))

    def archive(self, fs):
        """-i ARCHIVE against decompressing it once; the plain archive is
        read in place (its baseline, cat, is given for scale only)."""
        a = self.args
        size = parse_size(a.archive)
        for kind in ["tar"] + [k for k in a.compressions.split(",") if k]:
            path = build_archive(fs.dir, size, kind)
            runs = []
            for _ in range(a.repeat):
                b = time_decompress(path, kind, os.path.join(fs.dir, "decompressed"))
                runs.append(b + convert(a.coredump, path, os.path.join(fs.dir, "out"),
                                        "--jobs", "1"))
            b_wall, _, wall, cpu = (median([r[i] for r in runs]) for i in range(4))
            rss = max(r[4] for r in runs)
            # the plain archive's cat is for scale only: where cat's
            # copy_file_range shares blocks (XFS, btrfs) it takes no time
            ratio = "scale only" if kind == "tar" else "%5.2fx" % (wall / b_wall)
            self.row(fs, "archive %s %s" % (a.archive, kind),
                     "%6.2fs  %s once %6.2fs  %s  CPU %6.2fs  RSS %s" % (
                         wall, " ".join(ARCHIVERS[kind][1]), b_wall, ratio, cpu,
                         human(rss)),
                     rss < 64 * MiB and (kind == "tar" or wall / b_wall <= 1.5))
            os.unlink(path)
            shutil.rmtree(os.path.join(fs.dir, "out"), ignore_errors=True)

    def size(self, fs):
        for s in self.args.sizes.split(","):
            if s:
                self.copy_case(fs, "size %s" % s,
                               lambda d, n=parse_size(s): build_sized(d, n))

    def scattered(self, fs):
        n = self.args.entries
        self.copy_case(fs, "scattered %d" % n,
                       lambda d: build_scattered(d, n), target=2.0)

    def tiny(self, fs):
        a = self.args
        d = os.path.join(fs.dir, "img")
        build_tiny(d)
        out = os.path.join(fs.dir, "out")
        tools = [("python3 -c pass", None), ("coredump", a.coredump)]
        if a.before:
            tools.append(("before", a.before))
        res = {name: [] for name, _ in tools}
        for _ in range(a.small_runs):
            for name, tool in tools:
                if tool is None:
                    w, c = run_measured([sys.executable, "-c", "pass"],
                                        env=INSTALLED_ENV)[:2]
                else:
                    w, c = convert(tool, d, out, "--jobs", "1")[:2]
                res[name].append((w, c))
        for name, _ in tools:
            self.row(fs, "tiny: %s" % name, "wall %.3fs  CPU %.3fs (medians of %d)"
                     % (median([w for w, _ in res[name]]),
                        median([c for _, c in res[name]]), a.small_runs))
        shutil.rmtree(d)
        shutil.rmtree(out, ignore_errors=True)

    def tree(self, fs):
        a = self.args
        d = os.path.join(fs.dir, "img")
        build_tree(d, a.tree)
        runs = {1: [], 2: []}
        # each run into a new directory, the runs' cores removed at the end:
        # a run right after a thousand files were removed measures the
        # file system reusing their inodes (ext4 without a journal skips
        # those freed in the last minute one by one; XFS inactivates them
        # in the background), a cost of the benchmark, not of a conversion
        outs = []
        for r in range(a.tree_runs):
            for jobs in (1, 2):
                outs.append(os.path.join(fs.dir, "out-%d-%d" % (r, jobs)))
                runs[jobs].append(convert(a.coredump, d, outs[-1], "--jobs",
                                          str(jobs))[:2])
        w1, w2 = (median([w for w, _ in runs[j]]) for j in (1, 2))
        c1, c2 = (median([c for _, c in runs[j]]) for j in (1, 2))
        self.row(fs, "tree %d --jobs 1" % a.tree, "%6.2fs  CPU %6.2fs  %.1f ms a process"
                 % (w1, c1, 1000 * w1 / a.tree))
        ceiling = parallel_ceiling()
        pair = self.pair(fs, d, outs)
        # "near 2x": 1.6x, or 80% of what two converters can get here:
        # the CPUs' ceiling, or less where the file system serializes two
        # independent one-job runs (btrfs)
        self.row(fs, "tree %d --jobs 2" % a.tree, "%6.2fs  CPU %6.2fs  throughput "
                 "%.2fx --jobs 1's, CPU %.2fx; this machine's ceiling %.2fx; "
                 "two --jobs 1 at once %.2fx"
                 % (w2, c2, w1 / w2, c2 / c1, ceiling, 2 * w1 / pair),
                 w1 / w2 >= 1.6 or w1 / w2 >= 0.8 * min(ceiling, 2 * w1 / pair))
        shutil.rmtree(d)
        for out in outs:
            shutil.rmtree(out, ignore_errors=True)

    def pair(self, fs, d, outs):
        """Median wall time of two one-job conversions run at once, of two
        copies of the checkpoint `d` into two new directories (appended
        to `outs`): what two converters that share nothing but the
        machine and the file system get here (a file system that
        serializes its metadata, as btrfs its trees' locks, gives less
        than the CPUs would).  2 x one run's time / this is the
        throughput of the pair against one."""
        d2 = d + "-copy"
        shutil.copytree(d, d2)
        walls = []
        for r in range(self.args.tree_runs):
            pair_outs = [os.path.join(fs.dir, "out-pair-%d-%d" % (r, k)) for k in (1, 2)]
            for out in pair_outs:
                os.makedirs(out)
                outs.append(out)
            drop_dirty(fs.dir)
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, self.args.coredump, "-i", src,
                                       "-o", out, "-q", "--jobs", "1"],
                                      env=INSTALLED_ENV, stdout=subprocess.DEVNULL)
                     for src, out in zip((d, d2), pair_outs)]
            codes = [p.wait() for p in procs]
            walls.append(time.perf_counter() - t0)
            if any(codes):
                sys.exit("bench: coredump failed (%s)" % codes)
        shutil.rmtree(d2)
        return median(walls)

    def threads(self, fs):
        a = self.args
        counts = [int(x) for x in a.threads.split(",") if x]
        walls = {}
        for n in counts:
            d = os.path.join(fs.dir, "img")
            build_threads(d, n)
            out = os.path.join(fs.dir, "out")
            w, c, rss = convert(a.coredump, d, out, "--jobs", "1")[:3]
            walls[n] = w
            self.row(fs, "threads %d" % n, "%6.2fs  CPU %6.2fs  RSS %s"
                     % (w, c, human(rss)),
                     None if n < 100000 else rss < 512 * MiB)
            shutil.rmtree(d)
            shutil.rmtree(out, ignore_errors=True)
        if len(counts) >= 2:
            lo, hi = min(counts), max(counts)
            r = walls[hi] / walls[lo]
            self.row(fs, "threads %d/%d" % (hi, lo), "time %.1fx for %.0fx the "
                     "threads" % (r, hi / lo), r <= 1.5 * hi / lo)

    def holes(self, fs):
        """The images on another file system (the workdir's) than the
        core, as a checkpoint converted to a disk of cores would be: the
        copy is then no block sharing but writes, which is where XFS
        preallocates past a growing end."""
        a = self.args
        src = tempfile.mkdtemp(prefix="ccd-bench-img-", dir=a.workdir)
        d = os.path.join(src, "img")
        build_holes(d)
        out = os.path.join(fs.dir, "out")
        tools = [("coredump", a.coredump)] + ([("before", a.before)] if a.before else [])
        for name, tool in tools:
            _, _, _, apparent, alloc = convert(tool, d, out, "--jobs", "1")
            self.row(fs, "holes: %s" % name, "core %s, allocated %s (data 128 KiB "
                     "+ headers)" % (human(apparent), human(alloc)),
                     None if name == "before" else alloc <= 256 * 1024)
        shutil.rmtree(src)
        shutil.rmtree(out, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(ALL_CASES),
                    help="which cases, of %s (default: all)" % ",".join(ALL_CASES))
    ap.add_argument("--fs", default="here",
                    help="file systems, of here,tmpfs,xfs,btrfs (default: here)")
    ap.add_argument("--fs-size", default="24G",
                    help="size of the tmpfs and of the loop-mounted files "
                    "(default 24G; sparse, the pages written are what it costs)")
    ap.add_argument("--sizes", default="64M,1G", help="the size cases (default 64M,1G)")
    ap.add_argument("--entries", type=int, default=1000000,
                    help="pagemap entries of the scattered case (default 1000000)")
    ap.add_argument("--tree", type=int, default=1000,
                    help="processes of the tree case (default 1000)")
    ap.add_argument("--threads", default="10000,100000",
                    help="thread counts of the threads case (default 10000,100000)")
    ap.add_argument("--small-runs", type=int, default=11,
                    help="runs of the tiny case (default 11)")
    ap.add_argument("--tree-runs", type=int, default=7,
                    help="runs of each measure of the tree case (default 7: "
                    "its runs are short, and its ratio is a quotient of two "
                    "medians, which a busy host moves by 0.1x at 3 runs)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="paired runs of the other cases (default 3)")
    ap.add_argument("--archive", default="512M",
                    help="pages of the archive case (default 512M)")
    ap.add_argument("--compressions", default="gzip,zstd,xz",
                    help="compressed archives of the archive case, besides "
                    "the plain one (default gzip,zstd,xz)")
    ap.add_argument("--coredump", default=COREDUMP,
                    help="the coredump to measure (default: this tree's)")
    ap.add_argument("--before", help="another tree's bin/coredump, run beside "
                    "it in the tiny and holes cases")
    ap.add_argument("--workdir", default=tempfile.gettempdir(),
                    help="where temporary directories, loop-mounted files "
                    "and the `here` file system are (default: %(default)s)")
    args = ap.parse_args()
    # SIGTERM and SIGHUP unwind like Ctrl-C: file systems are unmounted
    # and temporary directories removed on the way out
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in ALL_CASES:
            ap.error("unknown case %r" % c)
    if not os.access(TIME, os.X_OK):
        sys.exit("bench: %s is missing: apt-get install time" % TIME)
    if os.path.realpath(args.workdir).startswith(os.path.realpath(REPO) + os.sep):
        ap.error("--workdir must be outside the repository")
    print("load before: %s" % open("/proc/loadavg").read().strip())
    print("medians of %d paired runs (tiny: %d, tree: %d); ratio = coredump / "
          "durable copy" % (args.repeat, args.small_runs, args.tree_runs), flush=True)
    bench = Bench(args)
    for kind in [f for f in args.fs.split(",") if f]:
        try:
            fs = FileSystem(kind, args.workdir, parse_size(args.fs_size)).__enter__()
        except OSError as e:
            print("%-6s skipped: %s" % (kind, e), flush=True)
            continue
        try:
            for c in cases:
                try:
                    getattr(bench, c)(fs)
                except OSError as e:  # a case that broke is a failure
                    bench.row(fs, c, "error: %s" % e, False)
        finally:
            fs.__exit__(None, None, None)
    print("load after: %s" % open("/proc/loadavg").read().strip())
    failed = [r for r in bench.rows if r[3] is False]
    print("\n%d checks, %d failed" % (sum(r[3] is not None for r in bench.rows),
                                       len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
