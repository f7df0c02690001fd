"""The job's root filesystem: a fresh tmpfs with read-only binds of the host's system files.

Runs in the job's init, inside its new mount namespace, before pivot_root. Sources a client named
(extra mounts, the Python prefix) are opened once, with the requester's own file permissions, and
bound from that open file; mount points are walked component by component without following
symlinks, and are only ever created on the sandbox's own filesystems (its root, /tmp, /var/tmp,
/dev/shm, /work), never inside a host folder.

When the job runs as another user than the one who asked (root's jobs run as nobody), the sources
the requester named are bound through an id-mapped mount: on them, and only on them, the job's
uid and gid read and write as the requester's (see mapping_namespace).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import SpecError
from ..limits import BY_FIELD
from ..spec import KERNEL_SOURCES, check_destination
from . import libc
from .libc import (
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_NODEV,
    MOUNT_ATTR_NOSUID,
    MOUNT_ATTR_RDONLY,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
)
from .native import INIT_NAME

# The size, in MiB, of each of /tmp, /var/tmp, /dev/shm and a tmpfs /work when a job's limits set no tmp_mb
# (direct users of the engine such as `jupyter-worker sandbox`; the executor always sets tmp_mb, from
# its policy): the table's own default.
DEFAULT_TMP_MB: int = BY_FIELD["tmp_mb"].default
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
ETC_ENTRIES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "os-release",
    "protocols",
    "services",
    "mime.types",
    "gai.conf",
    "host.conf",
    "inputrc",
    "fonts",  # fontconfig (matplotlib in a job) reads its configuration here
    "profile",
    "bash.bashrc",
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "latency_stats", "sched_debug", "kallsyms", "kmsg")
_AT_FDCWD = -100  # openat2 from the current folder (an absolute path ignores it)
PROC_MASKED_DIRS = ("acpi", "scsi", "asound", "firmware", "driver")
# What open_tree/mount_setattr answer where an id-mapped bind cannot be made: the filesystem does not
# support it (EINVAL: tmpfs before Linux 6.3, nfs, ...), it is not the initial namespace's to map
# (EPERM), the kernel predates the calls (ENOSYS, before 5.12) or user namespaces are off (EPERM,
# ENOSPC from unshare). The bind is then made as it always was, unmapped.
_IDMAP_REFUSALS = frozenset({errno.EINVAL, errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOSPC})


class SetupError(Exception):
    """A step of the sandbox setup failed; the message goes to the job's start error."""


class SymlinkOnTheWay(SetupError):
    """A mount point's path crosses a symlink (which is never followed to make a mount point)."""


@dataclass
class Bind:
    """A host object, already opened, to show at destination."""

    fd: int
    destination: str
    rw: bool
    is_dir: bool
    # A Python prefix whose path crosses a symlink in a folder shown to the job (a project's .venv
    # linking to an environment elsewhere) is shown where that symlink leads: at the path it resolved to.
    or_where_resolved: bool = False


@dataclass
class RootPlan:
    new_root: str
    uid: int
    gid: int
    user: str
    hostname: str
    tmp_mb: int  # the size of each tmpfs the job writes to (/tmp, /dev/shm, /work)
    work_dir: str | None
    binds: list[Bind]
    host_network: bool
    resolv_conf: str | None = None
    work_device: str | None = None  # the loop device of a disk-limited /work (sandbox/disk.py)
    work_mb: int | None = None  # the disk limit: the size of /work where it is a tmpfs
    requester_uid: int | None = None  # who asked: the binds are id-mapped to them if the job runs as
    requester_gid: int | None = None  # someone else (None: as the job's own uid and gid)
    mapper: UserNamespaceChild | None = None  # made ahead for the id-mapping, if the init has one

    @property
    def maps_ids(self) -> bool:
        """Whether the client-named binds need an id-mapping: the job runs as another user."""
        requester = (self.requester_uid, self.requester_gid)
        return None not in requester and requester != (self.uid, self.gid)


