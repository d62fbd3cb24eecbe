"""policy.dump_size() against the kernel's vma_dump_size() (fs/coredump.c),
rule by rule, as a table: what each kind of mapping contributes under each
coredump_filter bit (Documentation/filesystems/proc.rst, "coredump_filter")."""
import pytest

from criu_coredump import policy
from criu_coredump.model import (MADV_DONTDUMP, MAP_ANON, MAP_HUGETLB,
                                 MAP_PRIVATE, MAP_SHARED, PROT_EXEC, PROT_READ,
                                 PROT_WRITE, VMA_ANON_PRIVATE, VMA_ANON_SHARED,
                                 VMA_AREA_MEMFD, VMA_AREA_REGULAR,
                                 VMA_AREA_SOCKET, VMA_AREA_SYSVIPC,
                                 VMA_AREA_UPROBES, VMA_AREA_VDSO,
                                 VMA_AREA_VSYSCALL, VMA_AREA_VVAR,
                                 VMA_EXT_PLUGIN, VMA_FILE_PRIVATE,
                                 VMA_FILE_SHARED, MappedFile, Vma)

P = 4096
SIZE = 4 * P
RW, RX, R = PROT_READ | PROT_WRITE, PROT_READ | PROT_EXEC, PROT_READ
ALL = 0x1ff


def vma(kind, prot=RW, extra_status=0, extra_flags=0, pgoff=0, madv=0):
    flags, status = {
        "anon": (MAP_PRIVATE | MAP_ANON, VMA_ANON_PRIVATE),
        "anon_shared": (MAP_SHARED | MAP_ANON, VMA_ANON_SHARED),
        "file": (MAP_PRIVATE, VMA_FILE_PRIVATE),
        "file_shared": (MAP_SHARED, VMA_FILE_SHARED),
    }[kind]
    return Vma(0x10000, 0x10000 + SIZE, pgoff, 7, prot, flags | extra_flags,
               VMA_AREA_REGULAR | status | extra_status, madv)


REG = MappedFile(id=7, path="/data/plain")
EXE = MappedFile(id=7, path="/bin/prog", mode=0o100755)
LIB = MappedFile(id=7, path="/lib/libx.so", mode=0o100644)
DELETED = MappedFile(id=7, path="/tmp/gone", deleted=True)
MEMFD = MappedFile(id=7, path="memfd:x", kind="memfd", shmem_id=3)

# (what, vma, file, private pages, looks like ELF, filter, bytes dumped)
TABLE = [
    ("vsyscall is never dumped", vma("anon", extra_status=VMA_AREA_VSYSCALL), None, True, False, ALL, 0),
    ("vvar is never dumped", vma("anon", extra_status=VMA_AREA_VVAR), None, True, False, ALL, 0),
    ("vdso always is (always_dump_vma)", vma("anon", RX, VMA_AREA_VDSO), None, False, False, 0, SIZE),
    ("MADV_DONTDUMP wins over every bit", vma("anon", madv=1 << MADV_DONTDUMP), None, True, False, ALL, 0),
    ("a packet socket's ring is not dumped", vma("file_shared", extra_status=VMA_AREA_SOCKET), None, True, False, ALL, 0),
    ("uprobes XOL area: special mapping", vma("anon", RX, VMA_AREA_UPROBES), None, True, False, ALL, 0),
    ("plugin device mapping: VM_IO", vma("file_shared", extra_status=VMA_EXT_PLUGIN), REG, True, False, ALL, 0),
    ("hugetlb private, bit 5", vma("anon", extra_flags=MAP_HUGETLB), None, False, False, 1 << 5, SIZE),
    ("hugetlb private, no bit 5", vma("anon", extra_flags=MAP_HUGETLB), None, True, False, ALL & ~(1 << 5), 0),
    ("hugetlb shared, bit 6", vma("anon_shared", extra_flags=MAP_HUGETLB), None, False, False, 1 << 6, SIZE),
    ("hugetlb shared, no bit 6", vma("anon_shared", extra_flags=MAP_HUGETLB), None, False, False, ALL & ~(1 << 6), 0),
    ("anonymous shared, bit 1", vma("anon_shared"), None, False, False, 1 << 1, SIZE),
    ("anonymous shared, no bit 1", vma("anon_shared"), None, False, False, ALL & ~(1 << 1), 0),
    ("memfd shared is anonymous-like (bit 1)", vma("file_shared", extra_status=VMA_AREA_MEMFD), MEMFD, False, False, 1 << 1, SIZE),
    ("memfd shared, bit 3 alone: not dumped", vma("file_shared", extra_status=VMA_AREA_MEMFD), MEMFD, False, False, 1 << 3, 0),
    ("SysV shm is anonymous-like", vma("file_shared", extra_status=VMA_AREA_SYSVIPC), REG, False, False, 1 << 1, SIZE),
    ("a deleted shared file is anonymous-like", vma("file_shared"), DELETED, False, False, 1 << 1, SIZE),
    ("shared file, bit 3", vma("file_shared"), REG, False, False, 1 << 3, SIZE),
    ("shared file, no bit 3", vma("file_shared"), REG, False, False, ALL & ~(1 << 3), 0),
    ("private anonymous written (anon_vma), bit 0", vma("anon"), None, True, False, 1 << 0, SIZE),
    ("private anonymous written, no bit 0", vma("anon"), None, True, False, ALL & ~1, 0),
    ("private anonymous never written", vma("anon"), None, False, False, ALL, 0),
    ("private file written, bit 0", vma("file"), REG, True, False, 1 << 0, SIZE),
    ("private file, bit 2", vma("file", R), REG, False, False, 1 << 2, SIZE),
    ("private file, nothing asked", vma("file", R), REG, False, False, 0, 0),
    ("ELF headers: an executable at offset 0", vma("file", RX), EXE, False, False, 1 << 4, P),
    ("ELF headers: a library whose first bytes are ELF", vma("file", R), LIB, False, True, 1 << 4, P),
    ("ELF headers: a plain file", vma("file", R), REG, False, False, 1 << 4, 0),
    ("ELF headers: not at offset 0", vma("file", RX, pgoff=P), EXE, False, True, 1 << 4, 0),
    ("ELF headers: not readable", vma("file", PROT_EXEC), EXE, False, True, 1 << 4, 0),
    ("DAX bits change nothing (CRIU does not record DAX)", vma("file", R), REG, False, False, (1 << 7) | (1 << 8), 0),
    ("the default 0x3b: private file not written", vma("file", R), REG, False, False, policy.DEFAULT_FILTER, 0),
    ("the default 0x3b: shared file", vma("file_shared"), REG, False, False, policy.DEFAULT_FILTER, SIZE),
]


@pytest.mark.parametrize("what,v,f,private,elf,flt,want", TABLE,
                         ids=[row[0] for row in TABLE])
def test_vma_dump_size(what, v, f, private, elf, flt, want):
    assert policy.dump_size(v, f, private, lambda: elf, flt) == want


def test_the_default_is_the_kernels_plus_shared_files():
    assert policy.DEFAULT_FILTER == 0x33 | policy.MMF_MAPPED_SHARED == 0x3b


def test_memory_is_read_only_when_the_answer_depends_on_it():
    """looks_like_elf reads the process's memory: it is not asked for an
    executable (its mode answers) nor when bit 4 is off."""
    def never():
        raise AssertionError("memory read")
    assert policy.dump_size(vma("file", RX), EXE, False, never, 1 << 4) == P
    assert policy.dump_size(vma("file", R), LIB, False, never, 1 << 2) == SIZE
    assert policy.dump_size(vma("anon"), None, True, never, 0x3b) == SIZE
