/* Hugetlb memory of every kind a process maps without a hugetlbfs mount:
 * private anonymous, shared anonymous and a MFD_HUGETLB memfd (2 MiB
 * pages; the test reserves them in /proc/sys/vm/nr_hugepages).  Each
 * holds a string gdb must read in the core; the kernel lists all three in
 * NT_FILE, on its internal hugetlbfs mount. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define HUGE (2UL << 20)
char *private_huge, *shared_huge, *memfd_huge;

int main(void) {
    int fd = memfd_create("hugememfd", MFD_HUGETLB);
    if (fd < 0 || ftruncate(fd, HUGE) != 0) { perror("memfd_create"); return 1; }
    private_huge = mmap(0, HUGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    shared_huge = mmap(0, HUGE, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    memfd_huge = mmap(0, HUGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (private_huge == MAP_FAILED || shared_huge == MAP_FAILED || memfd_huge == MAP_FAILED) {
        perror("mmap MAP_HUGETLB"); return 1;
    }
    strcpy(private_huge, "private hugetlb");
    strcpy(shared_huge + HUGE - 4096, "shared hugetlb, last page");
    strcpy(memfd_huge, "memfd hugetlb");
    printf("%d\n", getpid()); fflush(stdout);
    for (;;) pause();
}
