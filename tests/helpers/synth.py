"""Synthetic CRIU image directories, written with pycriu's encoder.

Tests and the benchmark need checkpoints no real process gives cheaply: 70,000
mappings, gigabytes of pages, a million pagemap entries, pre-dump chains,
lazy pages.  Every image here is a real CRIU image: the messages are pycriu's
own protobuf classes (`pycriu.images.dump` for whole images), the pages image
is raw pages.  Pagemaps come in both encodings CRIU has written:

* "3.x": the page count in field 2 (`nr_pages` for pycriu 3.17 and 4.1,
  `compat_nr_pages` for pycriu 4.2, which also makes it required);
* "4.2": field 2 left 0 and the count in the uint64 field 5 that CRIU 4.2
  added (pycriu before 4.2 does not know it, so its varint bytes are
  appended to each entry pycriu serialized, as CRIU's own encoder places
  them).

Page contents default to a pattern that names its own address
(`page_pattern`), so a reader of the core can check any page.

    ck = Checkpoint(path)
    p = ck.process(1000)
    p.vma(0x10000000, 0x10004000)                      # anonymous private rw
    p.pages(0x10000000, b"hello".ljust(4096, b"\\0"))   # one present page
    ck.write()
"""
import io
import os
import struct

from pycriu import images as pimages
from pycriu.images import pb

PAGE = 4096

# pagemap_entry's field 2 (the 32-bit page count) by the installed pycriu's
# name for it: `nr_pages` up to pycriu 4.1, `compat_nr_pages` from 4.2 on
# (where `nr_pages` is the uint64 field 5)
PAGEMAP_FIELD2 = ("compat_nr_pages"
                  if "compat_nr_pages" in pb.pagemap_entry.DESCRIPTOR.fields_by_name
                  else "nr_pages")


def pagemap_field2(entry):
    """Field 2 of a pagemap entry decoded by pycriu (a dict), any pycriu."""
    return entry.get(PAGEMAP_FIELD2, 0)


def pagemap_count(entry):
    """The page count of a pagemap entry decoded by pycriu (a dict), in
    either encoding, with any pycriu that knows the encoding."""
    if PAGEMAP_FIELD2 == "compat_nr_pages":
        return entry.get("nr_pages") or entry.get("compat_nr_pages", 0)
    return entry.get("nr_pages", 0)

PE_PARENT, PE_LAZY, PE_PRESENT = 1, 2, 4

PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x1, 0x2, 0x20
MAP_HUGETLB = 0x40000
MADV_DONTDUMP = 16

# CRIU's values (criu/include/image.h, images/*.proto), stated here rather
# than taken from the package under test: the images must not inherit its
# mistakes
VMA_AREA_REGULAR = 1 << 0
VMA_FILE_PRIVATE = 1 << 6
VMA_FILE_SHARED = 1 << 7
VMA_ANON_SHARED = 1 << 8
VMA_ANON_PRIVATE = 1 << 9

RW = PROT_READ | PROT_WRITE
RX = PROT_READ | PROT_EXEC
RWX = RW | PROT_EXEC

# What a mapping kind means in the images: (flags, status) as CRIU sets them.
KINDS = {
    "anon": (MAP_PRIVATE | MAP_ANONYMOUS, VMA_AREA_REGULAR | VMA_ANON_PRIVATE),
    "anon_shared": (MAP_SHARED | MAP_ANONYMOUS, VMA_AREA_REGULAR | VMA_ANON_SHARED),
    "file": (MAP_PRIVATE, VMA_AREA_REGULAR | VMA_FILE_PRIVATE),
    "file_shared": (MAP_SHARED, VMA_AREA_REGULAR | VMA_FILE_SHARED),
}


def page_pattern(vaddr, nr_pages):
    """Contents of nr_pages pages from vaddr: each page starts with
    b"PAGE@<16 hex digits of its address>\\n" and is then filled with one byte
    derived from the address, so any page in a core can be checked."""
    out = bytearray()
    for i in range(nr_pages):
        a = vaddr + i * PAGE
        head = b"PAGE@%016x\n" % a
        out += head + bytes([(a >> 12) & 0xFF or 1]) * (PAGE - len(head))
    return bytes(out)


