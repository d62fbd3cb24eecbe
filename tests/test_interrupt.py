"""SIGINT/SIGTERM during a long conversion: the unfinished core is removed,
an older core is left as it was, and the program dies of the signal.

The checkpoint is the stopped_static fixture plus 2 GiB of private anonymous
memory whose pages are all in the pages image (a sparse file: the pages are
zeros that take no disk space), so the conversion copies for long enough to
be interrupted half way.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from .helpers.paths import COREDUMP
from .helpers.tools import signals_at_default
from .helpers.imgedit import edit_image, read_messages

pytestmark = pytest.mark.slow

PID = 13508
BIG = 2 << 30
BIG_START = 0x7F0000000000  # free in this process: between its heap and vvar
PE_PRESENT = 4


@pytest.fixture(scope="module")
def big_images(fixtures_dir, tmp_path_factory):
    src = os.path.join(fixtures_dir("stopped_static"), "images")
    d = tmp_path_factory.mktemp("big") / "images"
    shutil.copytree(src, d)

    def add_vma(m):
        vmas = list(m[0].vmas)
        big = type(vmas[0])()
        big.CopyFrom(vmas[5])  # a private anonymous mapping
        big.start, big.end = BIG_START, BIG_START + BIG
        vmas.append(big)
        vmas.sort(key=lambda v: v.start)
        del m[0].vmas[:]
        m[0].vmas.extend(vmas)
    edit_image(str(d / ("mm-%d.img" % PID)), add_vma)

    # the pagemap entry goes in address order; its pages go at the same
    # place in the pages image, which is in pagemap order
    pagemap = str(d / ("pagemap-%d.img" % PID))
    _, msgs = read_messages(pagemap)
    before = [e for e in msgs[1:] if e.vaddr < BIG_START]
    skip = sum(e.nr_pages or e.compat_nr_pages for e in before if e.flags & PE_PRESENT)

    def add_entry(m):
        e = type(m[1])()
        e.vaddr, e.nr_pages, e.flags = BIG_START, BIG // 4096, PE_PRESENT
        m.insert(1 + len(before), e)
    edit_image(pagemap, add_entry)
    pages = d / "pages-1.img"
    with open(pages, "rb") as f:
        data = f.read()
    with open(pages, "wb") as f:
        f.write(data[:skip * 4096])
        f.seek(BIG, os.SEEK_CUR)  # a hole of 2 GiB
        f.write(data[skip * 4096:])
    return str(d)


def _interrupt(images, out, signum):
    """Start a conversion, signal it once its core is being written; returns
    its exit status and how far it had got."""
    p = subprocess.Popen([sys.executable, COREDUMP, "-i", images, "-o", str(out), "-q"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=signals_at_default)
    deadline = time.monotonic() + 120
    size = 0
    try:
        while time.monotonic() < deadline and p.poll() is None:
            tmp = [n for n in os.listdir(out) if n.startswith(".core.%d." % PID)]
            size = os.path.getsize(out / tmp[0]) if tmp else 0
            if size > 32 << 20:  # well into the 2 GiB segment
                p.send_signal(signum)
                break
            time.sleep(0.005)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert size > 32 << 20, "the conversion was not caught writing (%d bytes)" % size
    return p.returncode, err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupted_conversion_leaves_nothing(big_images, tmp_path, signum):
    out = tmp_path / "out"
    out.mkdir()
    rc, err = _interrupt(big_images, out, signum)
    assert rc == -signum, (rc, err)
    assert b"Traceback" not in err
    assert os.listdir(out) == []


def test_interrupted_conversion_keeps_the_older_core(big_images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ("core.%d" % PID)).write_bytes(b"the previous core")
    rc, _ = _interrupt(big_images, out, signal.SIGTERM)
    assert rc == -signal.SIGTERM
    assert os.listdir(out) == ["core.%d" % PID]
    assert (out / ("core.%d" % PID)).read_bytes() == b"the previous core"
