"""aarch64, armv7, ppc64le, s390x (big-endian), mips64el and ia32 cores,
proven on an x86_64 machine.

A static multi-threaded program (tests/progs/parked_threads.c) is built with
a cross compiler and killed by SIGABRT: qemu-user writes the guest's core
for aarch64, armv7, ppc64le, s390x and mips64el, the kernel writes its own
for ia32 (a 32-bit task on x86_64).  tests/helpers/core2images.py turns that core into CRIU images,
`coredump` turns the images back into a core, and gdb must say the same on
both: every thread's registers, the backtraces, a global in memory.

qemu 7.2 writes only NT_PRSTATUS, NT_PRPSINFO and NT_AUXV, so the FPSIMD,
VFP, TLS, ppc64 FP/VMX/VSX, s390 FP/vector/system-call and mips FP notes are
proven separately: values planted in the images with
pycriu's encoder must come back through gdb (and readelf).  The kernel's
ia32 core has every note, so ours must carry the same bytes.  qemu emulates
pointer authentication: a program built with -mbranch-protection=pac-ret
unwinds in gdb on our core (images with PAC keys) and not on qemu's.

riscv64 and loongarch64: Debian 12's qemu 7.2 and Debian 13's qemu 10.0
write no riscv64 core, qemu 7.2 none for loongarch64 either, and only sid
has a loongarch64 cross compiler.  Where the compiler and a qemu that
writes the core exist (sid), the program is built and run; elsewhere the
committed reference tests/data/xarch-<arch>.tar.xz (the program and qemu
11's core, made in sid; tests/data/README.md) is used.  Whether the local
gdb-multiarch can judge such an arch is decided on qemu's committed core,
never on ours: gdb 13 reads no loongarch core, gdb 16.3 dies on qemu's.
Where it cannot, the gdb tests compare our core with qemu's byte for byte
instead (the notes that correspond, and the memory); the bytes are
compared everywhere too.

The system-call restart of ppc64, s390, mips, loongarch64 and riscv64 is
proven on qemu's states of the threads blocked in pause() (see
test_restart_undone_on_qemu_states).
"""
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tarfile
from dataclasses import dataclass

import pycriu
import pytest
from pycriu.images import pb, pb2dict

from criu_coredump import syscall_restart
from criu_coredump.arch import aarch64 as ccd_aarch64

from .helpers.paths import REPO
from .helpers import tools
from .helpers.tools import gdb_major, need, run_coredump
from .helpers import core2images
from .helpers.crossarch import TARGETS, Target
from .helpers.kernelcore import allow_core
from .helpers.readers import load_thread

pytestmark = pytest.mark.cross

PROG = os.path.join(REPO, "tests", "progs", "parked_threads.c")
DATA = os.path.join(REPO, "tests", "data")
MARKER = "criu-coredump cross-arch marker"


ARCHES = sorted(TARGETS)


@dataclass
class RoundTrip:
    target: Target
    exe: str
    ref: str         # core written by qemu-user or the kernel
    images: str      # CRIU images made from it
    ours: str        # core written by coredump from the images
    tids: list
    source: str = "built"   # "built" here, or "committed" (tests/data)


def _core_prefix():
    """(prefix of the kernel's core file names, core_pattern): the tests can
    find a core only when the pattern is a plain name in the working
    directory ('core' here and in CI); prefix is None otherwise."""
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|") or "/" in pattern:
        return None, pattern
    return pattern.split("%", 1)[0], pattern


def build(target, work, *flags):
    need(target.cc)
    exe = os.path.join(work, "prog-" + target.name)
    subprocess.run([target.cc, "-g", "-O0", "-static", "-pthread", *flags, "-o", exe,
                    PROG], check=True, timeout=120)
    return exe