def pattern_chunks(vaddr, nr_pages, chunk_pages=256):
    """page_pattern() in chunks of at most chunk_pages pages (bounded memory
    for gigabytes of pages)."""
    done = 0
    while done < nr_pages:
        n = min(chunk_pages, nr_pages - done)
        yield page_pattern(vaddr + done * PAGE, n)
        done += n


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pagemap_entry_bytes(vaddr, nr_pages, flags, fmt, in_parent=False):
    """One serialized pagemap entry in CRIU 3.x or 4.2 encoding."""
    e = pb.pagemap_entry()
    e.vaddr = vaddr
    setattr(e, PAGEMAP_FIELD2, nr_pages if fmt == "3.x" else 0)
    if in_parent:
        e.in_parent = True
    if flags is not None:
        e.flags = flags
    raw = e.SerializeToString()
    if fmt == "4.2":
        raw += varint((5 << 3) | 0) + varint(nr_pages)  # field 5, varint
    return raw


def write_image(path, magic, entries):
    with open(path, "wb") as f:
        pimages.dump({"magic": magic, "entries": entries}, f)


def x86_thread_info(ip=0x401000, sp=0x7ffc0000f000, **gpregs):
    """thread_info for an x86_64 task: general registers (all required ones,
    zeros unless given), FXSAVE state and an XSAVE header with AVX state."""
    regs = {n: 0 for n in ("r15", "r14", "r13", "r12", "bp", "bx", "r11",
                           "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
                           "orig_ax", "ip", "cs", "flags", "sp", "ss",
                           "fs_base", "gs_base", "ds", "es", "fs", "gs")}
    regs.update(ip=ip, sp=sp, cs=0x33, ss=0x2b, flags=0x246,
                orig_ax=0xffffffffffffffff)
    regs.update(gpregs)
    regs["mode"] = "NATIVE"
    return {
        "clear_tid_addr": 0,
        "gpregs": regs,
        "fpregs": {"cwd": 0x37f, "swd": 0, "twd": 0, "fop": 0, "rip": 0,
                   "rdp": 0, "mxcsr": 0x1f80, "mxcsr_mask": 0x2ffff,
                   "st_space": [0] * 32, "xmm_space": [0] * 64,
                   "xsave": {"xstate_bv": 0x7, "ymmh_space": [0] * 64}},
    }


