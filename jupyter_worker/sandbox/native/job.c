/*
 * jw-job: the job process's last steps before the command, from a few pages of memory.
 *
 * The job process is forked by the Python init (sandbox/launch.py) before any job exists; it execs
 * this program at once, while its standby waits, so that the exec of the job's command later
 * tears down a few pages and not the Python interpreter it was forked from (on this VM ~0.1 ms a
 * MiB: 3 ms on each job's start). Its fds, set by launch.py:
 *
 *     3 the job line: one message (the order, below) with the job's stdio (3 fds, 4 with display)
 *     4 'the sandbox is ready': one byte '1' says go, anything else says stop
 *     5 the error pipe: a setup error goes here; close-on-exec, so its EOF proves the exec
 *     6 the host's network namespace (joined for network 'host')
 *     7 the seccomp program (struct sock_filter[]), read at start
 *
 * The order: NUL-terminated fields, written by launch.py's _job_order: uid, gid, host network
 * (0/1), reset the OOM score (0/1), display (0/1), cwd, user name, argc, argv..., envc, env...
 * ("NAME=value"); validated by the supervisor and the init (no field holds a NUL).
 *
 * At start it sheds what the Python init shed before forking it (the bounding set, the inheritable
 * set, signals, core dumps): it is forked before, so that its exec keeps root's capabilities for
 * the steps below.
 * Then: the host network for 'host', a new cgroup namespace, its
 * own session, the OOM score back to 0, fds 0-2 (and 3) the job's and the error pipe next (every
 * other fd closed), no groups, the job's gid and uid, no new privileges, SIGKILL at the init's
 * death, the cwd, umask 022, seccomp last, and exec with PATH taken from the job's environment.
 * Exit 127 after a setup error (reported), 0 when told to stop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fds.h"

enum { JOB_FD = 3, READY_FD = 4, ERROR_FD = 5, NETWORK_FD = 6, FILTER_FD = 7, HIGH_FD = 100 };
enum { MAX_ORDER = 1 << 20, MAX_FILTER = 1 << 20, MAX_STDIO = 4 };

static int error_fd = ERROR_FD;

/* Report a setup error on the error pipe and end. */
static void fail(const char *what, const char *detail) {
    char message[4096];
    int length = snprintf(message, sizeof message, "%s%s", what, detail ? detail : "");
    if (length > 0) {
        /* with its NUL: the supervisor reports the first message only (the init's next one, that the
         * job line broke, says nothing more) */
        size_t size = ((size_t)length < sizeof message ? (size_t)length : sizeof message - 1) + 1;
        ssize_t ignored = write(error_fd, message, size);
        (void)ignored;
    }
    _exit(127);
}

static void fail_errno(const char *what) {
    char detail[256];
    snprintf(detail, sizeof detail, ": %s", strerror(errno));
    fail(what, detail);
}

/* The whole of an fd into a fresh buffer (at most limit bytes); its length in *size. */
static char *read_all(int fd, size_t limit, size_t *size) {
    char *buffer = malloc(limit);
    size_t used = 0;
    if (buffer == NULL) {
        return NULL;
    }
    for (;;) {
        ssize_t got = read(fd, buffer + used, limit - used);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            free(buffer);
            return NULL;
        }
        if (got == 0 || (used += (size_t)got) == limit) {
            break;
        }
    }
    *size = used;
    return buffer;
}

struct order {
    uid_t uid;
    gid_t gid;
    int host_network, reset_oom, display;
    char *cwd, *user;
    char **argv, **env;
};

/* The next NUL-terminated field of the order, or NULL past its end. */
static char *field(char **cursor, char *end) {
    char *start = *cursor;
    if (start >= end) {
        return NULL;
    }
    char *nul = memchr(start, '\0', (size_t)(end - start));
    if (nul == NULL) {
        return NULL;
    }
    *cursor = nul + 1;
    return start;
}

static long number(char **cursor, char *end, long high) {
    char *text = field(cursor, end);
    char *stop = NULL;
    if (text == NULL || *text == '\0') {
        return -1;
    }
    errno = 0;
    long value = strtol(text, &stop, 10);
    return errno || *stop != '\0' || value < 0 || value > high ? -1 : value;
}

/* A counted list of fields as a NULL-terminated array, or NULL. */
static char **list(char **cursor, char *end) {
    long count = number(cursor, end, MAX_ORDER);
    if (count < 0) {
        return NULL;
    }
    char **items = calloc((size_t)count + 1, sizeof *items);
    for (long i = 0; items != NULL && i < count; i++) {
        if ((items[i] = field(cursor, end)) == NULL) {
            return NULL;
        }
    }
    return items;
}

