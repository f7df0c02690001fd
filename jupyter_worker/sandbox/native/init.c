/*
 * jw-init: pid 1 of a job's pid namespace once its job runs (docs/sandbox.md).
 *
 * The Python init (sandbox/launch.py) builds the sandbox and forks the job process, then execs this
 * program (by an fd opened before pivot_root: the host path is not visible inside the new root) so
 * that a running job costs a few pages, not a Python interpreter.
 *
 *     jw-init JOB_PID STATUS_FD READY_FD
 *
 * It drops every capability (it needs none) and holds nothing of the job's (0-2 become /dev/null,
 * every other fd but STATUS_FD and READY_FD is closed), then releases the job: one byte '1' on
 * READY_FD, which it closes. So no command runs unless this init is in place (a failed exec, or a
 * failed step here, leaves the job process to read EOF and end). The job's output ends when its
 * processes end; it reaps every orphan; when JOB_PID ends it writes
 * that wait status (a native int, struct "i") to STATUS_FD and exits 0. Signals are left as the
 * Python init left them (default dispositions, nothing blocked): as pid 1 it ignores every signal
 * but SIGKILL and SIGSTOP from its ancestors' namespaces, and every signal from inside.
 *
 * Exit codes: 0 reported (or no child left to wait for), 1 the status could not be written,
 * 2 bad arguments, 3 a setup step failed. Static, no loader or libc needed inside the root.
 *
 * Duties are steps in main(), each a small function; later ones (holding the job's output pipes
 * and its status across a supervisor restart) would be more steps and fds passed the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { EXIT_REPORTED = 0, EXIT_NOT_REPORTED = 1, EXIT_USAGE = 2, EXIT_SETUP = 3 };

/* A whole decimal number in [low, high], or -1. */
static long parse_number(const char *text, long low, long high) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
        return -1;
    }
    return value;
}

/* Close every fd from `first` to `last` (inclusive); close_range where the kernel has it. */
static int close_fds(unsigned int first, unsigned int last) {
    if (first > last) {
        return 0;
    }
    if (syscall(SYS_close_range, first, last, 0) == 0) {
        return 0;
    }
    if (errno != ENOSYS) {
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

/* No capability in any set: pid 1 of the job's namespace needs none, and an inheritable set (an
 * older container runtime leaves it full) must not outlive the exec that made this process. */
static int drop_capabilities(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3];
    memset(none, 0, sizeof none);
    return (int)syscall(SYS_capset, &header, none);
}

/* 0-2 on /dev/null, nothing else open but `keep` and `also`: the init holds no end of the job's
 * pipes. */
static int hold_nothing(int keep, int also) {
    if (keep > also) {
        int swap = keep;
        keep = also;
        also = swap;
    }
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) {
        return -1;
    }
    for (int target = 0; target < 3; target++) {
        if (null != target && dup2(null, target) < 0) {
            return -1;
        }
    }
    if (null > 2 && close(null) != 0) {
        return -1;
    }
    if (close_fds(3, (unsigned int)keep - 1) != 0 || close_fds((unsigned int)keep + 1, (unsigned int)also - 1) != 0 ||
        close_fds((unsigned int)also + 1, UINT_MAX) != 0) {
        return -1;
    }
    return 0;
}

/* Write all of `size` bytes, through EINTR and short writes. */
static int write_all(int fd, const void *data, size_t size) {
    const char *p = data;
    while (size > 0) {
        ssize_t n = write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

/* Reap every child; when `job` ends, report its wait status. Never returns. */
static void reap(pid_t job, int status_fd) {
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR) {
                continue;
            }
            /* ECHILD: no child at all, the job included; nothing left to report */
            _exit(errno == ECHILD ? EXIT_REPORTED : EXIT_NOT_REPORTED);
        }
        if (pid == job) {
            _exit(write_all(status_fd, &status, sizeof status) == 0 ? EXIT_REPORTED : EXIT_NOT_REPORTED);
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        return EXIT_USAGE;
    }
    long job = parse_number(argv[1], 1, INT_MAX);
    long status_fd = parse_number(argv[2], 3, INT_MAX);
    long ready_fd = parse_number(argv[3], 3, INT_MAX);
    if (job < 0 || status_fd < 0 || ready_fd < 0 || status_fd == ready_fd || fcntl((int)status_fd, F_GETFD) < 0 ||
        fcntl((int)ready_fd, F_GETFD) < 0) {
        return EXIT_USAGE;
    }
    /* exec made us dumpable again; the Python init was not (its memory is root's business) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || drop_capabilities() != 0 ||
        hold_nothing((int)status_fd, (int)ready_fd) != 0) {
        return EXIT_SETUP;
    }
    /* holding nothing, with nothing: only now may the command run */
    if (write_all((int)ready_fd, "1", 1) != 0 || close((int)ready_fd) != 0) {
        return EXIT_SETUP;
    }
    reap((pid_t)job, (int)status_fd);
}