def reference_core(target, exe, work):
    """Run the program until it aborts; return the guest's or kernel's core."""
    if target.runner:
        need(target.runner[0])
    prefix, pattern = _core_prefix()
    if prefix is None and not target.runner:
        pytest.fail("kernel.core_pattern is %r: the ia32 test needs the kernel "
                    "to write its core file into the working directory" % pattern)
    p = subprocess.run(list(target.runner) + [exe], cwd=work, timeout=60,
                       preexec_fn=allow_core, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert p.returncode == -signal.SIGABRT, p.stdout
    kernel_cores = [os.path.join(work, f) for f in os.listdir(work)
                    if prefix and f.startswith(prefix)]
    if target.runner:
        # qemu re-raises SIGABRT on itself: drop the kernel's core of qemu.
        for f in kernel_cores:
            os.unlink(f)
        found = glob.glob(os.path.join(work, "qemu_*.core"))
    else:
        found = kernel_cores
    assert len(found) == 1, "no core in %s: %s" % (work, os.listdir(work))
    return found[0]


def committed_reference(target, work):
    """(program, qemu core) of tests/data/xarch-<arch>.tar.xz, unpacked in work."""
    with tarfile.open(os.path.join(DATA, "xarch-%s.tar.xz" % target.name)) as tar:
        for name in ("prog", "core"):
            with open(os.path.join(work, name), "wb") as out:
                shutil.copyfileobj(tar.extractfile(name), out)
    os.chmod(os.path.join(work, "prog"), 0o755)
    return os.path.join(work, "prog"), os.path.join(work, "core")


def built_or_committed(target, work):
    """(program, qemu core, source) for a target with a committed reference:
    built and run where the compiler and qemu are, and the qemu writes a
    core for it; the committed reference otherwise."""
    if shutil.which(target.cc) and shutil.which(target.runner[0]):
        exe = build(target, work)
        p = subprocess.run(list(target.runner) + [exe], cwd=work, timeout=60,
                           preexec_fn=allow_core, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        assert p.returncode == -signal.SIGABRT, p.stdout
        prefix, _ = _core_prefix()
        for f in os.listdir(work):
            if prefix and f.startswith(prefix) and not f.startswith("qemu_"):
                os.unlink(os.path.join(work, f))   # the kernel's core of qemu
        found = glob.glob(os.path.join(work, "qemu_*.core"))
        if found:
            return exe, found[0], "built"
    ref_dir = os.path.join(work, "committed")
    os.mkdir(ref_dir)
    return committed_reference(target, ref_dir) + ("committed",)


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory, plain_core_pattern):
    made = {}

    def get(name):
        if name not in made:
            target = TARGETS[name]
            work = str(tmp_path_factory.mktemp("xarch-" + name))
            source = "built"
            if target.committed:
                exe, ref, source = built_or_committed(target, work)
            else:
                exe = build(target, work)
                ref = reference_core(target, exe, work)
            images = os.path.join(work, "images")
            # qemu's cores have no NT_FILE, so no mapping names the program.
            summary = core2images.core_to_images(
                ref, images, exe=None if target.runner else exe)
            out = os.path.join(work, "out")
            os.mkdir(out)
            run_coredump("-i", images, "-o", out, check=0)
            ours = os.path.join(out, "core.%d" % summary["pid"])
            made[name] = RoundTrip(target, exe, ref, images, ours, summary["tids"],
                                   source)
        return made[name]
    return get


# ---- gdb -------------------------------------------------------------------

THREAD = re.compile(r"^Thread \d+ \(.*LWP (\d+)\)\)?:$")
REGISTER = re.compile(r"^([a-z][a-z0-9_]*):?\s+(\S+)")


def gdb(target, exe, core, *commands):
    return tools.gdb(core, "set pagination off", "set width 0", *commands,
                     exe=exe, program=target.gdb, check=True)


def sections(text):
    """Split gdb output at 'echo @@NAME' marks."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("@@"):
            name = line[2:]
            out[name] = []
        elif name and not line.startswith("warning:") and line.strip():
            out[name].append(line)
    return out


def per_thread(lines):
    """{lwp: [lines]} of a 'thread apply all' output."""
    out, lwp = {}, None
    for line in lines:
        m = THREAD.match(line)
        if m:
            lwp = int(m.group(1))
            out.setdefault(lwp, [])
        elif lwp is not None and line.strip():
            out[lwp].append(line)
    return out


def registers(lines):
    return dict(m.groups() for m in map(REGISTER.match, lines) if m)


def what_gdb_says(rt, core):
    return sections(gdb(rt.target, rt.exe, core,
                        "echo @@regs\\n", "thread apply all info registers"
                        + (" " + " ".join(rt.target.general) if rt.target.named else ""),
                        "echo @@bt\\n", "thread apply all bt",
                        "echo @@mem\\n", "x/s &marker", "p parked"))


@pytest.fixture(scope="module")
def gdb_judges(tmp_path_factory):
    """Whether the local gdb reads an arch's cores, decided on qemu's own
    committed core (never ours): every thread's general registers shown,
    without a crash.  Arches without a committed reference: True."""
    made = {}

    def get(name):
        target = TARGETS[name]
        if not target.committed:
            return True
        if name not in made:
            work = str(tmp_path_factory.mktemp("judge-" + name))
            exe, core = committed_reference(target, work)
            p = subprocess.run([need(target.gdb), "-batch", "-nx", "-ex", "set pagination off",
                                "-ex", "thread apply all info registers", exe, core],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=300)
            threads = per_thread(p.stdout.splitlines())
            made[name] = (p.returncode == 0 and len(threads) == 4 and all(
                set(target.general) <= set(registers(lines)) for lines in threads.values()))
        return made[name]
    return get


@pytest.fixture(scope="module")
def answers(roundtrip, gdb_judges):
    """(RoundTrip, gdb on the reference, gdb on ours); both None where the
    local gdb cannot read this arch's cores (gdb_judges)."""
    made = {}

    def get(name):
        if name not in made:
            rt = roundtrip(name)
            if not gdb_judges(name):
                made[name] = (rt, None, None)
            else:
                made[name] = (rt, what_gdb_says(rt, rt.ref), what_gdb_says(rt, rt.ours))
        return made[name]
    return get


def prstatus_words(path):
    """{tid: pr_reg words} of a core, read by core2images (no tool code)."""
    with core2images.CoreFile(path) as core:
        proc = core2images.read_notes(core, core2images.machine_spec(core))
        return {t.tid: t.regs for t in proc.threads}


def same_memory(ref, ours):
    """Every byte qemu dumped is at the same address in our core."""
    with core2images.CoreFile(ref) as r, core2images.CoreFile(ours) as o:
        for seg in core2images.dumped_segments(r):
            assert o.read(seg.vaddr, seg.filesz) == r.dumped(seg), hex(seg.vaddr)


def assert_same_bytes(rt, what):
    """What gdb would have compared, compared in the cores' bytes: every
    thread's NT_PRSTATUS registers, or the memory."""
    if what == "regs":
        ref, ours = prstatus_words(rt.ref), prstatus_words(rt.ours)
        assert sorted(ref) == sorted(rt.tids) == sorted(ours)
        assert ref == ours
    else:
        same_memory(rt.ref, rt.ours)


@pytest.mark.parametrize("arch", ARCHES)
def test_cross_arch_registers_match_reference_core(arch, answers):
    rt, ref, ours = answers(arch)
    if ref is None:
        return assert_same_bytes(rt, "regs")
    ref_regs, our_regs = per_thread(ref["regs"]), per_thread(ours["regs"])
    assert sorted(ref_regs) == sorted(rt.tids) == sorted(our_regs)
    assert len(ref_regs) == 4
    for lwp, lines in ref_regs.items():
        want = {k: v for k, v in registers(lines).items() if v != "<unavailable>"}
        assert set(rt.target.general) <= set(want), (lwp, want)
        got = registers(our_regs[lwp])
        assert {k: got.get(k) for k in want} == want, lwp


@pytest.mark.parametrize("arch", ARCHES)
def test_cross_arch_backtraces_match_reference_core(arch, answers):
    rt, ref, ours = answers(arch)
    if ref is None:
        # the frames follow from the registers and the stack memory
        assert_same_bytes(rt, "regs")
        return assert_same_bytes(rt, "memory")
    assert ours["bt"] == ref["bt"]
    threads = per_thread(ours["bt"])
    assert len(threads) == 4
    frames = {lwp: [l for l in lines if re.match(r"^#\d+ ", l)]
              for lwp, lines in threads.items()}
    workers = [f for f in frames.values() if any(" worker (" in l for l in f)]
    assert len(workers) == 3, frames
    for f in workers:
        assert len(f) >= 5 and any(" leaf (" in l for l in f), f
        assert sum(" recurse (" in l for l in f) >= 3, f
    main = [f for f in frames.values() if any(" main () " in l for l in f)]
    assert len(main) == 1 and any(" crash () " in l for l in main[0]), frames


@pytest.mark.parametrize("arch", ARCHES)
def test_cross_arch_memory_matches_reference_core(arch, answers):
    rt, ref, ours = answers(arch)
    if ref is None:
        return assert_same_bytes(rt, "memory")
    assert ours["mem"] == ref["mem"]
    assert MARKER in ours["mem"][0]
    assert ours["mem"][1] == "$1 = 3"


def elf_header(path):
    out = subprocess.run([need("readelf"), "-h", path], stdout=subprocess.PIPE,
                         text=True, check=True).stdout
    keep = ("Class:", "Data:", "OS/ABI:", "Machine:", "Flags:", "Type:")
    return [l.strip() for l in out.splitlines() if l.strip().startswith(keep)]


@pytest.mark.parametrize("arch", ARCHES)
def test_cross_arch_elf_header_matches_reference_core(arch, roundtrip):
    rt = roundtrip(arch)
    want = elf_header(rt.ref)
    if rt.target.flags:
        want = [rt.target.flags if l.startswith("Flags:") else l for l in want]
    assert [re.sub(r"\s+", " ", l) for l in elf_header(rt.ours)] == \
        [re.sub(r"\s+", " ", l) for l in want]


# ---- register sets qemu does not write: planted in the images ---------------

def plant(images, dest, edit):
    """A copy of an image directory whose core images `edit(index, entry)`
    changed, written back with pycriu's encoder."""
    shutil.copytree(images, dest)
    paths = sorted(glob.glob(os.path.join(dest, "core-*.img")))
    for k, path in enumerate(paths):
        with open(path, "rb") as f:
            img = pycriu.images.load(f)
        edit(k, img["entries"][0])
        with open(path, "wb") as f:
            pycriu.images.dump(img, f)
    return [int(re.search(r"core-(\d+)", p).group(1)) for p in paths]


def values(lines):
    """What gdb printed for each `print`, without the $N history label."""
    return [re.sub(r"^\$\d+ = ", "", l) for l in lines]


def convert(images, work):
    out = os.path.join(work, "planted-out")
    os.mkdir(out)
    run_coredump("-i", images, "-o", out, check=0)
    return glob.glob(os.path.join(out, "core.*"))[0]


def v_lo(i, k):
    return 0x0101010101010101 * (i + 1) + k


def v_hi(i, k):
    return 0xA5 << 56 | i << 8 | k


def test_aarch64_fpsimd_and_tls_read_back_by_gdb(roundtrip, tmp_path):
    rt = roundtrip("aarch64")

    def edit(k, e):
        ti = e["ti_aarch64"]
        ti["fpsimd"]["vregs"] = [f(i, k) for i in range(32) for f in (v_lo, v_hi)]
        ti["fpsimd"]["fpsr"] = 0x08000010 + k
        ti["fpsimd"]["fpcr"] = 0x03C00000 + k
        ti["tls"] = 0xAAAA00000000 + k

    tids = plant(rt.images, str(tmp_path / "images"), edit)
    core = convert(str(tmp_path / "images"), str(tmp_path))
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in
        ("$v0.d.u", "$v31.d.u", "$fpsr", "$fpcr", "$tpidr")]).splitlines())
    for k, tid in enumerate(tids):
        assert values(said[tid]) == [
            "{%#x, %#x}" % (v_lo(0, k), v_hi(0, k)),
            "{%#x, %#x}" % (v_lo(31, k), v_hi(31, k)),
            "%#x" % (0x08000010 + k), "%#x" % (0x03C00000 + k),
            "%#x" % (0xAAAA00000000 + k)], said[tid]


