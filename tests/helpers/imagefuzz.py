"""Values and field access for mutating CRIU images in the fuzz test.

Why this exists: checkpoints come from machines we do not trust, so every
image the tool reads may be damaged or hostile.  The fuzz test
(tests/test_fuzz_images.py) takes the real fixtures' images, mutates them
(bit flips, truncation, entry duplication/removal/swap, absurd values in
protobuf fields, hostile paths); this module finds the fields of a decoded
entry and sets them to values that break assumptions.

Mutations work on images split into their frames (imgedit.py), so that
entry-level changes keep the framing valid and reach the decoders.
"""
import re

# Values that break assumptions: zero, one, sign and width edges, huge
# page counts (2^40 pages) and sizes (2^60 bytes), unaligned addresses.
INTERESTING = (0, 1, 2, 0xFFF, 0x1000, 0x1001, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 1 << 32, 1 << 40, (1 << 47) - 0x1000, 1 << 52,
               1 << 56, 1 << 60, (1 << 63) - 1, 1 << 63, (1 << 64) - 0x1000,
               (1 << 64) - 1, -1, -(1 << 31), -(1 << 63))

_RANGES = {"int32": (-(1 << 31), 1 << 31), "sint32": (-(1 << 31), 1 << 31),
           "sfixed32": (-(1 << 31), 1 << 31), "uint32": (0, 1 << 32),
           "fixed32": (0, 1 << 32), "int64": (-(1 << 63), 1 << 63),
           "sint64": (-(1 << 63), 1 << 63), "sfixed64": (-(1 << 63), 1 << 63),
           "uint64": (0, 1 << 64), "fixed64": (0, 1 << 64)}


def slots(msg, want):
    """Every (message, field, index) holding a scalar of kind `want`
    ("int" or "str"), nested messages included."""
    out = []
    for fd, value in msg.ListFields():
        repeated = fd.label == fd.LABEL_REPEATED
        if fd.type == fd.TYPE_MESSAGE:
            for sub in (value if repeated else [value]):
                out += slots(sub, want)
            continue
        kind = ("int" if fd.type not in (fd.TYPE_STRING, fd.TYPE_BYTES,
                                         fd.TYPE_DOUBLE, fd.TYPE_FLOAT,
                                         fd.TYPE_BOOL, fd.TYPE_ENUM)
                else "str" if fd.type == fd.TYPE_STRING else None)
        if kind != want:
            continue
        if repeated:
            out += [(msg, fd, i) for i in range(len(value))]
        else:
            out.append((msg, fd, None))
    return out


def set_slot(slot, value):
    msg, fd, index = slot
    if isinstance(value, int):
        type_name = {v: k for k, v in vars(type(fd)).items()
                     if k.startswith("TYPE_")}[fd.type][5:].lower()
        lo, hi = _RANGES.get(type_name, (0, 1 << 32))
        value = lo + (value - lo) % (hi - lo)
    if index is None:
        setattr(msg, fd.name, value)
    else:
        getattr(msg, fd.name)[index] = value


CORE_NAME = re.compile(r"core\.(\d+)$")
