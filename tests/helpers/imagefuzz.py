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


# -- structure-aware mutations --------------------------------------------------
#
# The byte-level mutations of the fuzz test mostly make images that do not
# decode.  These keep every image valid protobuf and break what it means:
# lists out of order, ranges that overlap or leave the address space, ids
# that name nothing or the wrong thing, trees with cycles, impossible pids.
# Each takes the decoded messages of one image (a list, changed in place),
# `draw` (hypothesis) and `ctx` (what the other images of the checkpoint
# hold: pids, file ids, shmem ids), and returns a short name of what it did,
# or None when it does not apply to this image.

from hypothesis import strategies as st  # noqa: E402

PAGE = 4096
PIDS = (0, 1, 2, (1 << 22), (1 << 22) + 1, (1 << 31) - 1, 1 << 31,
        (1 << 32) - 1, 99999)
STATUS_BITS = (1 << 0, 1 << 1, 1 << 3, 1 << 5, 1 << 6, 1 << 7, 1 << 8,
               1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14)
PE_FLAGS = (0, 1, 2, 4, 5, 6, 7)


def _pick(draw, seq):
    return seq[draw(st.integers(0, len(seq) - 1))]


def _pstree(msgs, draw, ctx):
    e = _pick(draw, msgs)
    others = [m for m in msgs if m is not e]
    kind = draw(st.sampled_from(
        ["ppid-self", "ppid-cycle", "ppid-dangling", "pid-impossible",
         "pid-dangling", "tid-of-another", "tid-dangling", "tid-dup",
         "reorder", "pgid-sid"]))
    if kind == "ppid-self":
        e.ppid = e.pid
    elif kind == "ppid-cycle":
        if not others:
            e.ppid = e.pid
        else:
            o = _pick(draw, others)
            e.ppid, o.ppid = o.pid, e.pid
    elif kind == "ppid-dangling":
        e.ppid = draw(st.sampled_from(PIDS))
    elif kind in ("pid-impossible", "pid-dangling"):
        new = draw(st.sampled_from(PIDS)) if kind == "pid-impossible" else 4242
        threads = list(e.threads)
        del e.threads[:]
        e.threads.extend(new if t == e.pid else t for t in threads)
        e.pid = new
    elif kind == "tid-of-another":
        if not others:
            return None
        e.threads.append(_pick(draw, others).pid)
    elif kind == "tid-dangling":
        e.threads.append(draw(st.sampled_from(PIDS)))
    elif kind == "tid-dup":
        e.threads.append(e.pid)
    elif kind == "reorder":
        if len(msgs) < 2:
            return None
        msgs.reverse()
    else:
        e.pgid = draw(st.sampled_from(PIDS))
        e.sid = draw(st.sampled_from(PIDS))
    return "pstree:" + kind


