"""Page counts are right for both pagemap encodings: CRIU 3.x (32-bit field 2)
and CRIU 4.2+ (64-bit field 5, field 2 left 0), read with the distribution's
pycriu, which knows only field 2.  Both image sets come from one real
kernel-written core, so the cores we write must be identical and gdb must
read the same program state from them as from the kernel's core."""
import os

import pytest

from .helpers.tools import gdb, run_coredump
from .helpers.core2images import core_to_images

pytestmark = pytest.mark.slow


def _gdb(exe, core):
    out = gdb(core, "set debuginfod enabled off", "thread apply all bt",
              "info threads", exe=exe)
    keep = [l for l in out.splitlines()
            if l.startswith(("#", "Thread ", "  ", "* "))]
    return keep


def test_both_encodings_give_the_same_core(kernel_core, tmp_path):  # noqa: F811
    cores = {}
    for field in (2, 5):
        img, out = tmp_path / ("img%d" % field), tmp_path / ("out%d" % field)
        img.mkdir(), out.mkdir()
        core_to_images(kernel_core["core"], str(img), exe=kernel_core["exe"],
                       nr_pages_field=field)
        run_coredump("-i", img, "-o", out, "-q", check=0)
        cores[field] = out / ("core.%d" % kernel_core["pid"])
    a, b = cores[2].read_bytes(), cores[5].read_bytes()
    assert a == b
    # and the pages really are there: gdb unwinds every thread as on the
    # kernel's own core
    ours = _gdb(kernel_core["exe"], str(cores[5]))
    theirs = _gdb(kernel_core["exe"], kernel_core["core"])
    assert ours == theirs
    assert sum(1 for l in ours if l.startswith("#")) >= 8
    assert os.path.getsize(cores[5]) > 1 << 20