def test_armv7_vfp_and_tls_read_back(roundtrip, tmp_path):
    rt = roundtrip("armv7")

    def edit(k, e):
        ti = e["ti_arm"]
        ti["fpstate"]["vfp_regs"] = [v_lo(i, k) for i in range(32)]
        ti["fpstate"]["fpscr"] = 0x03C00010 + k
        ti["tls"] = 0xBBBB0000 + k

    tids = plant(rt.images, str(tmp_path / "images"), edit)
    core = convert(str(tmp_path / "images"), str(tmp_path))
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in ("$d0", "$d31", "$fpscr")]).splitlines())
    for k, tid in enumerate(tids):
        assert values(said[tid]) == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(31, k), "%#x" % (0x03C00010 + k)], said[tid]
    # gdb does not read TLS from an arm core; readelf shows the note's bytes.
    notes = subprocess.run([need("readelf"), "-n", core], stdout=subprocess.PIPE,
                           text=True, check=True).stdout
    tls = re.findall(r"NT_ARM_TLS.*\n\s+description data: (.*)", notes)
    assert [t.strip() for t in tls] == [   # one note per thread, in core order
        " ".join("%02x" % b for b in (0xBBBB0000 + tids.index(tid)).to_bytes(4, "little"))
        for tid in rt.tids]