static int parse_order(char *data, size_t size, struct order *order) {
    char *cursor = data, *end = data + size;
    long uid = number(&cursor, end, 0xFFFFFFFE), gid = number(&cursor, end, 0xFFFFFFFE);
    long host_network = number(&cursor, end, 1), reset_oom = number(&cursor, end, 1);
    long display = number(&cursor, end, 1);
    if (uid <= 0 || gid <= 0 || host_network < 0 || reset_oom < 0 || display < 0) {
        return -1;  /* never root: the supervisor refuses such a job before */
    }
    order->uid = (uid_t)uid;
    order->gid = (gid_t)gid;
    order->host_network = (int)host_network;
    order->reset_oom = (int)reset_oom;
    order->display = (int)display;
    order->cwd = field(&cursor, end);
    order->user = field(&cursor, end);
    order->argv = list(&cursor, end);
    order->env = list(&cursor, end);
    if (order->cwd == NULL || order->user == NULL || order->argv == NULL || order->argv[0] == NULL ||
        order->env == NULL || cursor != end) {
        return -1;
    }
    if (order->cwd[0] != '/') {
        return -1;  /* relative to what? the stage's cwd is "/" only by its own chdir */
    }
    return 0;
}

/* One message with its fds from the job line; 0 bytes (a closed line) means there is no job. */
static ssize_t receive(char *data, size_t size, int *fds, int *count) {
    union {
        char bytes[CMSG_SPACE(sizeof(int) * MAX_STDIO)];
        struct cmsghdr align; /* CMSG_FIRSTHDR reads a header here */
    } control;
    struct iovec vector = {data, size};
    struct msghdr header = {.msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.bytes,
                            .msg_controllen = sizeof control.bytes};
    ssize_t got;
    do {
        got = recvmsg(JOB_FD, &header, MSG_CMSG_CLOEXEC);
    } while (got < 0 && errno == EINTR);
    *count = 0;
    if (got < 0) {
        return -1;  /* the header (and its control buffer) holds nothing the kernel wrote */
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&header); c != NULL; c = CMSG_NXTHDR(&header, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (n < 0 || n > MAX_STDIO - *count) {
                return -1;  /* more fds than the job's stdio: refused, never copied past the array */
            }
            memcpy(fds + *count, CMSG_DATA(c), sizeof(int) * (size_t)n);
            *count += n;
        }
    }
    if (header.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        return -1;
    }
    return got;
}

/* 0-2 (and 3) the job's stdio, inherited; the error pipe next, close-on-exec; nothing else. */
static void arrange_fds(int *stdio, int count) {
    int high[MAX_STDIO + 1];
    for (int i = 0; i <= count; i++) {
        int fd = i < count ? stdio[i] : error_fd;
        if ((high[i] = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD + i)) < 0) {
            fail_errno("could not start the command: fds");
        }
    }
    error_fd = high[count];
    for (int target = 0; target < count; target++) {
        if (dup2(high[target], target) < 0) {
            fail_errno("could not start the command: fds");
        }
    }
    if (dup3(high[count], count, O_CLOEXEC) < 0) {
        fail_errno("could not start the command: fds");
    }
    error_fd = count;
    if (close_fds((unsigned)count + 1, ~0U) != 0) {
        fail_errno("could not start the command: closing fds");
    }
}

/* exec as Python's os.execvpe: a name with a '/' as it is, else each folder of the environment's
 * PATH in turn; the first error other than ENOENT/ENOTDIR wins, else the last (errno). No shell
 * fallback for a file that is not an executable (glibc's execvp has one). */
static void search_and_exec(char **argv, char **env) {
    const char *name = argv[0], *path = NULL;
    if (strchr(name, '/') != NULL) {
        execve(name, argv, env);
        return;
    }
    for (char **e = env; *e != NULL; e++) {
        if (strncmp(*e, "PATH=", 5) == 0) {
            path = *e + 5;
        }
    }
    if (path == NULL) {
        path = "/bin:/usr/bin";
    }
    int saved = 0, last = ENOENT;
    static char full[8192];
    for (const char *start = path;; start++) {
        const char *stop = strchrnul(start, ':');
        size_t length = (size_t)(stop - start);
        if (length + strlen(name) + 2 <= sizeof full) {
            memcpy(full, start, length);
            size_t at = length;
            if (length > 0 && full[length - 1] != '/') {
                full[at++] = '/';
            }
            strcpy(full + at, name);
            execve(full, argv, env);
            last = errno;
            if (last != ENOENT && last != ENOTDIR && saved == 0) {
                saved = last;
            }
        }
        if (*stop == '\0') {
            break;
        }
        start = stop;
    }
    errno = saved ? saved : last;
}