_IDENTITY = threading.RLock()  # glibc's setgroups applies to every thread: one identity switch at a time


@contextlib.contextmanager
def acting_as(uid: int, gid: int, groups: list[int]) -> Iterator[None]:
    """Resolve paths with someone else's file permissions (fsuid/fsgid, groups), then switch back.
    Held by one thread at a time (a listing in a worker thread, the event loop's checks)."""
    with _IDENTITY:
        saved = os.getgroups()
        os.setgroups(groups)
        libc.setfsgid(gid)
        libc.setfsuid(uid)
        try:
            yield
        finally:
            libc.setfsuid(0)
            libc.setfsgid(0)
            os.setgroups(saved)


def open_source(path: str) -> tuple[int, bool]:
    """Open a path the client named as an O_PATH handle; what it resolved to is what gets bound.

    The one ownership check of every mount source (extra mounts and Python prefixes, at submission
    and when the job starts), made while acting as the requester (acting_as): symlinks are followed
    with their permissions but magic links (/proc/self/root, /proc/self/fd/N: the privileged
    init's own) are not; the source must be a folder or a regular file that the requester may read
    (opened for reading, as them), and not, once resolved, inside a kernel interface."""
    try:
        fd = libc.openat2(_AT_FDCWD, path, os.O_PATH, libc.RESOLVE_NO_MAGICLINKS)
    except OSError as exc:
        raise SetupError(f"mount source {path}: {os.strerror(exc.errno or 0)}") from None
    try:
        info = os.fstat(fd)
        is_dir = stat.S_ISDIR(info.st_mode)
        if not (is_dir or stat.S_ISREG(info.st_mode)):
            raise SetupError(f"mount source {path}: only a folder or a regular file can be shown in a job")
        resolved = os.readlink(_fd_path(fd))
        if any(resolved == top or resolved.startswith(top + "/") for top in KERNEL_SOURCES):
            raise SetupError(f"mount source {path}: {resolved} is a kernel interface")
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if is_dir else 0)
        try:
            os.close(os.open(_fd_path(fd), flags))  # reopened, so checked against the requester's rights
        except OSError as exc:
            raise SetupError(f"mount source {path}: {exc.strerror}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd, is_dir


def check_source(path: str, uid: int, gid: int, groups: list[int]) -> None:
    """open_source's check, as the requester, without keeping the handle: a submission's early word.
    A process that is not root (a test of the rules) can only open with its own rights anyway."""
    with acting_as(uid, gid, groups) if os.geteuid() == 0 else contextlib.nullcontext():
        fd, _ = open_source(path)
    os.close(fd)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Tree:
    """Mount points under new_root, created only outside host folders, never through symlinks."""

    def __init__(self, new_root: str):
        self.root_fd = os.open(new_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.host_folders: list[str] = []
        self.tmp_mb = 0  # the size of the TMP_FOLDERS, once prepare_root has mounted them

    def _walk(self, destination: str, is_dir: bool) -> tuple[int, str]:
        """The parent of destination as an O_PATH handle, and the leaf's name (made if missing)."""
        parts = [p for p in destination.split("/") if p]
        fd = os.dup(self.root_fd)
        try:
            for index, part in enumerate(parts[:-1]):
                fd = self._step(fd, part, "/" + "/".join(parts[: index + 1]), False, True)
            leaf = self._step(os.dup(fd), parts[-1], destination, True, is_dir)
            os.close(leaf)
        except BaseException:
            os.close(fd)
            raise
        return fd, parts[-1]

    def _mount(
        self, destination: str, is_dir: bool, mount: Callable[[int], None], adjust: Callable[[str], None] | None = None
    ) -> None:
        """Mount on the leaf (an O_PATH handle, opened without following symlinks), then adjust the
        new mount's flags."""
        parent, name = self._walk(destination, is_dir)
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
        leaf = os.open(name, flags, dir_fd=parent)
        try:
            mount(leaf)
            if adjust is not None:
                top = os.open(name, flags, dir_fd=parent)
                try:
                    adjust(_fd_path(top))
                finally:
                    os.close(top)
        except OSError as exc:
            raise SetupError(f"mount {destination}: {exc.strerror}") from None
        finally:
            os.close(leaf)
            os.close(parent)

    def _step(self, fd: int, part: str, so_far: str, last: bool, is_dir: bool) -> int:
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_DIRECTORY if not last or is_dir else 0)
        try:
            child = os.open(part, flags, dir_fd=fd)
        except FileNotFoundError:
            self._create(fd, part, so_far, dir_wanted=not last or is_dir)
            child = os.open(part, flags, dir_fd=fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise SymlinkOnTheWay(f"mount point {so_far}: a symlink (symlinks are not followed)") from None
            raise SetupError(f"mount point {so_far}: {exc.strerror} (symlinks are not followed)") from None
        os.close(fd)
        return child

    def _create(self, parent_fd: int, part: str, so_far: str, dir_wanted: bool) -> None:
        inside = next((h for h in self.host_folders if so_far.startswith(h.rstrip("/") + "/")), None)
        if inside:
            raise SetupError(f"mount point {so_far} does not exist in {inside}, a host folder")
        writable = os.open(_fd_path(parent_fd), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if dir_wanted:
                os.mkdir(part, 0o755, dir_fd=writable)
            else:
                os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o644, dir_fd=writable))
        finally:
            os.close(writable)

    def mount_bind(
        self,
        source: str,
        destination: str,
        *,
        rw: bool = False,
        is_dir: bool = True,
        host: bool = True,
        devices: bool = False,
    ) -> None:
        """Bind source at destination; host folders are remembered so nothing is created inside."""

        def adjust(top: str) -> None:
            if rw:
                libc.mount(None, top, None, MS_REMOUNT | MS_BIND | MS_NOSUID | (0 if devices else MS_NODEV))
            elif not libc.make_tree_readonly(top):
                libc.mount(None, top, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)

        def bind(leaf: int) -> None:
            libc.mount(source, _fd_path(leaf), None, MS_BIND | MS_REC)

        self._mount(destination, is_dir, bind, adjust)
        if host and is_dir:
            self.host_folders.append(destination)

    def mount_mapped(self, source_fd: int, destination: str, *, rw: bool, is_dir: bool, userns_fd: int) -> bool:
        """Bind the host object source_fd at destination with ids mapped through userns_fd, as
        mount_bind would (recursive; nosuid, nodev, read-only unless rw). False, with nothing
        mounted, where the filesystem or the kernel refuses an id-mapped mount: the caller binds
        it unmapped."""
        try:
            tree = libc.clone_tree(source_fd)  # detached: its attributes may still change
        except OSError as exc:
            if exc.errno in _IDMAP_REFUSALS:
                return False
            raise SetupError(f"mount {destination}: {exc.strerror}") from None
        try:
            try:
                attributes = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (0 if rw else MOUNT_ATTR_RDONLY)
                libc.set_tree_attributes(tree, attributes, userns_fd=userns_fd)
            except OSError as exc:
                if exc.errno in _IDMAP_REFUSALS:
                    return False
                raise SetupError(f"mount {destination}: {exc.strerror}") from None
            if rw:  # writable at its top even where the host mounted it read-only, as mount_bind does
                libc.set_tree_attributes(tree, 0, MOUNT_ATTR_RDONLY, recursive=False)
            self._mount(destination, is_dir, lambda leaf: libc.attach_tree(tree, leaf))
        finally:
            os.close(tree)
        if is_dir:
            self.host_folders.append(destination)
        return True

    def mount_fs(self, fstype: str, destination: str, flags: int, data: str, source: str | None = None) -> None:
        def mount(leaf: int) -> None:
            libc.mount(source or fstype, _fd_path(leaf), fstype, flags, data)

        self._mount(destination, True, mount)


# The job's own tmpfs folders, each of its tmp_mb: mounted ahead at the usual size (prepare_root),
# resized at the job's start where its tmp_mb differs (finish_root), so a start makes no mount for them.
TMP_FOLDERS = ("/tmp", "/var/tmp", "/dev/shm")


def prepare_root(new_root: str) -> Tree:
    """The part of every job's root that does not depend on the job: done before a job asks (the
    TMP_FOLDERS at DEFAULT_TMP_MB, which is what most jobs ask for)."""
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    libc.mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    tree = Tree(new_root)
    _copy_system_files(new_root)
    ops: list[tuple[str, Callable[[Tree], None]]] = [
        ("/usr", lambda t: t.mount_bind("/usr", "/usr")),
        ("/proc", _mount_proc),
        ("/dev", _mount_dev),
    ]
    for path in [f"/{name}" for name in SYSTEM_DIRS] + [f"/etc/{name}" for name in ETC_ENTRIES]:
        if os.path.isdir(path) and not os.path.islink(path):
            ops.append((path, lambda t, p=path: t.mount_bind(p, p)))
    ops += [(path, lambda t, p=path: _mount_tmpfs(t, p, DEFAULT_TMP_MB)) for path in TMP_FOLDERS]
    _apply(tree, ops)
    tree.tmp_mb = DEFAULT_TMP_MB
    return tree


def finish_root(tree: Tree, plan: RootPlan) -> None:
    """Add what this job needs (its user, /work, /tmp sizes, mounts), then pivot into the root."""
    write_identity(plan)
    _size_tmp_folders(tree, plan.tmp_mb)
    ops: list[tuple[str, Callable[[Tree], None]]] = [("/work", lambda t: _mount_work(t, plan))]
    if plan.host_network and os.path.exists("/etc/resolv.conf"):
        resolv = "/etc/resolv.conf"
        ops.append((resolv, lambda t: t.mount_bind(resolv, resolv, is_dir=os.path.isdir(resolv))))
    userns = _job_mapping(tree, plan) if plan.binds else None
    try:
        for bind in plan.binds:
            ops.append((bind.destination, lambda t, b=bind: _mount_client_bind(t, b, userns)))
        _apply(tree, ops)
    finally:
        if userns is not None:
            os.close(userns)
    os.chdir(plan.new_root)
    libc.pivot_root(".", ".")
    libc.umount(".", libc.MNT_DETACH)
    os.chdir("/")
    libc.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _mount_client_bind(tree: Tree, bind: Bind, userns: int | None) -> None:
    """A source the client named: id-mapped to the requester where the job runs as someone else
    and the filesystem allows it, a plain bind otherwise."""
    try:
        _bind_at(tree, bind, bind.destination, userns)
    except SymlinkOnTheWay:
        resolved = os.readlink(_fd_path(bind.fd))
        if not bind.or_where_resolved or resolved == bind.destination:
            raise
        try:
            destination = check_destination(resolved, "python prefix")
        except SpecError:
            return  # in a folder of the sandbox's own (/usr/local/...): the symlink finds it there
        _bind_at(tree, bind, destination, userns)


def _bind_at(tree: Tree, bind: Bind, destination: str, userns: int | None) -> None:
    if userns is not None and tree.mount_mapped(bind.fd, destination, rw=bind.rw, is_dir=bind.is_dir, userns_fd=userns):
        return
    tree.mount_bind(_fd_path(bind.fd), destination, rw=bind.rw, is_dir=bind.is_dir)


def _job_mapping(tree: Tree, plan: RootPlan) -> int | None:
    """The user namespace of this job's id-mapped binds, or None where none is needed or the host
    refuses user namespaces (the binds are then plain, as on a host without id-mapped mounts)."""
    if not plan.maps_ids:
        return None
    assert plan.requester_uid is not None and plan.requester_gid is not None
    proc, requester, job = tree_path(tree, "/proc"), (plan.requester_uid, plan.requester_gid), (plan.uid, plan.gid)
    try:
        if plan.mapper is not None:
            return plan.mapper.namespace(proc, requester, job)
        return mapping_namespace(proc, requester, job)
    except OSError as exc:
        if exc.errno in _IDMAP_REFUSALS:
            return None
        raise SetupError(f"id-mapped mounts: {exc.strerror}") from None


def mapping_namespace(proc: str, requester: tuple[int, int], job: tuple[int, int]) -> int:
    """A handle on a new user namespace for an id-mapped mount that makes the job the requester:
    the requester's uid is the job's uid outside (uid_map "<requester> <job> 1", gids alike), so a
    file the requester owns is the job's and a file the job makes is the requester's. Every other
    id maps to itself, except the job's own, which is left unmapped: a file of anyone else shows
    its true owner and is theirs, never the job's (the job holds one uid and gid, so it owns
    nothing else), and the kernel refuses writes to a file whose owner is unmapped (a file of the
    job's user on the host, e.g. nobody's, is read-only to the job there).

    A child unshares CLONE_NEWUSER and waits while this process, privileged in the parent namespace,
    writes the maps (a process inside cannot map ids it does not hold) and opens the namespace
    through proc, a procfs of this process's pid namespace; the namespace outlives the child as long
    as the handle is open. Raises OSError where the host refuses (user namespaces off: EPERM/ENOSPC).
    """
    child = UserNamespaceChild()
    try:
        return child.namespace(proc, requester, job)
    finally:
        child.reap()


class UserNamespaceChild:
    """A child in a new user namespace of its own, waiting for its maps (see mapping_namespace).

    Making the child is the slow part of an id-mapped bind, so a job's init makes one ahead,
    before its job exists, and ends it (reap) before the job runs: it holds no descriptor but its
    own two pipes, and dies with the init's pid namespace. Given the native init (an fd: see
    launch.HostContext), the child is that binary in its mapper mode (native/init.c), spawned
    without copying this process: a forked copy of the Python init costs a millisecond or more to
    make, and as much again to tear down when it ends, which it does while a job starts.
    """

    def __init__(self, native_init: int | None = None) -> None:
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        done_r, done_w = os.pipe2(os.O_CLOEXEC)
        if native_init is not None:
            pid = _spawn_mapper(native_init, ready_w, done_r)
        else:
            pid = os.fork()
        if pid == 0:  # the child: in the new namespace, then wait to be told to end (a closed pipe)
            try:
                _close_all_but(ready_w, done_r)
                libc.unshare(libc.CLONE_NEWUSER)
                os.write(ready_w, b"1")
                os.read(done_r, 1)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(done_r)
        self.pid, self._ready, self._done = pid, ready_r, done_w

    def namespace(self, proc: str, requester: tuple[int, int], job: tuple[int, int]) -> int:
        """Write the maps (once: a namespace's maps are set once) and open the namespace."""
        if os.read(self._ready, 1) != b"1":
            raise OSError(errno.EPERM, "unshare(CLONE_NEWUSER) failed")
        folder = os.open(f"{proc}/{self.pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name, inside, outside in (("uid_map", requester[0], job[0]), ("gid_map", requester[1], job[1])):
                fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=folder)
                try:
                    os.write(fd, id_map(inside, outside).encode())  # one write: a map is set once
                finally:
                    os.close(fd)
            return os.open("ns/user", os.O_RDONLY | os.O_CLOEXEC, dir_fd=folder)
        finally:
            os.close(folder)
            self.end()  # single use: it exits while the binds are made

    def end(self) -> None:
        """Tell the child to end (the namespace lives on through any handle opened on it)."""
        if self._done != -1:
            os.close(self._done)
            self._done = -1

    def reap(self) -> None:
        self.end()
        if self._ready != -1:
            os.close(self._ready)
            self._ready = -1
            os.waitpid(self.pid, 0)


def _spawn_mapper(native_init: int, ready_w: int, done_r: int) -> int:
    """The native init in its mapper mode, with ready_w and done_r (it closes every other fd
    itself), default signal dispositions and nothing blocked; spawned (vfork and exec), not forked."""
    for fd in (ready_w, done_r):
        os.set_inheritable(fd, True)  # both are closed here once it runs: only the child keeps them
    catchable = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    argv = [INIT_NAME, "map", str(ready_w), str(done_r)]
    return os.posix_spawn(_fd_path(native_init), argv, {}, setsigmask=(), setsigdef=catchable)


def _close_all_but(*keep: int) -> None:
    """Close every descriptor above stderr except those kept (a forked child's inherited lines)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


_ID_END = 2**32 - 1  # (uid_t)-1 is no id


def id_map(inside: int, outside: int) -> str:
    """The lines of a uid_map or gid_map: inside shown as outside, every other id as itself except
    outside (taken) and inside (already mapped); at most four lines."""
    if inside == outside:
        return f"0 0 {_ID_END}\n"
    lines = [f"{inside} {outside} 1\n"]
    start = 0
    for gap in sorted((inside, outside)):
        if gap > start:
            lines.append(f"{start} {start} {gap - start}\n")
        start = gap + 1
    if start < _ID_END:
        lines.append(f"{start} {start} {_ID_END - start}\n")
    return "".join(lines)


def idmap_problem(path: str) -> str | None:
    """Why a bind of path could not be id-mapped on this host (None: it can), tried on a detached
    copy that is dropped at once: nothing is mounted anywhere. For the doctor; needs root."""
    try:
        userns = mapping_namespace("/proc", (0, 0), (65534, 65534))
    except OSError as exc:
        return f"no user namespace: {exc.strerror}"
    try:
        source = os.open(path, os.O_PATH | os.O_CLOEXEC)
        tree = None
        try:
            tree = libc.clone_tree(source)
            libc.set_tree_attributes(tree, MOUNT_ATTR_IDMAP, userns_fd=userns, recursive=False)
        except OSError as exc:
            return f"the kernel or the filesystem refuses ({exc.strerror})"
        finally:
            os.close(source)
            if tree is not None:
                os.close(tree)
    finally:
        os.close(userns)
    return None


def _apply(tree: Tree, ops: list[tuple[str, Callable[[Tree], None]]]) -> None:
    """Mount parents before children, whatever order the operations came in."""
    for _, operation in sorted(ops, key=lambda op: (op[0].count("/"), op[0])):
        operation(tree)


def _copy_system_files(root: str) -> None:
    os.mkdir(os.path.join(root, "etc"), 0o755)
    for name in SYSTEM_DIRS:
        if os.path.islink("/" + name):
            os.symlink(os.readlink("/" + name), os.path.join(root, name))
    for name in ETC_ENTRIES:
        path = "/etc/" + name
        if os.path.islink(path):
            os.symlink(os.readlink(path), os.path.join(root, "etc", name))
        elif os.path.isfile(path):
            with open(path, "rb") as src, open(os.path.join(root, "etc", name), "wb") as dst:
                dst.write(src.read())
    os.mkdir(os.path.join(root, "var"), 0o755)  # /var/tmp: a tmpfs of the job's (prepare_root)


# What this process last wrote to each identity file of its root (write_identity): an init's
# rehearsal writes a sample job's (nobody's, launch._rehearse_finish) before its job exists, and
# the job's own identity is most often the same, then left as it is. An init is the only writer
# of its root, which is a tmpfs of its own mount namespace.
_WRITTEN: dict[str, str] = {}


def write_identity(plan: RootPlan) -> None:
    """passwd and group holding the job's user, so whoami and getpass work; hostname and hosts.
    Each file is written with one write (no buffered file object: four system calls fewer a file),
    and only where it does not hold these bytes already."""
    group_name = "nogroup" if plan.gid == 65534 else plan.user
    files = {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\n{plan.user}:x:{plan.uid}:{plan.gid}::/work:/bin/sh\n",
        "group": f"root:x:0:\n{group_name}:x:{plan.gid}:\n",
        "hostname": plan.hostname + "\n",
        "hosts": f"127.0.0.1\tlocalhost {plan.hostname}\n::1\tlocalhost ip6-localhost\n",
    }
    if plan.resolv_conf is not None:
        files["resolv.conf"] = plan.resolv_conf
    for name, text in files.items():
        path = os.path.join(plan.new_root, "etc", name)
        if _WRITTEN.get(path) == text:
            continue
        data = text.encode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # open()'s mode
        try:
            if os.write(fd, data) != len(data):
                raise SetupError(f"/etc/{name}: written in part")
        finally:
            os.close(fd)
        _WRITTEN[path] = text


def _mount_proc(tree: Tree) -> None:
    tree.mount_fs("proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=invisible")
    for name in PROC_READONLY:
        path = "/proc/" + name
        inside = tree_path(tree, path)
        if os.path.exists(inside):
            tree.mount_bind(inside, path, is_dir=os.path.isdir(inside), host=False)
    for name in PROC_MASKED_FILES:
        if os.path.exists(tree_path(tree, "/proc/" + name)):
            tree.mount_bind("/dev/null", "/proc/" + name, is_dir=False, host=False)
    for name in PROC_MASKED_DIRS:
        if os.path.isdir(tree_path(tree, "/proc/" + name)):
            tree.mount_fs("tmpfs", "/proc/" + name, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0")


def tree_path(tree: Tree, path: str) -> str:
    return _fd_path(tree.root_fd) + path


def _mount_dev(tree: Tree) -> None:
    tree.mount_fs("tmpfs", "/dev", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    dev = tree_path(tree, "/dev")
    for name in DEVICES:
        tree.mount_bind("/dev/" + name, "/dev/" + name, rw=True, is_dir=False, host=False, devices=True)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("ptmx", "pts/ptmx"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, os.path.join(dev, name))
    tree.mount_fs("devpts", "/dev/pts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.mkdir(os.path.join(dev, "shm"), 0o755)
    libc.mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _mount_tmpfs(tree: Tree, destination: str, size_mb: int) -> None:
    tree.mount_fs("tmpfs", destination, MS_NOSUID | MS_NODEV, f"size={size_mb}m,mode=1777")


def _size_tmp_folders(tree: Tree, size_mb: int) -> None:
    """The TMP_FOLDERS, mounted by prepare_root, resized to size_mb where that differs (a remount
    keeps their flags and mode; they are empty still: nothing runs in the root before its job)."""
    if tree.tmp_mb == size_mb:
        return
    for path in TMP_FOLDERS:
        try:
            libc.mount(None, tree_path(tree, path), None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={size_mb}m")
        except OSError as exc:
            raise SetupError(f"mount {path}: {exc.strerror}") from None
    tree.tmp_mb = size_mb


def _mount_work(tree: Tree, plan: RootPlan) -> None:
    if plan.work_device is not None:  # the job's disk image, attached by its supervisor
        tree.mount_fs("ext4", "/work", MS_NOSUID | MS_NODEV, "", source=plan.work_device)
        top = tree_path(tree, "/work")  # a fresh filesystem (root made the job's by mkfs): 0700, empty
        os.chmod(top, 0o700)
        os.rmdir(os.path.join(top, "lost+found"))
        return
    if plan.work_dir is None:
        size = plan.tmp_mb if plan.work_mb is None else plan.work_mb
        tree.mount_fs("tmpfs", "/work", MS_NOSUID | MS_NODEV, f"size={size}m,mode=700,uid={plan.uid},gid={plan.gid}")
        return
    fd = os.open(plan.work_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tree.mount_bind(_fd_path(fd), "/work", rw=True, host=False)
    finally:
        os.close(fd)
