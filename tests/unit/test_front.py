"""The command's front and the small modules around the page path: cli's
options, report's lines and exit codes, errors' one-line messages,
progress, parallel's ordered workers, gdb_launch's command, protodecl's
declarations, buildid, rootfs, model's kernel names, syscall_restart."""
import os
import signal
import struct
import subprocess
import sys

import pytest

import criu_coredump
from criu_coredump import (buildid, cli, errors, gdb_launch, parallel,
                           progress, protodecl, report, syscall_restart)
from criu_coredump.convert import CoreResult
from criu_coredump.model import MappedFile
from criu_coredump.rootfs import RootFS

from ..helpers.paths import REPO


def test_options(capsys):
    a = cli.parse_args(["-i", "IMG", "--filter", "0x1ff", "-j", "3", "--pid", "7"])
    assert (a.images_dir, a.filter, a.jobs, a.pid) == ("IMG", 0x1ff, 3, [7])
    assert cli.parse_args(["-i", "IMG"]).filter == 0x3b
    g = cli.parse_args(["-i", "IMG", "--gdb", "5", "--", "-batch"])
    assert (g.gdb, g.gdb_args) == (5, ["-batch"])


@pytest.mark.parametrize("argv,says", [
    (["-i", "I", "--filter", "0x400"], "coredump_filter bits are 0x0-0x3ff"),
    (["-i", "I", "-j", "0"], "must be 1 or more"),
    (["-i", "I", "--list", "--pid", "3"], "--list writes nothing"),
    (["-i", "I", "--", "-batch"], "they need --gdb PID"),
])
def test_bad_options_are_usage_errors(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == errors.EXIT_USAGE
    assert says in capsys.readouterr().err


def test_report_lines_and_exit_codes():
    ok = CoreResult(pid=5, comm="prog", arch="x86_64", path="/o/core.5", threads=2,
                    segments=3, dumped=3 << 20, holes=1 << 20)
    assert report.summary_line(ok) == ("/o/core.5: pid 5 (prog), x86_64, 2 threads, "
                                       "3 segments, 3.0 MiB of memory (1.0 MiB in holes), "
                                       "no warnings")
    assert report.human_size(1023) == "1023 B"
    assert report.exit_code([ok]) == errors.EXIT_OK
    bad = CoreResult(pid=6, comm="", error=errors.BadImage("x", "y"))
    lazy = CoreResult(pid=7, comm="p", lazy_pages=1)
    assert report.exit_code([ok, lazy]) == errors.EXIT_INCOMPLETE
    assert report.exit_code([ok, bad]) != errors.EXIT_OK


def test_messages_are_one_line():
    assert errors.one_line("a\nb\x1b") == "a\\nb\\x1b"
    assert errors.one_line("/x/\udcff") == "/x/\\xff"
    e = errors.BadImage("/img/core-1.img", "truncated entry")
    assert (str(e), e.exit_code) == ("/img/core-1.img: truncated entry", errors.EXIT_BAD_INPUT)


def test_no_progress_bar_off_a_terminal(tmp_path):
    with open(str(tmp_path / "f"), "w") as f:
        assert progress.for_stream(f) is None
    assert progress.for_stream(sys.stderr, quiet=True) is None


def test_parallel_results_come_in_order_and_a_killed_child_is_reported():
    def work(i, warn, prog):
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        warn("w%d" % i, "x")
        return i * 10
    warned = []
    got = parallel.run_ordered(4, work, 2, warn=lambda p, w: warned.append(p),
                               lost=lambda i, s: ("lost", i, s))
    assert got == [0, 10, ("lost", 2, signal.SIGKILL), 30]
    assert warned == ["w0", "w1", "w3"]
    assert parallel.child_signal_name(signal.SIGKILL) == "SIGKILL"


def test_gdb_command_sets_the_sysroot_first(tmp_path):
    cmd = gdb_launch.gdb_command("gdb", "/o/core.5", "/r/bin/prog", str(tmp_path), ["-batch"])
    assert cmd == ["gdb", "-iex", "set sysroot %s" % tmp_path, "-batch", "/r/bin/prog", "/o/core.5"]
    assert gdb_launch.gdb_command("gdb", "/o/core.5") == ["gdb", "-c", "/o/core.5"]


def test_a_declared_message_reads_what_criu_wrote():
    from pycriu.images import pb
    cls = protodecl.declare("unit_test_decl.proto",
                            [("pe", [("vaddr", 1, "uint64"), ("nr", 5, "uint64")])], "pe")
    e = pb.pagemap_entry()
    e.vaddr = 0x5000
    raw = e.SerializePartialToString() + bytes([5 << 3, 9])   # field 5 = 9
    msg = cls()
    msg.ParseFromString(raw)
    assert (msg.vaddr, msg.nr) == (0x5000, 9)


def _elf_with_build_id(path, bid):
    """A minimal ELF64 file: header, one PT_NOTE, an NT_GNU_BUILD_ID note."""
    note = struct.pack("<III", 4, len(bid), 3) + b"GNU\0" + bid
    eh = (b"\x7fELF\x02\x01\x01" + bytes(9)
          + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0))
    ph = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(note), len(note), 4)
    path.write_bytes(eh + ph + note)