def test_ppc64le_fp_vmx_vsx_read_back_by_gdb(roundtrip, tmp_path):
    """NT_PRFPREG, NT_PPC_VMX and NT_PPC_VSX (qemu writes none of them):
    values planted in the images come back through gdb."""
    rt = roundtrip("ppc64le")

    def edit(k, e):
        ti = e["ti_ppc64"]
        ti["fpstate"] = {"fpregs": [v_lo(i, k) for i in range(32)] + [0x82004000 + k]}
        ti["vrstate"] = {"vrregs": [f(i, k) for i in range(33) for f in (v_lo, v_hi)],
                         "vrsave": 0xDEAD0000 + k}
        ti["vsxstate"] = {"vsxregs": [v_hi(40 + i, k) for i in range(32)]}

    tids = plant(rt.images, str(tmp_path / "images"), edit)
    core = convert(str(tmp_path / "images"), str(tmp_path))
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in
        ("$f0", "$f31", "$fpscr", "$vr0.uint128", "$vr31.uint128", "$vscr",
         "$vrsave", "$vs0.uint128", "$vs31.uint128")]).splitlines())
    for k, tid in enumerate(tids):
        assert values(said[tid]) == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(31, k), "%#x" % (0x82004000 + k),
            "%#x" % (v_hi(0, k) << 64 | v_lo(0, k)),
            "%#x" % (v_hi(31, k) << 64 | v_lo(31, k)),
            "%#x" % (v_lo(32, k) & 0xFFFFFFFF), "%#x" % (0xDEAD0000 + k),
            "%#x" % (v_lo(0, k) << 64 | v_hi(40, k)),
            "%#x" % (v_lo(31, k) << 64 | v_hi(71, k))], said[tid]


def test_s390x_fp_vector_and_system_call_read_back_by_gdb(roundtrip, tmp_path):
    """NT_PRFPREG, NT_S390_SYSTEM_CALL, NT_S390_VXRS_LOW/HIGH (big-endian;
    qemu writes none of them): values planted in the images come back."""
    rt = roundtrip("s390x")

    def edit(k, e):
        ti = e["ti_s390"]
        ti["gpregs"]["system_call"] = 0x30 + k
        ti["fpregs"] = {"fpc": 0x00080000 + k, "fprs": [v_lo(i, k) for i in range(16)]}
        ti["vxrs_low"] = {"regs": [v_hi(i, k) for i in range(16)]}
        ti["vxrs_high"] = {"regs": [f(16 + i, k) for i in range(16) for f in (v_hi, v_lo)]}

    tids = plant(rt.images, str(tmp_path / "images"), edit)
    core = convert(str(tmp_path / "images"), str(tmp_path))
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in
        ("$f0", "$f15", "$fpc", "$system_call", "$v0.uint128", "$v15.uint128",
         "$v16.uint128", "$v31.uint128")]).splitlines())
    for k, tid in enumerate(tids):
        assert values(said[tid]) == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(15, k), "%#x" % (0x00080000 + k),
            "%#x" % (0x30 + k),
            "%#x" % (v_lo(0, k) << 64 | v_hi(0, k)),
            "%#x" % (v_lo(15, k) << 64 | v_hi(15, k)),
            "%#x" % (v_hi(16, k) << 64 | v_lo(16, k)),
            "%#x" % (v_hi(31, k) << 64 | v_lo(31, k))], said[tid]


def test_mips64el_fp_registers_read_back_by_gdb(roundtrip, tmp_path):
    """NT_PRFPREG (fpr0-31, fcr31, FPU id; qemu writes none): values
    planted in the images come back through gdb."""
    rt = roundtrip("mips64el")

    def edit(k, e):
        fp = e["ti_mips"]["fpregs"]
        for i in range(32):
            fp["r%d" % i] = v_lo(i, k)
        fp["fpu_fcr31"] = 0x01000000 + k
        fp["fpu_id"] = 0x00F30000 + k

    tids = plant(rt.images, str(tmp_path / "images"), edit)
    core = convert(str(tmp_path / "images"), str(tmp_path))
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in ("$f0", "$f31", "$fsr", "$fir")]).splitlines())
    for k, tid in enumerate(tids):
        assert values(said[tid]) == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(31, k), "%#x" % (0x01000000 + k),
            "%#x" % (0x00F30000 + k)], said[tid]


