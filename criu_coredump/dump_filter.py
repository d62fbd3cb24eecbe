"""The coredump_filter bits (Documentation/filesystems/proc.rst) and our
default.  Apart from memory.py, which applies them, so that the command line
can show the default in --help without importing pycriu."""

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
