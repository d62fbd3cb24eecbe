/* Names that are not UTF-8, which Linux allows anywhere a name is bytes: the
 * process's comm (prctl(PR_SET_NAME) takes any bytes; the kernel's core
 * copies it into NT_PRPSINFO's pr_fname as it is) and the names of mapped
 * files, one still on disk and one deleted (NT_FILE carries them byte for
 * byte).  CRIU stores both in string fields of its images, as they are. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>

char *kept_map, *deleted_map;

static char *map_file(const char *name, const char *text) {
    char page[4096] = {0};
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
    strcpy(page, text);
    if (fd < 0 || write(fd, page, sizeof page) != sizeof page) { perror(name); return 0; }
    char *p = mmap(0, sizeof page, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? 0 : p;
}

int main(void) {
    kept_map = map_file("caf\xe9 \xff\xfe.bin", "kept, named in Latin-1");
    deleted_map = map_file("na\xefve", "deleted, named in Latin-1");
    if (!kept_map || !deleted_map || unlink("na\xefve") != 0) return 1;
    if (prctl(PR_SET_NAME, "\xff\xfe-caf\xe9-prog") != 0) { perror("prctl"); return 1; }
    printf("%d\n", getpid()); fflush(stdout);
    for (;;) pause();
}
