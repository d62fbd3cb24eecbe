"""More than 65534 segments: e_phnum = PN_XNUM (0xffff) and the real count
in section header 0's sh_info, as the kernel writes it (fill_extnum_info);
readelf and gdb must find every program header, the last one included."""
import re

import pytest

from .helpers import synth
from .helpers.tools import convert, gdb_memory, readelf

pytestmark = pytest.mark.slow

P = synth.PAGE
BASE = 0x100000000


def many_mappings(path, count):
    """`count` one-page mappings with a page gap between them; every
    1000th and the last one hold a page naming its mapping."""
    ck = synth.Checkpoint(path)
    p = ck.process(300)
    for i in range(count):
        a = BASE + 2 * i * P
        p.vma(a, a + P, prot=synth.RW if i % 2 else synth.PROT_READ)
        if i % 1000 == 0 or i == count - 1:
            p.pages(a, (b"mapping %d" % i).ljust(P, b"\0"))
    return ck.write()


def header_field(text, name):
    m = re.search(r"^\s*%s:\s*(.*)$" % re.escape(name), text, re.M)
    assert m, text
    return m.group(1).strip()


def test_70000_mappings_use_pn_xnum_and_gdb_reads_the_last(tmp_path):
    n = 70000
    images = many_mappings(tmp_path / "img", n)
    _, cores = convert(images, tmp_path / "out")
    core = cores[300]

    h = readelf("-hW", core)
    assert header_field(h, "Number of program headers") == "65535 (%d)" % (n + 1)
    assert header_field(h, "Number of section headers") == "1"
    assert header_field(h, "Section header string table index") == "0"
    sections = readelf("-SW", core)
    row = [line for line in sections.splitlines() if "[ 0]" in line][0].split()
    # [ 0] <no-strings> NULL addr off size es lk inf al
    assert row[3] == "NULL" and row[-2] == str(n + 1), row

    lines = readelf("-lW", core).splitlines()
    load = [ln.split() for ln in lines if ln.strip().startswith("LOAD")]
    assert len(load) == n
    last = BASE + 2 * (n - 1) * P
    assert int(load[-1][2], 16) == last
    assert int(load[-1][4], 16) == P  # the last mapping's page is dumped

    got = gdb_memory(core, [(last, 16), (BASE + 2 * 69000 * P, 16),
                            (BASE + 2 * 12345 * P, 16)], tmp_path / "gdb")
    assert got[0] == b"mapping 69999".ljust(16, b"\0")
    assert got[1] == b"mapping 69000".ljust(16, b"\0")
    assert got[2] == bytes(16)  # no page: a zero-size segment (memsz only)


@pytest.mark.parametrize("mappings, phnum, shnum", [
    (65533, "65534", "0"),            # 65534 headers still fit
    (65534, "65535 (65535)", "1"),    # 65535 = PN_XNUM itself: extended
])
def test_pn_xnum_boundary(tmp_path, mappings, phnum, shnum):
    images = many_mappings(tmp_path / "img", mappings)
    _, cores = convert(images, tmp_path / "out")
    h = readelf("-hW", cores[300])
    assert header_field(h, "Number of program headers") == phnum
    assert header_field(h, "Number of section headers") == shnum