# ---- riscv64 and loongarch64 ---------------------------------------------------

COMMITTED = sorted(n for n, t in TARGETS.items() if t.committed)


def qemu_major(runner):
    """qemu-user's major version, 0 where it is not installed."""
    if not shutil.which(runner):
        return 0
    out = subprocess.run([runner, "--version"], stdout=subprocess.PIPE, text=True).stdout
    return int(re.search(r"version (\d+)\.", out).group(1))


@pytest.mark.parametrize("arch", COMMITTED)
def test_new_arch_core_has_qemus_registers_and_memory_in_bytes(arch, roundtrip):
    """Everywhere, whatever gdb can read: every thread's pr_reg words,
    every byte of memory qemu dumped and the auxiliary vector are in our
    core (NT_PRPSINFO differs: qemu leaves the state 0, ours says R)."""
    rt = roundtrip(arch)
    if shutil.which(rt.target.cc) and qemu_major(rt.target.runner[0]) >= 11:
        assert rt.source == "built"     # qemu 11 writes these cores (sid)
    assert_same_bytes(rt, "regs")
    assert_same_bytes(rt, "memory")
    auxv = []
    for path in (rt.ref, rt.ours):
        with core2images.CoreFile(path) as core:
            auxv.append(core2images.read_notes(core, core2images.machine_spec(core)).auxv)
    assert auxv[0] == auxv[1] and 6 in auxv[0][0::2]     # AT_PAGESZ among them


@pytest.mark.parametrize("arch", COMMITTED)
def test_new_arch_named_by_list_and_json(arch, roundtrip):
    rt = roundtrip(arch)
    listed = run_coredump("-i", rt.images, "--list", check=0).stdout.splitlines()
    assert listed[0].split()[4] == "ARCH" and listed[1].split()[4] == arch, listed
    out = os.path.join(os.path.dirname(rt.ours), "json")
    os.mkdir(out)
    said = json.loads(run_coredump("-i", rt.images, "-o", out, "--json", check=0).stdout)
    assert [c["arch"] for c in said["cores"]] == [arch]


@pytest.mark.parametrize("pagesz", [16384, 65536])
def test_other_page_size_is_refused_in_one_line(pagesz, roundtrip, tmp_path):
    """A loongarch64 kernel has 16 KiB pages, a ppc64le or aarch64 one may
    have 64 KiB: the pagemaps count those pages (AT_PAGESZ tells), which
    we do not read yet.  One error line, exit 2, no core."""
    rt = roundtrip("loongarch64")
    images = str(tmp_path / "images")
    shutil.copytree(rt.images, images)
    mm = glob.glob(os.path.join(images, "mm-*.img"))[0]
    with open(mm, "rb") as f:
        img = pycriu.images.load(f)
    auxv = [int(w) for w in img["entries"][0]["mm_saved_auxv"]]
    k = auxv[0::2].index(6)                        # AT_PAGESZ
    auxv[2 * k + 1] = pagesz
    img["entries"][0]["mm_saved_auxv"] = auxv
    with open(mm, "wb") as f:
        pycriu.images.dump(img, f)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", images, "-o", out)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.splitlines() == [
        "coredump: error: %s: the process ran with %d-byte pages; only 4096-byte "
        "pages are supported" % (mm, pagesz)], p.stderr
    assert os.listdir(out) == []


def plant_fp(rt, work, edit):
    """Our core of images made from qemu's core with `edit(k, ti)` applied
    to each thread's thread_info (qemu writes no FP note)."""
    images = os.path.join(work, "planted")
    summary = core2images.core_to_images(rt.ref, images, edit_thread_info=edit)
    return convert(images, work), summary["tids"]


def fp_notes(path):
    """{tid: NT_PRFPREG desc} of a core, read by core2images."""
    with core2images.CoreFile(path) as core:
        proc = core2images.read_notes(core, core2images.machine_spec(core))
        return {t.tid: t.notes.get(core2images.NT_FPREGSET) for t in proc.threads}


def test_riscv64_fp_registers_read_back_by_gdb(roundtrip, gdb_judges, tmp_path):
    """NT_PRFPREG (f0-f31, fcsr, 4 bytes of padding: 264): values planted in
    the images come back through gdb."""
    rt = roundtrip("riscv64")

    def edit(k, ti):
        ti["fpsimd"] = {"f": [v_lo(i, k) for i in range(32)], "fcsr": 0xE0 + k}

    core, tids = plant_fp(rt, str(tmp_path), edit)
    assert {len(d) for d in fp_notes(core).values()} == {264}
    assert gdb_judges("riscv64"), "gdb-multiarch reads qemu's riscv64 core"
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in
        ("$ft0.double", "$f31.double", "$fcsr")]).splitlines())
    for k, tid in enumerate(tids):
        assert [v.split(" = ")[-1] for v in values(said[tid])] == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(31, k), "%#x" % (0xE0 + k)], said[tid]


