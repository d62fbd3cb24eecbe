"""The README's first command, scripts/example.sh, as a user runs it: the
core of the bundled example, and gdb naming every thread (libthread_db of
the example's glibc) and every frame, libc's included (its debug file), with
no warning, whatever the distribution's gdb and glibc."""
import os
import re
import subprocess

import pytest

from .helpers.paths import REPO
from .helpers.tools import need

pytestmark = pytest.mark.slow


def readme_session():
    """The README's session of scripts/example.sh: its indented lines, from
    the summary line to the last frame."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    block = text.split("`scripts/example.sh` prints:\n", 1)[1].split("\n(gdb ", 1)[0]
    return [line[4:] for line in block.splitlines() if line.startswith("    ")]


def test_example_script_shows_every_thread_and_frame_without_warnings(tmp_path):
    need("gdb")
    p = subprocess.run([os.path.join(REPO, "scripts", "example.sh"), str(tmp_path)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=1200, cwd=REPO)
    out = p.stdout
    assert p.returncode == 0, out
    # what the README shows a user is what the script prints: the summary,
    # the thread list and every frame (gdb 13, 16 and 18 print them alike;
    # the README's paths are out/example and /home/me/criu-coredump)
    shown = readme_session()
    said = out.replace(str(tmp_path), "out/example").replace(REPO, "/home/me/criu-coredump")
    said = said.splitlines()
    assert shown[0] in said, said
    same = re.compile(r"^(#\d+ |[* ] \d+ +Thread |Thread \d+ \(|\[Current thread)")
    assert ([l for l in shown if same.match(l)] == [l for l in said if same.match(l)]), said
    assert "core.13466: pid 13466 (prog), x86_64, 4 threads" in out
    gdb_part = out.split("gdb on ", 1)[1]
    assert not re.search(r"warning|error|\?\?|[Nn]o such file|not available", gdb_part,
                         re.I), gdb_part
    headers = re.findall(r"^Thread \d+ \(Thread 0x[0-9a-f]+ \(LWP (\d+)\)\):$", gdb_part, re.M)
    assert sorted(headers) == ["13466", "13468", "13469", "13471"], gdb_part
    frames = re.findall(r"^#\d+ +0x[0-9a-f]+ in (\S+) \(.*\) at \S+:\d+$", gdb_part, re.M)
    all_frames = re.findall(r"^#\d+ ", gdb_part, re.M)
    # 26 frames in the backtraces, and the current one gdb shows on loading
    assert len(frames) == len(all_frames) == 27, gdb_part
    assert frames.count("__libc_pause") == 5
    assert frames.count("start_thread") == frames.count("clone3") == 3
