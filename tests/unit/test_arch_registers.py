"""For every arch: a kernel register vector (elf_gregset_t, as NT_PRSTATUS
holds it) goes into CRIU's thread_info the way CRIU saves it
(tests/helpers/core2images, which shares no layout with the tool), is
written as a core image, loaded by the tool's loader and comes back in our
NT_PRSTATUS pr_reg word for word.  The words the images lose are listed
below, each with its reason, and must come back as the constant the
kernel's core would most often hold.
"""
from types import SimpleNamespace

import pytest

from criu_coredump import arch as arches
from criu_coredump import notes

from ..helpers import core2images
from ..helpers.readers import load_thread

# arch name -> {pr_reg index: (value we write, why the images lose the word)}
LOST = {
    "ppc64": {
        39: (1, "softe: CRIU does not save it; gpr_get() always reports 1"),
        41: (0, "dar: not saved (0 in a core of a task that took no fault)"),
        42: (0, "dsisr: not saved, as dar"),
        43: (0, "result: not saved"),
        44: (0, "padding up to ELF_NGREG"), 45: (0, "padding"), 46: (0, "padding"),
        47: (0, "padding"),
    },
    "mips": {i: (0, "EF_* slots 38-44 past cp0_cause: unused by a 64-bit kernel")
             for i in range(38, 45)},
    "loongarch64": {
        32: (0, "orig_a0: CRIU saves regs[32] and pc only"),
        34: (0, "csr_badv: not saved (0 in a core of a task that took no fault)"),
        **{i: (0, "reserved[10]: zeros in every kernel core") for i in range(35, 45)}},
}

# e_machine the helper's MACHINES table is keyed by, per arch
MACHINE = {a.name: a.machine for a in arches.ARCHES}
MACHINE["ia32"] = core2images.EM_386


def vector(arch):
    """A distinct value in every word, fitting the word and the image field
    (s390's access registers are 32-bit halves of their words)."""
    bits = 8 * arch.word_bytes
    out = []
    for i in range(len(arch.gregs)):
        v = (0x1122334455667788 * (i + 3) + i) & ((1 << bits) - 1)
        out.append(v or 1)
    if arch.name == "ia32":
        # segment registers are 16 bits in CRIU's user_regs_entry
        for i in (7, 8, 9, 10, 13, 16):
            out[i] &= 0xFFFF
    return out


@pytest.mark.parametrize("name", [a.name for a in arches.ARCHES])
def test_registers_round_trip_word_for_word(name, tmp_path):
    arch = arches.by_name(name)
    spec = core2images.MACHINES[MACHINE[name]]
    regs = vector(arch)
    # x86's thread_info requires its FXSAVE area (zeros here)
    fx = {"x86_64": core2images.NT_FPREGSET, "ia32": core2images.NT_PRXFPREG}
    thread = SimpleNamespace(regs=regs, tid=1000,
                             notes={fx[name]: bytes(512)} if name in fx else {})
    proc = SimpleNamespace(page_size=4096, auxv=[], extra={}, threads=[thread],
                           auxv_get=lambda k, d=None: d)
    entry = {"mtype": spec.mtype, spec.ti_field: spec.thread_info(thread, proc)}
    core2images.write_core(str(tmp_path), 1000, spec, entry)

    _, th = load_thread(str(tmp_path), 1000)
    assert th.arch == name
    raw = notes.prstatus(arch, SimpleNamespace(ppid=0, pgid=0, sid=0, threads=[th]),
                         th, 0, False)
    st = notes.prstatus_type(arch).from_buffer_copy(raw)
    got = list(st.pr_reg)

    want = list(regs)
    for i, (value, _why) in LOST.get(name, {}).items():
        want[i] = value
    assert got == want, [(arch.gregs[i], hex(a), hex(b))
                         for i, (a, b) in enumerate(zip(got, want)) if a != b]
    # the lost words are really lost (the vector had other values there)
    for i in LOST.get(name, {}):
        assert regs[i] != want[i], arch.gregs[i]


def test_every_arch_has_a_helper_machine():
    assert set(MACHINE) == {a.name for a in arches.ARCHES}
    assert all(m in core2images.MACHINES for m in MACHINE.values())
