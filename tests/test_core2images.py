"""Tests for tests/helpers/core2images.py.

The x86_64 test makes the kernel write a real core (a small threaded C
program killed with SIGSEGV), converts it and checks the images against
what independent sources say: eu-readelf's decoding of the notes, readelf's
program headers, and /proc/<pid> read while the process was still alive.
The aarch64 test feeds a hand-built core, since no arm64 kernel is at hand.
"""

import base64
import ctypes
import os
import signal
import struct
import subprocess
import sys

import pytest


from tests.helpers import core2images
from tests.helpers.core2images import core_to_images
from tests.helpers.kernelcore import HEAP_STRING, PROG_NAME, cpu_has
from tests.helpers.readers import (EU_GREGS, eu_readelf_notes, load_image,
                                   readelf_loads, sigset, to_u64)
from tests.helpers.synth import PAGEMAP_FIELD2, pagemap_count, pagemap_field2

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Making a kernel core
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Independent views of the core
# ---------------------------------------------------------------------------

def raw_records(path):
    """Size-prefixed records of an image, after its two magics."""
    with open(path, "rb") as f:
        data = f.read()
    pos, records = 8, []
    while pos < len(data):
        size, = struct.unpack_from("<i", data, pos)
        records.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return records


def read_varint(data, pos):
    val = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        val |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return val, pos


def proto_fields(raw):
    """{field number: value} of a message made of varint fields only."""
    fields, pos = {}, 0
    while pos < len(raw):
        tag, pos = read_varint(raw, pos)
        assert tag & 7 == 0, "only varint fields expected"
        fields[tag >> 3], pos = read_varint(raw, pos)
    return fields


# ---------------------------------------------------------------------------
# x86_64: a real kernel core
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def converted(kernel_core, tmp_path_factory):
    out = tmp_path_factory.mktemp("images")
    summary = core_to_images(kernel_core["core"], str(out), exe=kernel_core["exe"])
    return summary, out


def test_every_image_decodes_with_crit(converted):
    _summary, out = converted
    names = sorted(os.listdir(out))
    assert "pages-1.img" in names
    for name in names:
        if name == "pages-1.img":
            continue
        res = subprocess.run(["/usr/bin/crit", "show", str(out / name)],
                             capture_output=True, text=True)
        assert res.returncode == 0, (name, res.stderr)


def test_summary_and_pstree(converted, kernel_core):
    summary, out = converted
    pid = kernel_core["pid"]
    assert summary["arch"] == "x86_64"
    assert summary["pid"] == pid
    assert sorted(summary["tids"]) == kernel_core["live"]["tids"]
    threads, psinfo = eu_readelf_notes(kernel_core["core"])
    (tree,) = load_image(out / "pstree.img")
    assert tree["pid"] == pid
    assert tree["threads"] == [int(t["regs"]["pid"]) for t in threads]
    assert (tree["ppid"], tree["pgid"], tree["sid"]) == (
        int(psinfo["ppid"]), int(psinfo["pgrp"]), int(psinfo["sid"]))
    (inv,) = load_image(out / "inventory.img")
    assert inv["img_version"] == 2 and inv["fdinfo_per_id"]
    assert inv["root_ids"]["vm_id"] == 1 and inv["root_ids"]["files_id"] == 1