class Process:
    """One process of a synthetic checkpoint; add mappings then pages, in
    ascending address order (the order CRIU writes them)."""

    def __init__(self, ck, pid, ppid=0, comm="synth", tids=None, state=1,
                 pages_id=None):
        self.ck = ck
        self.pid = pid
        self.ppid = ppid
        self.comm = comm
        self.tids = tids or [pid]
        self.state = state
        self.pages_id = pages_id
        self.vmas = []
        self.entries = []    # (vaddr, nr_pages, flags, data or None, in_parent)
        self.regs = {}
        # tid -> (general registers, blk_sigset) of a thread unlike the others
        self.thread_state = {}
        self.arg = None      # (start, end) of the command line in memory
        self.sort = True     # False: entries written in the order given
        self.auxv = [6, PAGE, 0, 0]  # AT_PAGESZ, AT_NULL

    def vma(self, start, end, prot=RW, kind="anon", shmid=0, pgoff=0,
            madv=0, flags=0, status=0):
        f, st = KINDS[kind]
        self.vmas.append({"start": start, "end": end, "pgoff": pgoff,
                          "shmid": shmid, "prot": prot, "flags": f | flags,
                          "status": st | status, "fd": -1,
                          "madv": madv})
        return self

    def pages(self, vaddr, data=None, nr_pages=None, flags=PE_PRESENT):
        """Present pages at vaddr: `data` (bytes, whole pages), or nr_pages
        of page_pattern() written in chunks."""
        if data is not None:
            assert len(data) % PAGE == 0, "whole pages only"
            nr_pages = len(data) // PAGE
        self.entries.append((vaddr, nr_pages, flags, data, False))
        return self

    def lazy(self, vaddr, nr_pages):
        """Pages left for lazy restore (criu dump --lazy-pages): not in the
        pages image."""
        self.entries.append((vaddr, nr_pages, PE_LAZY, None, False))
        return self

    def in_parent(self, vaddr, nr_pages, old_style=False):
        """Pages unchanged since the parent checkpoint (PE_PARENT flag, or
        the CRIU 1.x-2.x `in_parent` field without flags)."""
        if old_style:
            self.entries.append((vaddr, nr_pages, None, None, True))
        else:
            self.entries.append((vaddr, nr_pages, PE_PARENT, None, False))
        return self

    def cmdline(self, start, end):
        self.arg = (start, end)
        return self

    def thread(self, tid, blk_sigset=0, **gpregs):
        """Give thread `tid` its own general registers (over the process's
        `regs`) and blocked signals."""
        self.thread_state[tid] = (gpregs, blk_sigset)
        return self

    # -- writing -----------------------------------------------------------

    def _core(self, tid):
        gpregs, blk_sigset = self.thread_state.get(tid, ({}, 0))
        ti = x86_thread_info(**dict(self.regs, **gpregs))
        core = {"mtype": "X86_64", "thread_info": ti,
                "thread_core": {"futex_rla": 0, "futex_rla_len": 24,
                                "sched_nice": 0, "sched_policy": 0,
                                "blk_sigset": blk_sigset, "comm": self.comm,
                                "creds": {"uid": 0, "gid": 0, "euid": 0,
                                          "egid": 0, "suid": 0, "sgid": 0,
                                          "fsuid": 0, "fsgid": 0,
                                          "secbits": 0}}}
        if tid == self.pid:
            core["tc"] = {"task_state": self.state, "exit_code": 0,
                          "personality": 0, "flags": 0x400000,
                          "blk_sigset": 0, "comm": self.comm}
        return core

    def write(self, d):
        thread_core = None  # the same bytes for every thread but the main one
        for tid in self.tids:
            path = os.path.join(d, "core-%d.img" % tid)
            if tid != self.pid and len(self.tids) > 100 \
                    and tid not in self.thread_state:
                if thread_core is None:
                    write_image(path, "CORE", [self._core(tid)])
                    with open(path, "rb") as f:
                        thread_core = f.read()
                else:
                    with open(path, "wb") as f:
                        f.write(thread_core)
                continue
            write_image(path, "CORE", [self._core(tid)])
        if self.state == 2:  # zombie: core image only
            return
        arg = self.arg or (0, 0)
        mm = {"mm_start_code": 0, "mm_end_code": 0, "mm_start_data": 0,
              "mm_end_data": 0, "mm_start_stack": 0, "mm_start_brk": 0,
              "mm_brk": 0, "mm_arg_start": arg[0], "mm_arg_end": arg[1],
              "mm_env_start": arg[1], "mm_env_end": arg[1], "exe_file_id": 0,
              "mm_saved_auxv": list(self.auxv), "vmas": self.vmas}
        write_image(os.path.join(d, "mm-%d.img" % self.pid), "MM", [mm])
        write_pagemap(d, "pagemap-%d.img" % self.pid, self.pages_id,
                      self.entries, self.ck.fmt, sort=self.sort)


def write_pagemap(d, name, pages_id, entries, fmt, sort=True):
    """pagemap-*.img (pycriu's header, then the entries, sorted unless told
    otherwise) and the pages image with the data of PE_PRESENT entries, in
    pagemap order."""
    if sort:
        entries = sorted(entries, key=lambda e: e[0])
    buf = io.BytesIO()
    pimages.dump({"magic": "PAGEMAP", "entries": [{"pages_id": pages_id}]}, buf)
    with open(os.path.join(d, name), "wb") as pm, \
            open(os.path.join(d, "pages-%d.img" % pages_id), "wb") as pages:
        pm.write(buf.getvalue())
        for (vaddr, n, flags, data, old) in entries:
            raw = pagemap_entry_bytes(vaddr, n, flags, fmt, in_parent=old)
            pm.write(struct.pack("<I", len(raw)) + raw)
            if flags is not None and flags & PE_PRESENT:
                if data is not None:
                    pages.write(data)
                else:
                    for chunk in pattern_chunks(vaddr, n):
                        pages.write(chunk)


