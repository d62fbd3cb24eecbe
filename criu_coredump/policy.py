"""How much of a mapping goes into the core: the kernel's vma_dump_size()
(fs/coredump.c), as a pure function of what the images say about the VMA,
and the coredump_filter bits (Documentation/filesystems/proc.rst) it reads.

Free of pycriu and of any reading, so that the command line can show the
default filter in --help cheaply and the rules are tested as a table.
"""
from __future__ import annotations

from collections.abc import Callable

from .model import (MADV_DONTDUMP, PAGE_SIZE, PROT_READ, VMA_AREA_MEMFD,
                    VMA_AREA_SOCKET, VMA_AREA_SYSVIPC, VMA_AREA_UPROBES,
                    VMA_AREA_VDSO, VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
                    VMA_EXT_PLUGIN, MappedFile, Vma)

MMF_ANON_PRIVATE = 1 << 0
MMF_ANON_SHARED = 1 << 1
MMF_MAPPED_PRIVATE = 1 << 2
MMF_MAPPED_SHARED = 1 << 3
MMF_ELF_HEADERS = 1 << 4
MMF_HUGETLB_PRIVATE = 1 << 5
MMF_HUGETLB_SHARED = 1 << 6
MMF_DAX_PRIVATE = 1 << 7
MMF_DAX_SHARED = 1 << 8
# The kernel's default 0x33, plus bit 3: a shared file may have changed since
# the checkpoint, so its contents are dumped while we can still read them.
DEFAULT_FILTER = 0x33 | MMF_MAPPED_SHARED


def dump_size(vma: Vma, file: MappedFile | None, private_pages: bool,
              looks_like_elf: Callable[[], bool],
              dump_filter: int = DEFAULT_FILTER) -> int:
    """The bytes of `vma` from its start that the kernel dumps.

    file: what the VMA maps (files.img), or None; private_pages: the
    process's pagemap holds pages of the VMA (the images' sign of
    vma->anon_vma, written-to private memory); looks_like_elf: whether the
    VMA's first bytes are an ELF magic, asked only when the answer matters
    (it reads memory)."""
    flt = dump_filter
    st = vma.status
    if st & (VMA_AREA_VSYSCALL | VMA_AREA_VVAR):
        return 0  # not readable from user space; nothing in the images
    if st & VMA_AREA_VDSO:
        return vma.size  # always_dump_vma()
    if vma.madv & (1 << MADV_DONTDUMP):
        return 0
    if st & VMA_AREA_SOCKET:
        return 0
    if st & (VMA_AREA_UPROBES | VMA_EXT_PLUGIN):
        # the uprobes XOL area and device mappings are VM_IO or special
        # mappings, which the kernel does not dump
        return 0
    # DAX (bits 7, 8) cannot be told from the images: CRIU does not record
    # it, so those bits change nothing.
    if vma.is_hugetlb:
        bit = MMF_HUGETLB_SHARED if vma.is_shared else MMF_HUGETLB_PRIVATE
        return vma.size if flt & bit else 0
    if vma.is_shared:
        anon_like = (not vma.is_file or st & (VMA_AREA_MEMFD | VMA_AREA_SYSVIPC)
                     or (file is not None
                         and (file.kind == "memfd" or file.deleted)))
        bit = MMF_ANON_SHARED if anon_like else MMF_MAPPED_SHARED
        return vma.size if flt & bit else 0
    # Written-to private memory: the kernel tests vma->anon_vma.
    if flt & MMF_ANON_PRIVATE and private_pages:
        return vma.size
    if not vma.is_file:
        return 0
    if flt & MMF_MAPPED_PRIVATE:
        return vma.size
    if flt & MMF_ELF_HEADERS and vma.pgoff == 0 and vma.prot & PROT_READ:
        if file is not None and file.mode & 0o111:
            return PAGE_SIZE
        if looks_like_elf():
            return PAGE_SIZE
    return 0