def test_registers_match_eu_readelf(converted, kernel_core):
    _summary, out = converted
    threads, psinfo = eu_readelf_notes(kernel_core["core"])
    for thread in threads:
        tid = int(thread["regs"]["pid"])
        (core,) = load_image(out / ("core-%d.img" % tid))
        assert core["mtype"] == "X86_64"
        gpregs = core["thread_info"]["gpregs"]
        for eu_name, criu_name in EU_GREGS.items():
            assert gpregs[criu_name] == to_u64(thread["regs"][eu_name]), (tid, eu_name)
        assert gpregs["orig_ax"] == to_u64(thread["regs"]["orig_rax"])
        assert gpregs["mode"] == "NATIVE"

        fp = core["thread_info"]["fpregs"]
        assert fp["cwd"] == thread["xmm"]["fcw"]
        assert fp["swd"] == thread["xmm"]["fsw"]
        assert fp["mxcsr"] | fp["mxcsr_mask"] << 32 == thread["xmm"]["mxcsr"]
        assert len(fp["st_space"]) == 32 and len(fp["padding"]) == 24
        for i in range(16):
            words = fp["xmm_space"][4 * i:4 * i + 4]
            assert sum(w << (32 * k) for k, w in enumerate(words)) == thread["xmm"]["xmm%d" % i]

        tc = core["thread_core"]
        assert tc["blk_sigset"] == sigset(thread["regs"]["sighold"])
        pending = [struct.unpack_from("<iii", base64.b64decode(s["siginfo"]))
                   for s in tc["signals_p"].get("signals", [])]
        assert sum(1 << (signo - 1) for signo, _e, _c in pending) == \
            sigset(thread["regs"]["sigpend"])
        assert tc["comm"] == PROG_NAME == psinfo["fname"]
        assert tc["creds"]["uid"] == int(psinfo["uid"])
        assert tc["sched_nice"] == int(psinfo["nice"])
        assert ("tc" in core) == (tid == kernel_core["pid"])
        if "tc" in core:
            assert core["tc"]["task_state"] == 1
            assert core["tc"]["flags"] == int(psinfo["flag"], 16)
            assert core["tc"]["comm"] == PROG_NAME


def test_pending_signal_of_worker(converted):
    """Worker 2 blocked SIGUSR1/SIGUSR2 and had a SIGUSR1 pending."""
    _summary, out = converted
    found = []
    for name in os.listdir(out):
        if name.startswith("core-"):
            (core,) = load_image(out / name)
            if core["thread_core"]["signals_p"].get("signals"):
                found.append(core["thread_core"])
    assert len(found) == 1
    (sig,) = found[0]["signals_p"]["signals"]
    raw = base64.b64decode(sig["siginfo"])
    assert len(raw) == 128
    assert struct.unpack_from("<iii", raw) == (signal.SIGUSR1, 0, 0)
    assert found[0]["blk_sigset"] == (1 << (signal.SIGUSR1 - 1)) | (1 << (signal.SIGUSR2 - 1))


def test_xsave_components(converted, kernel_core):
    """ymm8's upper half must come from the AVX component at CPUID's offset."""
    _summary, out = converted
    for name in os.listdir(out):
        if not name.startswith("core-"):
            continue
        (core,) = load_image(out / name)
        fp = core["thread_info"]["fpregs"]
        xsave = fp["xsave"]
        if not kernel_core["live"]["avx"]:             # nothing put in ymm8
            assert not any(xsave.get("ymmh_space", []))
            continue
        assert xsave["xstate_bv"] & (1 << 2)          # AVX state in use
        n = fp["xmm_space"][32]                        # low word of xmm8
        assert fp["xmm_space"][33] == 0x11111111
        assert xsave["ymmh_space"][32:36] == [n, 0x33333333, n, 0x44444444]
        assert len(xsave["ymmh_space"]) == 64
        if cpu_has("pku") and cpu_has("ospke"):
            assert len(xsave["pkru"]) == 2