def test_build_ids_are_read_and_compared(tmp_path):
    bid = bytes(range(1, 21))
    _elf_with_build_id(tmp_path / "lib.so", bid)
    fd = os.open(str(tmp_path / "lib.so"), os.O_RDONLY)
    try:
        assert buildid.read_build_id(fd) == bid
    finally:
        os.close(fd)
    assert buildid.same_build(bid, bid)
    swapped = b"".join(bid[i:i + 4][::-1] for i in range(0, 20, 4))
    assert buildid.same_build(swapped, bid)           # a big-endian machine's words
    assert not buildid.same_build(bid, None)
    assert buildid.shown(None) == "none" and buildid.shown(b"\xab") == "ab"
    (tmp_path / "text").write_bytes(b"#!/bin/sh\n")
    fd = os.open(str(tmp_path / "text"), os.O_RDONLY)
    try:
        assert buildid.read_build_id(fd) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("resolver", ["walk", "auto"])
def test_files_are_read_inside_the_root(tmp_path, resolver):
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "a").write_bytes(b"inside")
    (tmp_path / "secret").write_bytes(b"outside")
    os.symlink("/../../secret", str(root / "lib" / "up"))
    fs = RootFS(str(root), resolver=resolver)
    try:
        fd = fs.open("/lib/a")
        assert os.read(fd, 10) == b"inside"
        os.close(fd)
        with pytest.raises(OSError):
            os.close(fs.open("/lib/up"))   # resolves to <root>/secret: absent
        assert fs.display("/../lib/a") == os.path.join(str(root), "lib/a")
    finally:
        fs.close()


def test_kernel_names_of_mapped_files():
    assert MappedFile(id=1, path="/a").kernel_name == "/a"
    assert MappedFile(id=1, path="/a", deleted=True).kernel_name == "/a (deleted)"
    assert MappedFile(id=1, path="buf", kind="memfd").kernel_name == "/memfd:buf (deleted)"
    assert MappedFile(id=1, path="/dev/zero", kind="memfd").kernel_name == "/dev/zero (deleted)"


def test_a_rewound_x86_syscall_is_undone():
    """CRIU saved a thread in pause() rewound onto its `syscall` (0f 05):
    the kernel's core shows it after the instruction with -ERESTARTNOHAND."""
    ip = 0x401000
    g = {"ip": ip, "ax": 34, "orig_ax": 34}         # 34: pause

    def read(addr, n):
        return b"\x0f\x05"[:n] if addr == ip else bytes(n)
    r = syscall_restart.undo("x86_64", g, read)
    assert r.changed and g["ip"] == ip + 2
    assert g["ax"] == -514 & (1 << 64) - 1
    plain = {"ip": ip, "ax": 0, "orig_ax": -1 & (1 << 64) - 1}
    assert syscall_restart.undo("x86_64", plain, read) is None


def test_the_package_entry_points():
    assert criu_coredump.__version__
    p = subprocess.run([sys.executable, "-m", "criu_coredump", "--version"], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert p.returncode == 0 and criu_coredump.__version__ in p.stdout + p.stderr