def _mm(msgs, draw, ctx):
    mm = msgs[0]
    vmas = mm.vmas
    if not vmas:
        return None
    i = draw(st.integers(0, len(vmas) - 1))
    v = vmas[i]
    kind = draw(st.sampled_from(
        ["swap", "overlap", "dup", "split", "beyond", "shmid-dangling",
         "shmid-other", "status", "pgoff", "exe-dangling", "args",
         "auxv", "shrink", "grow"]))
    if kind == "swap":
        j = draw(st.integers(0, len(vmas) - 1))
        a, b = vmas[i].SerializeToString(), vmas[j].SerializeToString()
        vmas[i].ParseFromString(b)
        vmas[j].ParseFromString(a)
    elif kind == "overlap":
        if i + 1 >= len(vmas):
            return None
        v.end = vmas[i + 1].start + PAGE * draw(st.integers(1, 3))
    elif kind == "dup":
        vmas.add().CopyFrom(v)
    elif kind == "split":
        if v.end - v.start < 2 * PAGE:
            return None
        mid = v.start + PAGE * draw(st.integers(1, (v.end - v.start) // PAGE - 1))
        w = vmas.add()
        w.CopyFrom(v)
        w.start = mid
        w.pgoff = v.pgoff + (mid - v.start)
        v.end = mid
    elif kind == "beyond":
        size = v.end - v.start
        v.start = draw(st.sampled_from([(1 << 47) - PAGE, 1 << 47, 1 << 56,
                                        (1 << 64) - PAGE * 2]))
        v.end = min(v.start + size, (1 << 64) - PAGE)
    elif kind == "shmid-dangling":
        v.shmid = draw(st.sampled_from([0, 77777, (1 << 63)]))
    elif kind == "shmid-other":
        ids = sorted(ctx.get("file_ids", ())) + sorted(ctx.get("shmids", ()))
        if not ids:
            return None
        v.shmid = _pick(draw, ids)
    elif kind == "status":
        v.status ^= draw(st.sampled_from(STATUS_BITS))
        if draw(st.booleans()):
            v.flags ^= draw(st.sampled_from([1, 2, 0x20, 0x40000]))
    elif kind == "pgoff":
        v.pgoff = draw(st.sampled_from([PAGE, 1 << 30, 1 << 40, (1 << 62)]))
    elif kind == "exe-dangling":
        mm.exe_file_id = draw(st.sampled_from([0, 77777] + sorted(ctx.get("file_ids", ()))))
    elif kind == "args":
        mm.mm_arg_start = draw(st.sampled_from([0, v.start, v.end - 8, 1 << 63]))
        mm.mm_arg_end = mm.mm_arg_start + draw(st.sampled_from([0, 8, 100, 1 << 40]))
    elif kind == "auxv":
        n = len(mm.mm_saved_auxv)
        del mm.mm_saved_auxv[draw(st.integers(0, n)):]
        if draw(st.booleans()):
            mm.mm_saved_auxv.extend([draw(st.sampled_from(INTERESTING)) & ((1 << 64) - 1)
                                     for _ in range(draw(st.integers(1, 5)))])
    elif kind == "shrink":
        if v.end - v.start < 2 * PAGE:
            return None
        v.end -= PAGE
    else:
        v.end += PAGE * draw(st.sampled_from([1, 16, 1 << 20]))
    return "mm:" + kind


def _pagemap(msgs, draw, ctx):
    head, entries = msgs[0], msgs[1:]
    kind = draw(st.sampled_from(
        ["swap", "overlap", "dup", "split", "count", "outside", "flags",
         "pages-id", "drop", "empty"]))
    if kind == "pages-id":
        head.pages_id = draw(st.sampled_from([0, 1, 2, 3, 4, 999]))
        return "pagemap:" + kind
    if kind == "empty":
        del msgs[1:]
        return "pagemap:" + kind
    if not entries:
        return None
    i = draw(st.integers(0, len(entries) - 1))
    e = entries[i]
    n = e.nr_pages or e.compat_nr_pages
    if kind == "swap":
        if len(entries) < 2:
            return None
        j = draw(st.integers(0, len(entries) - 1))
        msgs[1 + i], msgs[1 + j] = msgs[1 + j], msgs[1 + i]
    elif kind == "overlap":
        if i == 0:
            return None
        e.vaddr = entries[i - 1].vaddr + PAGE * draw(st.integers(0, 2))
    elif kind == "dup":
        msgs.insert(1 + i, type(e).FromString(e.SerializeToString()))
    elif kind == "split":
        if n < 2:
            return None
        k = draw(st.integers(1, n - 1))
        f = type(e).FromString(e.SerializeToString())
        e.nr_pages, e.compat_nr_pages = k, 0
        f.vaddr, f.nr_pages, f.compat_nr_pages = e.vaddr + k * PAGE, n - k, 0
        msgs.insert(2 + i, f)  # the same meaning: the core must not change
    elif kind == "count":
        e.nr_pages = draw(st.sampled_from([n + 1, n + 16, 1 << 20, 1 << 32, 1 << 40]))
        e.compat_nr_pages = 0
    elif kind == "outside":
        e.vaddr = draw(st.sampled_from([0, PAGE, 1 << 46, (1 << 47) - PAGE, 1 << 56]))
    elif kind == "flags":
        e.flags = draw(st.sampled_from(PE_FLAGS))
    else:
        del msgs[1 + i]
    return "pagemap:" + kind


def _files(msgs, draw, ctx):
    if not msgs:
        return None
    e = _pick(draw, msgs)
    kind = draw(st.sampled_from(
        ["id-dup", "id-swap", "drop", "memfd-inode", "size", "name-other",
         "mode", "type"]))
    if kind == "id-dup":
        o = _pick(draw, msgs)
        e.id = o.id
        for sub in ("reg", "memfd"):
            if e.HasField(sub):
                getattr(e, sub).id = o.id
    elif kind == "id-swap":
        o = _pick(draw, msgs)
        e.id, o.id = o.id, e.id
        for m in (e, o):
            for sub in ("reg", "memfd"):
                if m.HasField(sub):
                    getattr(m, sub).id = m.id
    elif kind == "drop":
        msgs.remove(e)
    elif kind == "memfd-inode":
        if not e.HasField("memfd"):
            return None
        e.memfd.inode_id = draw(st.sampled_from([0, 1, 2, 3, 77777]))
    elif kind == "size":
        if not e.HasField("reg"):
            return None
        e.reg.size = draw(st.sampled_from([0, 1, PAGE, 1 << 40, (1 << 64) - 1]))
    elif kind == "name-other":
        regs = [m for m in msgs if m.HasField("reg")]
        if not e.HasField("reg") or not regs:
            return None
        e.reg.name = _pick(draw, regs).reg.name
    elif kind == "mode":
        if not e.HasField("reg"):
            return None
        e.reg.mode = draw(st.sampled_from([0, 0o755, 0o10644, 0o20644, 0o60644]))
    else:
        e.type = draw(st.integers(1, 20))
    return "files:" + kind


def _memfd(msgs, draw, ctx):
    if not msgs:
        return None
    e = _pick(draw, msgs)
    kind = draw(st.sampled_from(["shmid", "inode", "size", "drop", "name"]))
    if kind == "shmid":
        e.shmid = draw(st.sampled_from([0, 77777] + sorted(ctx.get("shmids", ()))))
    elif kind == "inode":
        e.inode_id = _pick(draw, msgs).inode_id
    elif kind == "size":
        e.size = draw(st.sampled_from([0, 1, PAGE * 1000, 1 << 40, (1 << 64) - 1]))
    elif kind == "drop":
        msgs.remove(e)
    else:
        e.name = draw(st.sampled_from(["", "a\0b", "x\n", "/dev/zero", "SYSV00000000"]))
    return "memfd:" + kind


def _core(msgs, draw, ctx):
    c = msgs[0]
    kind = draw(st.sampled_from(["state", "no-regs", "no-tc", "comm",
                                 "siginfo", "creds", "mtype"]))
    if kind == "state":
        if not c.HasField("tc"):
            return None
        c.tc.task_state = draw(st.integers(0, 7))
    elif kind == "no-regs":
        c.ClearField("thread_info")
    elif kind == "no-tc":
        c.ClearField("tc")
    elif kind == "comm":
        name = draw(st.sampled_from(["", "a\0b", "\n\x1b[31m", "x" * 100]))
        if c.HasField("tc"):
            c.tc.comm = name
        if c.HasField("thread_core"):
            c.thread_core.comm = name
    elif kind == "siginfo":
        if not c.HasField("thread_core"):
            return None
        sig = c.thread_core.signals_p.signals.add()
        sig.siginfo = draw(st.sampled_from([b"", b"\xff" * 4, b"\x00" * 200,
                                            (65).to_bytes(4, "little")]))
    elif kind == "creds":
        if not c.HasField("thread_core"):
            return None
        c.thread_core.creds.uid = draw(st.sampled_from([0, 1 << 31, (1 << 32) - 1]))
    else:
        c.mtype = draw(st.integers(0, 7))
    return "core:" + kind


SEMANTIC = {"PSTREE": _pstree, "MM": _mm, "PAGEMAP": _pagemap,
            "FILES": _files, "MEMFD_INODE": _memfd, "CORE": _core}


def semantic_mutation(magic, msgs, draw, ctx):
    """Apply one structure-aware mutation to the decoded messages of an image
    of kind `magic`; returns its name, or None when none applies."""
    fn = SEMANTIC.get(magic)
    if fn is None or not msgs:
        return None
    return fn(msgs, draw, ctx)