def test_mm_matches_live_process(converted, kernel_core):
    _summary, out = converted
    live = kernel_core["live"]
    (mm,) = load_image(out / ("mm-%d.img" % kernel_core["pid"]))
    auxv = live["auxv"]
    end = next(i for i in range(0, len(auxv), 2) if auxv[i] == 0)
    assert mm["mm_saved_auxv"] == auxv[:end]
    for key, val in live["mm"].items():
        assert mm[key] == val, key

    loads = readelf_loads(kernel_core["core"])
    assert [(v["start"], v["end"] - v["start"]) for v in mm["vmas"]] == \
        [(vaddr, memsz) for vaddr, _filesz, memsz in loads]

    (files_exe,) = [f for f in load_image(out / "files.img")
                    if f["id"] == mm["exe_file_id"]]
    assert files_exe["reg"]["name"] == kernel_core["exe"]
    assert files_exe["reg"]["size"] == os.path.getsize(kernel_core["exe"])

    by_start = {v["start"]: v for v in mm["vmas"]}
    vdso = dict(zip(auxv[0::2], auxv[1::2]))[33]
    assert by_start[vdso]["status"] & (1 << 3)
    stack = [v for v in mm["vmas"] if v["status"] & (1 << 1)]
    assert len(stack) == 1 and stack[0]["start"] <= live["mm"]["mm_start_stack"] < stack[0]["end"]
    exe_vmas = [v for v in mm["vmas"] if v["shmid"] == mm["exe_file_id"]]
    assert exe_vmas[0]["pgoff"] == 0 and exe_vmas[0]["status"] == 1 | (1 << 6)


def test_pagemap_and_pages(converted, kernel_core):
    summary, out = converted
    pid = kernel_core["pid"]
    loads = readelf_loads(kernel_core["core"])
    dumped = [(vaddr, filesz) for vaddr, filesz, _memsz in loads if filesz]
    head, *entries = load_image(out / ("pagemap-%d.img" % pid))
    assert head == {"pages_id": 1}
    assert [(e["vaddr"], pagemap_count(e) * 4096) for e in entries] == dumped
    assert all(e["flags"] == 4 for e in entries)
    total = sum(filesz for _v, filesz in dumped) // 4096
    assert summary["nr_pages"] == total
    assert os.path.getsize(out / "pages-1.img") == total * 4096

    # the heap string is in pages-1.img where the pagemap says its page is
    heap, offset = kernel_core["live"]["heap"], 0
    for e in entries:
        if e["vaddr"] <= heap < e["vaddr"] + pagemap_count(e) * 4096:
            offset += heap - e["vaddr"]
            break
        offset += pagemap_count(e) * 4096
    with open(out / "pages-1.img", "rb") as f:
        f.seek(offset)
        assert f.read(len(HEAP_STRING)) == HEAP_STRING


def test_pagemap_criu42_encoding(kernel_core, converted, tmp_path):
    """nr_pages_field=5: field 2 is 0 and the count sits in field 5."""
    _summary, out2 = converted
    core_to_images(kernel_core["core"], str(tmp_path), exe=kernel_core["exe"],
                   nr_pages_field=5)
    name = "pagemap-%d.img" % kernel_core["pid"]
    old, new = raw_records(out2 / name), raw_records(tmp_path / name)
    assert old[0] == new[0] and len(old) == len(new)
    for rec2, rec5 in zip(old[1:], new[1:]):
        f2, f5 = proto_fields(rec2), proto_fields(rec5)
        assert f5[2] == 0 and f5[5] == f2[2] > 0
        assert f5[1] == f2[1] and f5[4] == f2[4]
    # pycriu decodes it: field 2 is 0 (pycriu 3.17's nr_pages, 4.2's
    # compat_nr_pages), pycriu 4.2 reads the count from field 5
    _head, *entries = load_image(tmp_path / name)
    assert all(pagemap_field2(e) == 0 for e in entries)
    if PAGEMAP_FIELD2 == "compat_nr_pages":
        assert [pagemap_count(e) for e in entries] == [proto_fields(r)[5] for r in new[1:]]