def test_loongarch64_fp_registers_read_back(roundtrip, gdb_judges, tmp_path):
    """NT_PRFPREG (fpr0-31, fcc, fcsr: the 268 bytes fpr_get() writes):
    values planted in the images come back through gdb where it reads
    loongarch64 cores (sid's gdb 18), in the note's bytes everywhere."""
    rt = roundtrip("loongarch64")
    fcc = 0x0001000100010001

    def edit(k, ti):
        ti["fpregs"] = {"regs": [v_lo(i, k) for i in range(32)], "fcc": fcc + k,
                        "fcsr": 0x1F + k}

    core, tids = plant_fp(rt, str(tmp_path), edit)
    notes = fp_notes(core)
    for k, tid in enumerate(tids):
        assert notes[tid] == struct.pack("<32QQI", *[v_lo(i, k) for i in range(32)],
                                         fcc + k, 0x1F + k)
    if not gdb_judges("loongarch64"):
        # gdb 13 reads no loongarch64 core, gdb 16.3 dies on qemu's; gdb 18 does
        assert gdb_major(rt.target.gdb) < 17
        return
    said = per_thread(gdb(rt.target, rt.exe, core, *[
        "thread apply all p/x " + r for r in
        ("$f0.d", "$f31.d", "$fcc0", "$fcc1", "$fcsr")]).splitlines())
    for k, tid in enumerate(tids):
        assert [v.split(" = ")[-1] for v in values(said[tid])] == [
            "%#x" % v_lo(0, k), "%#x" % v_lo(31, k), "%#x" % (1 + k), "0x0",
            "%#x" % (0x1F + k)], said[tid]


# ---- syscall restart on ppc64, s390, mips, loongarch64, riscv64 ----------------
# qemu-user's core shows a thread blocked in a system call at its entry: pc
# after the instruction, the arguments in place.  Made kernel-like (what
# each kernel's ptrace stop shows: the -ERESTART* code of the call, and the
# arch's marks), rewound as compel does (core2images.compel_rewind), written
# as CRIU images and loaded by the tool: the undo must give back the
# kernel-like registers, word for word, which the rewound ones are not.

M64 = (1 << 64) - 1
QEMU_RESTART_ARCHES = {"ppc64le": "ppc64", "s390x": "s390", "mips64el": "mips",
                       "loongarch64": "loongarch64", "riscv64": "riscv64"}
# pr_reg words the images lose whatever the thread does (test_arch_decode)
RESTART_LOST = {"ppc64": ("softe", "dar", "dsisr", "result")}


