"""Each arch's decode(): general registers planted in CRIU's thread_info
(every field of its user_*_regs_entry a distinct value) come out in
NT_PRSTATUS's pr_reg (notes.prstatus) in the order CRIU's message lists
them, which is the kernel's user_regs_struct order, with nothing made up
but the words the kernel itself composes."""
import ctypes
import itertools

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from pycriu.images import pb

from criu_coredump import arch as arches
from criu_coredump import images, notes
from criu_coredump.model import Process, Thread

# pr_reg words the kernel composes from two image fields, by name, and why
COMPOSED = {
    "s390": {"acr%d_%d" % (i, i + 1) for i in range(0, 16, 2)},  # two 32-bit access registers a word
    "ppc64": {"softe"},           # the kernel's soft-enabled flag, set, not saved
}
# pr_reg words CRIU's images do not hold (left zero), and padding
ZERO = {
    "ppc64": {"dar", "dsisr", "result", "pad44", "pad45", "pad46", "pad47"},
    "mips": {"unused%d" % i for i in range(38, 45)},
    # CRIU saves regs[32] and pc only
    "loongarch64": {"orig_a0", "csr_badv"} | {"reserved%d" % i for i in range(10)},
}
# archs whose pr_reg order is not the order of CRIU's message fields
REORDERED = {"ia32"}   # i386's user_regs_struct: bx, cx, dx, si, di, bp, ax, ...

_32 = (F.TYPE_UINT32, F.TYPE_INT32, F.TYPE_FIXED32, F.TYPE_SFIXED32, F.TYPE_SINT32)


def plant(msg, counter):
    """Every scalar field a distinct value (repeated ones: 40 of them)."""
    for f in msg.DESCRIPTOR.fields:
        if f.type in (F.TYPE_MESSAGE, F.TYPE_STRING, F.TYPE_BYTES, F.TYPE_BOOL, F.TYPE_ENUM):
            continue
        n = next(counter)
        v = (0x10000 + n) if f.type in _32 else ((0x1000 + n) << 20 | n)
        if f.label == F.LABEL_REPEATED:
            getattr(msg, f.name).extend(v + i for i in range(40))
        else:
            setattr(msg, f.name, v)


def pr_reg(a):
    core = pb.core_entry()
    ti = (getattr(core, a.ti_field) if a.ti_field in core.DESCRIPTOR.fields_by_name
          else getattr(a.ti_class(), a.ti_field))
    plant(ti.gpregs, itertools.count(1))
    if "mode" in ti.gpregs.DESCRIPTOR.fields_by_name:   # x86: native or compat
        ti.gpregs.mode = 2 if a.name == "ia32" else 1
    regs = a.decode(ti, lambda cls, msg: images.parse(
        "core-5.img", cls, msg.SerializePartialToString()))
    th = Thread(tid=5, arch=a.name, regs=regs)
    proc = Process(pid=5, ppid=1, pgid=5, sid=5, arch=a.name, comm="t",
                   task_state=1, exit_code=0, flags=0)
    proc.threads.append(th)
    st = notes.prstatus_type(a).from_buffer_copy(notes.prstatus(a, proc, th, 0, False))
    assert st.pr_pid == 5
    mask = (1 << (8 * ctypes.sizeof(a.long_t))) - 1
    planted = []
    for f in ti.gpregs.DESCRIPTOR.fields:
        v = getattr(ti.gpregs, f.name)
        if f.type == F.TYPE_ENUM:
            continue
        planted += [x & mask for x in v] if f.label == F.LABEL_REPEATED else [v & mask]
    return list(st.pr_reg), planted


@pytest.mark.parametrize("a", arches.ARCHES, ids=lambda a: a.name)
def test_general_registers_reach_pr_reg(a):
    words, planted = pr_reg(a)
    assert len(words) == len(a.gregs)
    made_up = [a.gregs[i] for i, w in enumerate(words) if w and w not in planted]
    assert set(made_up) == COMPOSED.get(a.name, set())
    found = [w for w in words if w in planted]
    assert len(found) == len(set(found)), "a register copied twice"
    assert {a.gregs[i] for i, w in enumerate(words) if w == 0} == ZERO.get(a.name, set())
    if a.name not in REORDERED:
        assert found == [p for p in planted if p in found]


def test_every_arch_is_registered_once_by_name_and_machine():
    names = [a.name for a in arches.ARCHES]
    assert len(names) == len(set(names))
    for a in arches.ARCHES:
        assert arches.by_name(a.name) is a
        assert a in arches.by_mtype(a.mtype)
    assert arches.by_name("vax") is None