def test_cli_and_stopped_state(kernel_core, tmp_path):
    res = subprocess.run([sys.executable, "-m", "tests.helpers.core2images",
                          kernel_core["core"], str(tmp_path), "--task-state", "3"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert '"arch": "x86_64"' in res.stdout
    (core,) = load_image(tmp_path / ("core-%d.img" % kernel_core["pid"]))
    assert core["tc"]["task_state"] == 3


# ---------------------------------------------------------------------------
# aarch64: a hand-made core exercising the aarch64 table entry
# ---------------------------------------------------------------------------

def note(ntype, desc, name=b"CORE"):
    pad = lambda b: b + b"\0" * (-len(b) % 4)    # noqa: E731
    return struct.pack("<III", len(name) + 1, len(desc), ntype) + pad(name + b"\0") + pad(desc)


def build_core(machine, notes, loads):
    """ELF64 core: one PT_NOTE, then PT_LOADs (vaddr, flags, data, memsz)."""
    phnum = 1 + len(loads)
    offset = 64 + 56 * phnum
    note_data = b"".join(notes)
    phdrs = [struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(note_data), 0, 4)]
    body = note_data
    offset += len(note_data)
    pad = -offset % 4096
    body += b"\0" * pad
    offset += pad
    for vaddr, flags, data, memsz in loads:
        phdrs.append(struct.pack("<IIQQQQQQ", 1, flags, offset, vaddr, 0, len(data), memsz,
                                 4096))
        body += data
        offset += len(data)
    ident = b"\x7fELF\x02\x01\x01" + b"\0" * 9
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 64, 0, 0, 64, 56,
                               phnum, 0, 0, 0)
    return ehdr + b"".join(phdrs) + body


def aarch64_stack(top, argv, envp, auxv):
    """An initial stack page: [argc][argv][0][envp][0][auxv][0 0] ... strings."""
    strings = b"".join(s + b"\0" for s in argv + envp)
    str_base = top - 256
    ptrs, addr = [], str_base
    for s in argv + envp:
        ptrs.append(addr)
        addr += len(s) + 1
    words = [len(argv)] + ptrs[:len(argv)] + [0] + ptrs[len(argv):] + [0] + auxv + [0, 0]
    sp = str_base - 8 * len(words) - 64
    page_start = top - 4096
    page = bytearray(4096)
    page[sp - page_start:sp - page_start + 8 * len(words)] = struct.pack(
        "<%dQ" % len(words), *words)
    page[str_base - page_start:str_base - page_start + len(strings)] = strings
    return bytes(page), sp, ptrs