class Checkpoint:
    """An image directory: inventory, pstree, files and each process's core,
    mm, pagemap and pages images.  `parent` (another Checkpoint, written
    first) is linked as `parent`, relatively, as CRIU links the directory
    given with --prev-images-dir."""

    def __init__(self, path, fmt="4.2", parent=None):
        assert fmt in ("3.x", "4.2")
        self.dir = str(path)
        self.fmt = fmt
        self.parent = parent
        self.procs = []
        self.files = []        # file_entry dicts
        self.shmem = {}        # shmid -> [(vaddr offset, data)]
        self._next_pages_id = 1

    def many_threads(self, pid, count, **kw):
        """A process of `count` threads (tids pid, pid + 1, ...) with a
        small address space: a stack page for each thread, one heap page."""
        p = self.process(pid, tids=list(range(pid, pid + count)), **kw)
        p.vma(0x10000000, 0x10001000).pages(0x10000000, nr_pages=1)
        p.vma(0x7ff000000000, 0x7ff000000000 + count * PAGE)
        return p

    def varied_threads(self, pid, count, **kw):
        """A process of `count` threads that all differ: each its own stack
        pointer, bx and blocked signals; one in three caught in a futex
        wait CRIU rewound onto its `syscall` (ax = orig_ax), one in three
        after a nanosleep whose -ERESTART_RESTARTBLOCK compel turned into
        -EINTR, the others running.  Their code page holds the `syscall`
        instructions, so the core must show each as the kernel would."""
        p = self.process(pid, tids=list(range(pid, pid + count)), **kw)
        code = bytearray(PAGE)
        code[0x100:0x102] = code[0x200:0x202] = b"\x0f\x05"
        p.vma(0x400000, 0x401000, prot=RX).pages(0x400000, bytes(code))
        stack = 0x7ff000000000
        p.vma(stack, stack + count * PAGE)
        for i, tid in enumerate(p.tids):
            regs = dict(sp=stack + i * PAGE + 0x800, bx=i,
                        blk_sigset=(i * 2654435761) & 0xFFFFFFFF)
            if i % 3 == 0:    # futex(addr, FUTEX_WAIT, 0, NULL): -ERESTARTSYS
                regs.update(ip=0x400100, orig_ax=202, ax=202, di=stack + i,
                            si=0, r10=0)
            elif i % 3 == 1:  # nanosleep: -EINTR for -ERESTART_RESTARTBLOCK
                regs.update(ip=0x400202, orig_ax=35, ax=-4 & (2**64 - 1))
            else:
                regs.update(ip=0x400300 + i % 64, ax=i)
            p.thread(tid, **regs)
        return p

    def process(self, pid, **kw):
        kw.setdefault("pages_id", self._next_pages_id)
        self._next_pages_id = max(self._next_pages_id, kw["pages_id"]) + 1
        p = Process(self, pid, **kw)
        self.procs.append(p)
        return p

    def reg_file(self, fid, name, size=None, mode=0o100644):
        reg = {"id": fid, "flags": 0, "pos": 0, "name": name, "mode": mode,
               "fown": {"uid": 0, "euid": 0, "signum": 0, "pid_type": 0,
                        "pid": 0}}
        if size is not None:
            reg["size"] = size
        self.files.append({"type": "REG", "id": fid, "reg": reg})
        return fid

    def shmem_pages(self, shmid, offset, data):
        """Pages of an anonymous shared mapping (pagemap-shmem-<shmid>.img),
        at a byte offset into the shared object."""
        self.shmem.setdefault(shmid, []).append((offset, data))

    def write(self):
        d = self.dir
        os.makedirs(d, exist_ok=True)
        if self.parent is not None:
            self.parent.write()
            os.symlink(os.path.relpath(self.parent.dir, d),
                       os.path.join(d, "parent"))
        write_image(os.path.join(d, "inventory.img"), "INVENTORY", [{
            "img_version": 2, "fdinfo_per_id": True, "ns_per_id": True,
            "lsmtype": "NO_LSM",
            "root_ids": {"vm_id": 1, "files_id": 1, "fs_id": 1,
                         "sighand_id": 1}}])
        write_image(os.path.join(d, "pstree.img"), "PSTREE", [
            {"pid": p.pid, "ppid": p.ppid, "pgid": p.pid, "sid": p.pid,
             "threads": p.tids} for p in self.procs])
        write_image(os.path.join(d, "files.img"), "FILES", self.files)
        for p in self.procs:
            p.write(d)
        for shmid, parts in self.shmem.items():
            pid = self._next_pages_id
            self._next_pages_id += 1
            write_pagemap(d, "pagemap-shmem-%d.img" % shmid, pid,
                          [(off, len(data) // PAGE, PE_PRESENT, data, False)
                           for off, data in parts], self.fmt)
        return d