def program_bytes(exe):
    """read(addr, n) over a static program's PT_LOAD segments (file bytes)."""
    with open(exe, "rb") as f:
        data = f.read()
    e = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(e + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(e + "HH", data, 0x36)
    loads = []
    for i in range(phnum):
        typ, _flags, off, vaddr, _pa, filesz = struct.unpack_from(
            e + "IIQQQQ", data, phoff + i * phentsize)
        if typ == 1:
            loads.append((vaddr, off, filesz))

    def read(addr, n):
        for vaddr, off, filesz in loads:
            if vaddr <= addr and addr + n <= vaddr + filesz:
                return data[off + addr - vaddr:off + addr - vaddr + n]
        return bytes(n)
    return read


def kernel_like(arch, words, read):
    """The registers of a thread qemu shows at its system call's entry, as
    the kernel's ptrace stop (and so its core) shows them after a signal
    interrupted the call: (pr_reg words, s390's system_call word), or None
    when the thread is not at a call of the table."""
    from criu_coredump.arch import by_name
    a = by_name(arch)
    g = dict(zip(a.gregs, words))
    spec = a.syscall
    e = spec.entries[0]
    pc = g[spec.pc]
    call = 0
    if arch == "ppc64":
        e = next((x for x in spec.entries if read(pc - 4, 4) == x.insn), None)
        if e is None:
            return None
        nr = g["r0"]
    elif arch == "s390":
        op, code8 = read(pc - 2, 2)
        if op != 0x0A:
            return None
        nr = code8 or g["r1"]
        call = 2 << 16 | nr
    else:
        if read(pc - 4, 4) != e.insn:
            return None
        nr = g[e.nr]
    name, code = syscall_restart.code_for(e.numbers, nr, [g[r] for r in e.args])
    if code != syscall_restart.ERESTARTNOHAND:        # the workers, in pause() or ppoll()
        return None
    if arch == "ppc64":
        g["orig_gpr3"] = g["r3"]
        g["r3"] = code if not e.negative else -code & M64
        if not e.negative:
            g["ccr"] |= 0x10000000
        g["trap"] = e.trap
    elif arch == "s390":
        g["orig_gpr2"], g["r2"] = g["r2"], -code & M64
    elif arch == "mips":
        g["r0"], g["r26"], g["r7"], g["r2"] = nr, g["r7"], 1, code
    elif arch == "loongarch64":
        g["orig_a0"], g["r4"], g["r0"] = g["r4"], -code & M64, nr + 1
    elif arch == "riscv64":
        g["pc"] -= 4             # its kernel rewinds before the stop
    return [g[n] for n in a.gregs], call


@pytest.mark.parametrize("target", sorted(QEMU_RESTART_ARCHES))
def test_restart_undone_on_qemu_states(target, tmp_path, plain_core_pattern):
    arch = QEMU_RESTART_ARCHES[target]
    t = TARGETS[target]
    work = str(tmp_path)
    if t.committed:
        exe, ref, _ = built_or_committed(t, work)
    else:
        exe = build(t, work)
        ref = reference_core(t, exe, work)
    read = program_bytes(exe)
    from criu_coredump.arch import by_name
    a = by_name(arch)
    made = {}

    def edit_notes(k, thread):
        state = kernel_like(arch, thread.regs, read)
        if state is None:
            return
        words, call = state
        for i, w in enumerate(words):
            thread.prstatus.pr_reg[i] = w
        if call:
            thread.notes[core2images.NT_S390_SYSTEM_CALL] = struct.pack(">I", call)
        made[thread.tid] = words

    images = os.path.join(work, "images")
    core2images.core_to_images(ref, images, edit_notes=edit_notes, as_criu_saves=True)
    assert len(made) == 3, made          # the three workers
    keep = [i for i, n in enumerate(a.gregs) if n not in RESTART_LOST.get(arch, ())]
    for tid, want in made.items():
        _, th = load_thread(images, tid)
        saved = [th.regs.gp.get(n, 0) for n in a.gregs]
        r = syscall_restart.undo(arch, th.regs.gp, read, th.regs.extra)
        got = [th.regs.gp.get(n, 0) for n in a.gregs]
        assert [got[i] for i in keep] == [want[i] for i in keep], (
            tid, [(a.gregs[i], hex(got[i]), hex(want[i])) for i in keep if got[i] != want[i]])
        assert r is not None and r.code == syscall_restart.ERESTARTNOHAND
        if arch == "riscv64":
            # saved as the kernel shows it: recognised, nothing to undo
            assert r.how == "kernel" and not r.changed and saved == got
        else:
            # without the undo the core would show compel's rewind
            assert r.changed and [saved[i] for i in keep] != [want[i] for i in keep]


# ---- ia32: the kernel wrote every note, ours must hold the same ------------

def notes_by_thread(path):
    """[(type, desc)] per NT_PRSTATUS, with the process notes in the first."""
    with core2images.CoreFile(path) as core:
        threads = []
        for _, ntype, desc in core.notes():
            if ntype == core2images.NT_PRSTATUS:
                threads.append([])
            threads[-1].append((ntype, desc))
        return threads


# Notes whose bytes the images fully determine (NT_PRSTATUS carries the
# signal and times, which CRIU does not keep; NT_X86_XSTATE follows the
# x86_64 module's fixed layout, not necessarily this CPU's).
IA32_SAME = {3: "NT_PRPSINFO", 6: "NT_AUXV", 0x46494C45: "NT_FILE",
             2: "NT_PRFPREG", 0x46E62B7F: "NT_PRXFPREG", 0x200: "NT_386_TLS"}


def test_ia32_notes_equal_the_kernels(roundtrip):
    rt = roundtrip("ia32")
    ref, ours = notes_by_thread(rt.ref), notes_by_thread(rt.ours)
    assert [[t for t, _ in th] for th in ours] == [[t for t, _ in th] for th in ref]
    for ref_th, our_th in zip(ref, ours):
        for (t, want), (_, got) in zip(ref_th, our_th):
            if t in IA32_SAME:
                assert got == want, IA32_SAME[t]
            if t == core2images.NT_PRSTATUS:     # pr_reg and pr_fpvalid
                assert got[72:] == want[72:]


def test_ia32_eu_readelf_decodes_the_same_notes(roundtrip):
    rt = roundtrip("ia32")

    def decoded(path):
        out = subprocess.run([need("eu-readelf"), "-n", path], stdout=subprocess.PIPE,
                             text=True, check=True).stdout
        blocks, keep = [], False
        for line in out.splitlines():
            m = re.match(r"^  (CORE|LINUX)\s+\d+\s+(\S+)", line)
            if m:
                keep = m.group(2) in ("PRPSINFO", "AUXV", "FILE", "FPREGSET",
                                      "PRXFPREG", "386_TLS")
            if keep:
                blocks.append(line)
        return blocks

    ref = decoded(rt.ref)
    assert any("st1: 0x3fff8000000000000000" in l for l in ref)   # 1.0 from fld1
    assert decoded(rt.ours) == ref


def test_aarch64_thread_without_registers_is_a_clear_error(roundtrip, tmp_path):
    rt = roundtrip("aarch64")
    worker = [t for t in rt.tids if t != rt.tids[0]][0]

    images = str(tmp_path / "images")
    shutil.copytree(rt.images, images)
    path = os.path.join(images, "core-%d.img" % worker)
    with open(path, "rb") as f:
        img = pycriu.images.load(f)
    del img["entries"][0]["ti_aarch64"]
    with open(path, "wb") as f:
        pycriu.images.dump(img, f)
    out = tmp_path / "out"
    out.mkdir()
    p = run_coredump("-i", images, "-o", out, check=2)
    assert p.stderr.strip() == ("coredump: error: %s: no aarch64 thread info "
                                "(registers)" % path)
    assert os.listdir(out) == []


# ---- aarch64 pointer authentication -----------------------------------------

def add_pac_keys(path, address, enabled):
    """Give a core image the pac_keys CRIU 3.19+ saves on PAC hardware.

    pycriu 3.17 cannot encode thread_info_aarch64 field 5, so the field is
    encoded by protobuf from the same declaration (arch.aarch64.PacThreadInfo)
    and merged into ti_aarch64; the image is pycriu's encoding with that
    entry's payload replaced."""
    with open(path, "rb") as f:
        img = pycriu.images.load(f)
    core = pb.core_entry()
    pb2dict.dict2pb(img["entries"][0], core)
    old = core.SerializeToString()
    pac = ccd_aarch64.PacThreadInfo()
    keys = pac.pac_keys.pac_address_keys
    for name, value in zip(ccd_aarch64.PAC_ADDRESS, address):
        setattr(keys, name, value)
    keys.pac_enabled_key = enabled
    core.ti_aarch64.MergeFromString(pac.SerializeToString())
    new = core.SerializeToString()
    raw = pycriu.images.dumps(img)
    assert raw.count(old) == 1
    with open(path, "wb") as f:
        f.write(raw.replace(struct.pack("<i", len(old)) + old,
                            struct.pack("<i", len(new)) + new))


def highest_vma_end(images, pid):
    with open(os.path.join(images, "mm-%d.img" % pid), "rb") as f:
        mm = pycriu.images.load(f)["entries"][0]
    return max(int(str(v["end"]), 0) for v in mm["vmas"])


def test_aarch64_pac_mask_lets_gdb_unwind_signed_return_addresses(tmp_path):
    """Built with -mbranch-protection=pac-ret, the program's return
    addresses carry PAC bits (qemu emulates pointer authentication).
    qemu's core has no NT_ARM_PAC_MASK and gdb cannot unwind past them;
    ours, from images with PAC keys, has the mask and the full stacks."""
    target = dataclasses.replace(TARGETS["aarch64"], runner=("qemu-aarch64", "-cpu", "max"))
    work = str(tmp_path)
    exe = build(target, work, "-mbranch-protection=pac-ret")
    ref = reference_core(target, exe, work)
    images = os.path.join(work, "images")
    summary = core2images.core_to_images(ref, images)
    address = [0x1111 * (i + 1) for i in range(8)]
    for tid in summary["tids"]:
        add_pac_keys(os.path.join(images, "core-%d.img" % tid), address, 0xF)
    core = convert(images, work)

    def frames(path):
        out = gdb(target, exe, path, "thread apply all bt",
                  "info registers pauth_dmask pauth_cmask")
        bts = per_thread(out.splitlines())
        return {lwp: [l for l in lines if re.match(r"^#\d+ ", l)]
                for lwp, lines in bts.items()}, registers(out.splitlines())

    theirs, _ = frames(ref)
    ours, regs = frames(core)
    workers = [lwp for lwp, f in ours.items() if any(" worker (" in l for l in f)]
    assert len(workers) == 3, ours
    for lwp in workers:
        # qemu's core: stuck at PAC (gdb 13: a frame or two; gdb 16 stops
        # `thread apply all` at the first thread: "Register N is not available")
        assert len(theirs.get(lwp, [])) < 3, theirs
        assert sum("[PAC] in recurse (" in l for l in ours[lwp]) >= 3, ours[lwp]
    bits = (highest_vma_end(images, summary["pid"]) - 1).bit_length()
    mask = "%#x" % (((1 << 55) - 1) & ~((1 << bits) - 1))
    assert (regs["pauth_dmask"], regs["pauth_cmask"]) == (mask, mask)
    notes = subprocess.run([need("readelf"), "-n", core], stdout=subprocess.PIPE,
                           text=True, check=True).stdout
    paca = re.findall(r"NT_ARM_PACA_KEYS.*\n\s+description data: (.*)", notes)
    assert [p.strip() for p in paca] == [
        " ".join("%02x" % b for b in struct.pack("<8Q", *address))] * 4
    enabled = re.findall(r"NT_ARM_PAC_ENABLED_KEYS.*\n\s+description data: (.*)", notes)
    assert [e.strip() for e in enabled] == ["0f 00 00 00 00 00 00 00"] * 4


def test_aarch64_gdb_option_picks_a_debugger_that_reads_aarch64(roundtrip):
    """`coredump --gdb` on an x86_64 machine: the distribution's gdb reads no
    aarch64 core, gdb-multiarch does and is the one started."""
    rt = roundtrip("aarch64")
    want = registers(gdb(rt.target, rt.exe, rt.ref, "info registers pc").splitlines())
    pid = int(os.path.basename(rt.ours).split(".")[1])
    p = run_coredump("-i", rt.images, "--gdb", pid, "--", "-batch", "-ex",
                     "info registers pc", check=0)
    assert registers(p.stdout.splitlines())["pc"] == want["pc"]


# ---- aarch64 under qemu-user: a thread saved on its svc stays there ---------

def test_aarch64_thread_saved_on_its_svc_is_left_there(tmp_path, plain_core_pattern):
    target = TARGETS["aarch64"]
    work = str(tmp_path)
    exe = build(target, work)
    ref = reference_core(target, exe, work)
    images = os.path.join(work, "images")
    core2images.core_to_images(ref, images)
    # put each thread in pause() where the kernel (and so CRIU) would save
    # it: on its svc, x0 back to its argument (qemu shows it after the svc)
    moved = {}

    def edit(k, e):
        g = e["ti_aarch64"]["gpregs"]
        hexed = isinstance(g["pc"], str)
        moved[k] = (int(g["pc"], 16) if hexed else g["pc"]) - 4
        g["pc"] = hex(moved[k]) if hexed else moved[k]
    planted = os.path.join(work, "planted")
    tids = plant(images, planted, edit)
    ours = convert(planted, work)
    lines = gdb(target, exe, ours, "thread apply all info registers pc x8",
                   "thread apply all x/i $pc")
    per = per_thread(lines.splitlines())
    calls = []
    for k, tid in enumerate(tids):
        regs = registers(per[tid])
        assert int(regs["pc"], 16) == moved[k], (tid, regs)
        assert any(re.search(r"\bsvc\s+#0x0\b", l) for l in per[tid]), per[tid]
        calls.append(syscall_restart.SYSCALL_NAMES["generic"].get(int(regs["x8"], 16), "other"))
    # the workers in pause(), which is ppoll on aarch64; main in tgkill
    assert sorted(calls) == ["other", "ppoll", "ppoll", "ppoll"], calls


# The real CRIU fixtures are compared with their gcores, exactly, in
# tests/test_e2e_fixtures.py (every zdtm program among them).