/* What the job inherits at exec: no capability bounding set (its permitted ones go at setresuid),
 * no ambient ones, default signals with none blocked, no core dumps. Done at start, ahead. */
static void shed_inheritable_privileges(void) {
    for (int cap = 0;; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL && cap > 0) {
                break;  /* past the last capability */
            }
            fail_errno("could not start the command: emptying the capability bounding set");
        }
    }
    /* An inheritable set (an older container runtime leaves it full) would survive the exec of the
     * command as root's file capabilities do not: a job stage exec'd as root would keep everything. */
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0) {
        fail_errno("could not start the command: reading capabilities");
    }
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &header, data) != 0) {
        fail_errno("could not start the command: clearing inheritable capabilities");
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) {
        fail_errno("could not start the command: clearing ambient capabilities");
    }
    for (int signum = 1; signum < NSIG; signum++) {
        if (signum != SIGKILL && signum != SIGSTOP) {
            signal(signum, SIG_DFL);  /* the Python init ignores SIGPIPE and SIGXFSZ */
        }
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core) != 0) {
        fail_errno("could not start the command: RLIMIT_CORE");
    }
}

int main(void) {
    size_t filter_size = 0;
    prctl(PR_SET_DUMPABLE, 0);
    if (chdir("/") != 0) {  /* hold no host folder while standing by: the job's cwd comes later */
        fail_errno("could not start the command: chdir /");
    }
    shed_inheritable_privileges();
    struct sock_filter *filter = (struct sock_filter *)read_all(FILTER_FD, MAX_FILTER, &filter_size);
    close(FILTER_FD);
    struct sched_param normal = {0};
    if (sched_setscheduler(0, SCHED_OTHER, &normal) != 0) {  /* prepared at idle; waits and runs at normal */
        fail_errno("could not start the command: sched_setscheduler");
    }

    char *data = malloc(MAX_ORDER);
    int stdio[MAX_STDIO], count = 0;
    if (filter == NULL || filter_size == 0 || filter_size % sizeof *filter || filter_size / sizeof *filter > BPF_MAXINSNS ||
        data == NULL) {
        fail("could not start the command: ", "no seccomp program");
    }
    ssize_t got = receive(data, MAX_ORDER, stdio, &count);
    if (got == 0) {
        _exit(0);
    }
    close(JOB_FD);
    struct order order;
    if (got < 0 || parse_order(data, (size_t)got, &order) != 0) {
        fail("could not start the command: ", "a malformed order from the init");
    }
    if (count != (order.display ? 4 : 3)) {
        fail("could not start the command: ", "the job came with the wrong number of fds for its output");
    }
    char go = 0;
    if (read(READY_FD, &go, 1) != 1 || go != '1') {
        _exit(0);
    }
    close(READY_FD);
    if (order.host_network && setns(NETWORK_FD, CLONE_NEWNET) != 0) {
        fail_errno("could not start the command: setns");
    }
    close(NETWORK_FD);
    if (unshare(CLONE_NEWCGROUP) != 0) {
        fail_errno("could not start the command: unshare");
    }
    if (setsid() < 0) {
        fail_errno("could not start the command: setsid");
    }
    if (order.reset_oom) {
        /* the init's -1000 must not pass to the job: failing to reset it stops the start */
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            fail_errno("could not start the command: resetting oom_score_adj");
        }
        close(fd);
    }
    arrange_fds(stdio, count);
    if (setgroups(0, NULL) != 0 || setresgid(order.gid, order.gid, order.gid) != 0 ||
        setresuid(order.uid, order.uid, order.uid) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        fail_errno("could not start the command: dropping privileges");
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        fail_errno("could not start the command: pdeathsig");
    }
    if (chdir(order.cwd) != 0) {
        char detail[4096];
        snprintf(detail, sizeof detail, "working directory %s: %s (to %s, whom the job runs as)", order.cwd,
                 strerror(errno), order.user);
        fail("could not start the command: ", detail);
    }
    umask(022);
    struct sock_fprog program = {(unsigned short)(filter_size / sizeof *filter), filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) {
        fail_errno("could not start the command: seccomp");
    }
    search_and_exec(order.argv, order.env);
    if (errno == ENOENT) {
        fail("command not found: ", order.argv[0]);
    }
    if (errno == EACCES) {
        fail("permission denied: ", order.argv[0]);
    }
    char detail[4096];
    snprintf(detail, sizeof detail, "[Errno %d] %s: '%s'", errno, strerror(errno), order.argv[0]);
    fail("could not start the command: ", detail);
}
