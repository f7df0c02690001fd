/*
 * What init.c and job.c share: closing a range of fds.
 *
 * close_range (Linux 5.9) where the kernel has it; a loop up to RLIMIT_NOFILE where it does not, or
 * where a container's seccomp profile refuses it (EPERM), as on older kernels and runtimes.
 */
#ifndef JW_FDS_H
#define JW_FDS_H

#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_close_range
#define SYS_close_range 436 /* the same number on every architecture */
#endif

/* Close every fd from `first` to `last` (inclusive); 0, or -1 with errno. */
static int close_fds(unsigned int first, unsigned int last) {
    if (first > last) {
        return 0;
    }
    if (syscall(SYS_close_range, first, last, 0) == 0) {
        return 0;
    }
    if (errno != ENOSYS && errno != EPERM && errno != EINVAL) {
        return -1;
    }
    struct rlimit nofile;
    if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) {
        return -1;
    }
    unsigned long end = nofile.rlim_cur == RLIM_INFINITY ? 1UL << 20 : nofile.rlim_cur;
    for (unsigned long fd = first; fd <= last && fd < end; fd++) {
        close((int)fd); /* EBADF for most: nothing was open there */
    }
    return 0;
}

#endif
