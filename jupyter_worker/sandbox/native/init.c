/*
 * jw-init: pid 1 of a job's pid namespace once its job runs (docs/sandbox.md).
 *
 * The Python init (sandbox/launch.py) builds the sandbox and forks the job process, then execs this
 * program (by an fd opened before pivot_root: the host path is not visible inside the new root) so
 * that a running job costs a few pages, not a Python interpreter.
 *
 *     jw-init JOB_PID STATUS_FD READY_FD ERROR_FD
 *
 * It drops every capability (it needs none) and holds nothing of the job's (0-2 become /dev/null,
 * every other fd but its three is closed), then releases the job: one byte '1' on READY_FD, which it
 * closes, and closes ERROR_FD. So no command runs unless this init is in place (a failed exec, or a
 * failed step here, leaves the job process to read EOF and end); a failed step is written to
 * ERROR_FD, which the supervisor reports as the job's start error. The job's output ends when its
 * processes end; it reaps every orphan; when JOB_PID ends it writes that wait status (a native int,
 * struct "i") to STATUS_FD and exits 0. Signals are left as the Python init left them (default
 * dispositions, nothing blocked): as pid 1 it ignores every signal but SIGKILL and SIGSTOP from its
 * ancestors' namespaces, and every signal from inside.
 *
 * Exit codes (for a person reading a wait status: the supervisor takes an init that ended without
 * writing the job's status as a job lost): 0 reported (or no child left to wait for), 1 the status
 * could not be written, 2 bad arguments, 3 a setup step failed. Static, no loader or libc needed
 * inside the root.
 *
 * Duties are steps in main(), each a small function; later ones (holding the job's output pipes
 * and its status across a supervisor restart) would be more steps and fds passed the same way.
 *
 *     jw-init map READY_FD DONE_FD
 *
 * The same binary is also the init's id mapper (sandbox/mounts.py UserNamespaceChild), spawned
 * before a job asks: it enters a new user namespace, says so ('1' on READY_FD) and waits until
 * DONE_FD closes, holding nothing else. A fork of the Python init would do the same, but its copy
 * of the interpreter's page tables costs a millisecond or more to make and again to tear down when
 * it ends, and it ends while a job starts; this one costs a few pages. Exit codes: 0 told to end,
 * 2 bad arguments, 3 no user namespace (READY_FD closes unwritten: the caller sees the refusal).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fds.h"

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

/* No capability in any set: pid 1 of the job's namespace needs none, and an inheritable set (an
 * older container runtime leaves it full) must not outlive the exec that made this process. */
static int drop_capabilities(void) {
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[_LINUX_CAPABILITY_U32S_3];
    memset(none, 0, sizeof none);
    return (int)syscall(SYS_capset, &header, none);
}

/* 0-2 on /dev/null, nothing else open but the `count` fds of `keep` (sorted, each above 2): the init
 * holds no end of the job's pipes. */
static int hold_nothing(const int *keep, int count) {
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
    unsigned int next = 3;
    for (int i = 0; i < count; i++) {
        if (close_fds(next, (unsigned int)keep[i] - 1) != 0) {
            return -1;
        }
        next = (unsigned int)keep[i] + 1;
    }
    return close_fds(next, UINT_MAX);
}

/* A setup step failed: say which on the error pipe (the supervisor reports it as the job's start
 * error), and end; the job process reads EOF on its ready pipe and ends without running anything. */
static void fail(int error_fd, const char *step) {
    char message[256];
    int length = snprintf(message, sizeof message, "sandbox setup failed: the native init could not %s: %s", step,
                          strerror(errno));
    if (length > 0) {
        size_t size = ((size_t)length < sizeof message ? (size_t)length : sizeof message - 1) + 1; /* its NUL too */
        ssize_t ignored = write(error_fd, message, size);
        (void)ignored;
    }
    _exit(EXIT_SETUP);
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

/* The id mapper (see the top): a new user namespace, '1' on ready_fd, then wait for done_fd's EOF.
 * After the unshare it holds no capability outside that namespace. Never returns. */
static void map_ids(int ready_fd, int done_fd) {
    int held[2] = {ready_fd < done_fd ? ready_fd : done_fd, ready_fd < done_fd ? done_fd : ready_fd};
    /* undumpable, as the Python init it serves (exec made it dumpable again) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || hold_nothing(held, 2) != 0 || unshare(CLONE_NEWUSER) != 0) {
        _exit(EXIT_SETUP);
    }
    if (write_all(ready_fd, "1", 1) != 0) {
        _exit(EXIT_SETUP);
    }
    char byte;
    while (read(done_fd, &byte, 1) < 0 && errno == EINTR) {
    }
    _exit(EXIT_REPORTED);
}

static int compare_fds(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "map") == 0) {
        long ready = parse_number(argv[2], 3, INT_MAX), done = parse_number(argv[3], 3, INT_MAX);
        if (ready < 0 || done < 0 || ready == done) {
            return EXIT_USAGE;
        }
        map_ids((int)ready, (int)done);
    }
    if (argc != 5) {
        return EXIT_USAGE;
    }
    long job = parse_number(argv[1], 1, INT_MAX);
    int held[3];
    for (int i = 0; i < 3; i++) {
        long fd = parse_number(argv[2 + i], 3, INT_MAX);
        if (fd < 0 || fcntl((int)fd, F_GETFD) < 0) {
            return EXIT_USAGE;
        }
        held[i] = (int)fd;
    }
    int status_fd = held[0], ready_fd = held[1], error_fd = held[2];
    if (job < 0 || status_fd == ready_fd || status_fd == error_fd || ready_fd == error_fd) {
        return EXIT_USAGE;
    }
    qsort(held, 3, sizeof *held, compare_fds);
    /* exec made us dumpable again; the Python init was not (its memory is root's business) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        fail(error_fd, "stay undumpable");
    }
    if (drop_capabilities() != 0) {
        fail(error_fd, "drop its capabilities");
    }
    if (hold_nothing(held, 3) != 0) {
        fail(error_fd, "close what it must not hold");
    }
    /* holding nothing, with nothing: only now may the command run */
    if (write_all(ready_fd, "1", 1) != 0 || close(ready_fd) != 0) {
        fail(error_fd, "release the job");
    }
    close(error_fd); /* its EOF (with the job stage's exec) tells the supervisor the job started */
    reap((pid_t)job, status_fd);
}
