"""Read and write CRIU images as protobuf messages, for synthetic test images.

Why this exists: edge cases (a pagemap claiming 2^40 pages, a VMA of 2^60
bytes, a pstree naming a missing image) are made from the real fixtures by
decoding an image with pycriu's message classes, changing a field and
encoding it again with the same classes; the messages keep the fields
Debian's pycriu 3.17 does not know (pycriu's dict round trip would drop
them).  Pagemap entries use the package's own class, which knows CRIU 4.2's
64-bit page count (field 5).
"""
import struct

from pycriu.images import images as pimages
from pycriu.images import magic as pmagic

from criu_coredump.pagemap import PagemapEntry

_WRAPPERS = (pmagic.by_name["IMG_COMMON"], pmagic.by_name["IMG_SERVICE"])


def frame(data):
    """(head, [payload...], tail) of an image; tail holds bytes that do not
    form a whole entry.  None for files that are not framed images."""
    if len(data) < 4:
        return None
    m, = struct.unpack_from("<I", data, 0)
    pos = 4
    if m in _WRAPPERS:
        if len(data) < 8:
            return None
        m, = struct.unpack_from("<I", data, 4)
        pos = 8
    if m not in pmagic.by_val:
        return None
    head, entries = data[:pos], []
    while pos + 4 <= len(data):
        size, = struct.unpack_from("<I", data, pos)
        if pos + 4 + size > len(data):
            break
        entries.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    return head, entries, data[pos:]


def unframe(head, entries, tail=b""):
    return head + b"".join(struct.pack("<I", len(e)) + e for e in entries) + tail


def magic_name(head):
    return pmagic.by_val.get(struct.unpack_from("<I", head, len(head) - 4)[0])


def message_class(name, index):
    """The protobuf class of entry `index` of an image of magic `name`."""
    if name == "PAGEMAP":
        return pimages.pb.pagemap_head if index == 0 else PagemapEntry
    h = pimages.handlers.get(name)
    return getattr(h, "payload", None)


def read_messages(path):
    """(head, [message...]) of an image file."""
    with open(path, "rb") as f:
        head, entries, tail = frame(f.read())
    assert not tail, "%s: trailing bytes" % path
    name = magic_name(head)
    return head, [message_class(name, i).FromString(e) for i, e in enumerate(entries)]


def write_messages(path, head, messages):
    with open(path, "wb") as f:
        f.write(unframe(head, [m.SerializeToString() for m in messages]))


def edit_image(path, edit):
    """Decode an image, let edit(messages) change the list in place (or
    return a new one), write it back."""
    head, msgs = read_messages(path)
    out = edit(msgs)
    write_messages(path, head, msgs if out is None else out)