def test_aarch64_synthetic_core(tmp_path):
    stack_top = 0x7FFFF000
    text = 0x400000
    execfn = stack_top - 256 + len(b"./a\0x\0HOME=/\0") - 1  # inside the strings
    auxv = [6, 4096, 9, text + 0x100, 31, execfn]
    stack, sp, ptrs = aarch64_stack(stack_top, [b"./a", b"x"], [b"HOME=/"], auxv)

    regs = list(range(100, 131)) + [sp, text + 0x104, 0x60000000]
    prstatus = struct.pack("<iiih2xQQiiii64x", 11, 0, 0, 11, 1 << 9, 1 << 1, 77, 1, 77, 1)
    prstatus += struct.pack("<34Qi4x", *regs, 1)
    prpsinfo = struct.pack("<bcbbxxxxQIIiiii16s80s", 0, b"R", 0, 5, 0x400000, 1000, 1000,
                           77, 1, 77, 1, b"a", b"./a x ")
    vregs = list(range(1, 65))
    fpsimd = struct.pack("<64QII8x", *vregs, 0x10, 0x20)
    nt_file = struct.pack("<QQQQQ", 1, 4096, text, text + 0x1000, 0) + b"/bin/a\0"
    notes = [note(1, prstatus), note(3, prpsinfo),
             note(6, struct.pack("<%dQ" % (len(auxv) + 2), *auxv, 0, 0)),
             note(0x46494C45, nt_file), note(2, fpsimd),
             note(0x401, struct.pack("<QQ", 0xABCD, 0), b"LINUX")]
    loads = [(text, 5, b"\x7fELF" + b"\0" * 4092, 0x1000),
             (stack_top - 4096, 6, stack, 0x1000)]
    core = tmp_path / "core"
    core.write_bytes(build_core(183, notes, loads))

    out = tmp_path / "img"
    summary = core_to_images(str(core), str(out))
    assert summary == {"pid": 77, "tids": [77], "arch": "aarch64", "nr_pages": 2,
                       "exe": "/bin/a"}
    (entry,) = load_image(out / "core-77.img")
    assert entry["mtype"] == "AARCH64"
    ti = entry["ti_aarch64"]
    assert ti["gpregs"] == {"regs": regs[:31], "sp": sp, "pc": text + 0x104,
                            "pstate": 0x60000000}
    assert ti["fpsimd"] == {"vregs": vregs, "fpsr": 0x10, "fpcr": 0x20}
    assert ti["tls"] == 0xABCD
    assert entry["tc"]["blk_sigset"] == 2 and entry["tc"]["flags"] == 0x400000
    assert entry["thread_core"]["sched_nice"] == 5
    assert entry["thread_core"]["creds"]["uid"] == 1000
    assert [s for s in entry["thread_core"]["signals_p"]["signals"]]
    (mm,) = load_image(out / "mm-77.img")
    assert mm["mm_saved_auxv"] == auxv
    assert mm["mm_arg_start"] == ptrs[0]
    assert mm["mm_arg_end"] == ptrs[2] == mm["mm_env_start"]
    assert mm["mm_env_end"] == ptrs[2] + len(b"HOME=/\0")
    assert mm["mm_start_stack"] == sp
    assert mm["exe_file_id"] == 1
    assert [v["status"] for v in mm["vmas"]] == [1 | (1 << 6), 1 | (1 << 1) | (1 << 9)]

    # the psargs fallback finds the same argument strings
    with core2images.CoreFile(str(core)) as cf:
        proc = core2images.read_notes(cf, core2images.MACHINES[183])
        assert core2images.find_args_by_psargs(cf, proc) == {
            "mm_arg_start": ptrs[0], "mm_arg_end": ptrs[2],
            "mm_env_start": ptrs[2], "mm_env_end": execfn}


def test_unsupported_machine(tmp_path):
    core = tmp_path / "core"
    core.write_bytes(build_core(43, [note(1, b"\0" * 8)], []))   # EM_SPARCV9
    with pytest.raises(NotImplementedError):
        core_to_images(str(core), str(tmp_path / "img"))


def test_prstatus_sizes_match_kernel():
    """The ctypes layouts must have the kernel's note sizes."""
    c64, c32 = ctypes.c_uint64, ctypes.c_uint32
    assert ctypes.sizeof(core2images.prstatus_type(c64, 27)) == 336     # x86_64
    assert ctypes.sizeof(core2images.prstatus_type(c64, 34)) == 392     # aarch64
    assert ctypes.sizeof(core2images.prstatus_type(c32, 18)) == 148     # arm
    assert ctypes.sizeof(core2images.prstatus_type(c64, 48)) == 504     # ppc64
    assert ctypes.sizeof(core2images.prstatus_type(c64.__ctype_be__, 27,
                                                   ctypes.BigEndianStructure)) == 336  # s390x
    assert ctypes.sizeof(core2images.prstatus_type(c64, 45)) == 480     # mips64, loongarch64
    assert ctypes.sizeof(core2images.prstatus_type(c64, 32)) == 376     # riscv64
    assert ctypes.sizeof(core2images.prpsinfo_type(c64, c32)) == 136
    assert ctypes.sizeof(core2images.prpsinfo_type(c32, ctypes.c_uint16)) == 124
    assert ctypes.sizeof(core2images.Fxsave) == 512
    assert ctypes.sizeof(core2images.UserFpsimdState) == 528
    assert ctypes.sizeof(core2images.UserVfp) == 260
