"""The arch seam: everything an architecture is lives in criu_coredump/arch/.

- no arch name and no CRIU thread-info field (core_entry.ti_*, or x86's
  thread_info) appears in the code of the package outside arch/: the loader
  reaches an arch's registers only through `arch.ti_field` and
  `arch.ti_class`, and everything else through the Arch found by name;
- every module of arch/ that describes an arch is registered (MODULES), and
  its ARCH is named after it and has the mtype its registry line gives
  (the registry picks an arch's module by mtype before importing it);
- one Arch per CRIU machine type (core_entry.march), the x86_64 one shared
  by x86_64 and ia32 tasks, told apart by their registers.

Docstrings and comments may name arches: they explain, they decide nothing.
"""
import os
import tokenize

from criu_coredump import arch as arches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "criu_coredump")
ARCH_DIR = os.path.join(PKG, "arch")
# arch/ modules that describe no arch: the registry, the shared types, the
# syscall numbering tables
NOT_ARCHES = {"__init__", "base", "syscall_numbers"}
# images/core.proto enum march: every machine CRIU writes images for
CRIU_MARCH = {1: "X86_64", 2: "ARM", 3: "AARCH64", 4: "PPC64", 5: "S390",
              6: "MIPS", 7: "LOONGARCH64", 8: "RISCV64"}
# (file, word): names that are not a checkpoint's arch.  rootfs.py (the
# number of openat2) and aio.py (those of io_setup, io_submit, ...) key
# system call numbers by the HOST's machine: they make the calls on the
# machine running the conversion.
ALLOWED = {("rootfs.py", "x86_64"), ("rootfs.py", "aarch64"),
           ("aio.py", "x86_64"), ("aio.py", "aarch64")}


def arch_words():
    words = {a.name for a in arches.ARCHES} | {a.ti_field for a in arches.ARCHES}
    return words | {"x86", "i386", "arm64", "riscv", "loongarch", "powerpc", "ppc64le",
                    "s390x", "mips64", "mips64el"}


def code_words(path):
    """(line, word) of every name and every string literal's value in a
    module's code, docstrings and comments left out."""
    with open(path, "rb") as f:
        toks = list(tokenize.tokenize(f.readline))
    out, prev = [], tokenize.NEWLINE
    for t in toks:
        if t.type == tokenize.NAME:
            out.append((t.start[0], t.string))
        elif t.type == tokenize.STRING:
            # a string standing alone as a statement is a docstring
            if prev not in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENCODING):
                try:
                    value = eval(t.string)   # a literal: no code runs
                except SyntaxError:
                    value = ""
                if isinstance(value, bytes):
                    value = value.decode("latin-1")
                out.append((t.start[0], value))
        if t.type not in (tokenize.COMMENT, tokenize.NL):
            prev = t.type
    return out


def package_modules_outside_arch():
    for root, _dirs, files in os.walk(PKG):
        if os.path.commonpath([root, ARCH_DIR]) == ARCH_DIR:
            continue
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(root, f)


def test_no_arch_name_or_thread_info_field_outside_arch():
    words = arch_words()
    found = []
    for path in package_modules_outside_arch():
        name = os.path.basename(path)
        for line, w in code_words(path):
            if (w in words or (w.startswith("ti_") and w not in ("ti_field", "ti_class"))
                    or w == "thread_info") and (name, w) not in ALLOWED:
                found.append("%s:%d: %s" % (os.path.relpath(path, REPO), line, w))
    assert found == []


def test_the_seam_test_sees_a_leak(tmp_path):
    """The scanner finds an arch name in code and a ti_ field, not in a
    docstring or a comment."""
    p = tmp_path / "m.py"
    p.write_text('"""aarch64 in a docstring."""\n# s390 in a comment\n'
                 'x = regs.ti_ppc64\nif a == "riscv64":\n    pass\n')
    words = [w for _, w in code_words(str(p))]
    assert "ti_ppc64" in words and "riscv64" in words
    assert "aarch64 in a docstring." not in words and "s390" not in words


def test_every_arch_module_is_registered_under_its_name():
    modules = {f[:-3] for f in os.listdir(ARCH_DIR) if f.endswith(".py")} - NOT_ARCHES
    assert modules == set(arches.NAMES)
    assert [a.name for a in arches.ARCHES] == list(arches.NAMES)
    assert [(a.name, a.mtype) for a in arches.ARCHES] == list(arches.MODULES)
    for a in arches.ARCHES:
        assert arches.by_name(a.name) is a
    assert arches.by_name("vax") is None


def test_one_arch_per_criu_machine_type():
    assert {a.mtype for a in arches.ARCHES} == set(CRIU_MARCH)
    for mtype in CRIU_MARCH:
        found = arches.by_mtype(mtype)
        assert found
        # several on one mtype (x86_64, ia32): all but the last tell their
        # own registers apart
        assert all(a.accepts is not None for a in found[:-1]), found
    assert len({a.ti_field for a in arches.ARCHES}) == len(CRIU_MARCH)


def test_readme_and_man_page_name_every_arch():
    """The README's architecture table has a row per arch, and the man
    page's list of what --json's arch may be names them all."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    with open(os.path.join(REPO, "doc", "coredump.1")) as f:
        man = f.read()
    table = readme[readme.index("### Architectures"):]
    rows = [l.split("|")[1].strip() for l in table.splitlines() if l.startswith("| ")]
    for a in arches.ARCHES:
        if a.name != "ia32":    # ia32 is the x86_64 row's COMPAT mode
            assert any(r.split(" ")[0].strip(",") == a.name for r in rows), a.name
        assert a.name in man, a.name
    assert "refused (exit 2)" not in table
