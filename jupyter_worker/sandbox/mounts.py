"""The job's root filesystem: a fresh tmpfs with read-only binds of the host's system files.

Runs in the job's init, inside its new mount namespace, before pivot_root. Sources a client named
(extra mounts, the Python prefix) are opened once, with the requester's own file permissions, and
bound from that open file; mount points are walked component by component without following
symlinks, and are only ever created on the sandbox's own tmpfs, never inside a host folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..limits import BY_FIELD
from ..spec import KERNEL_SOURCES
from . import libc
from .libc import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

# The size, in MiB, of each of /tmp, /dev/shm and a tmpfs /work when a job's limits set no tmp_mb
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
    "profile",
    "bash.bashrc",
)
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "latency_stats", "sched_debug", "kallsyms", "kmsg")
_AT_FDCWD = -100  # openat2 from the current folder (an absolute path ignores it)
PROC_MASKED_DIRS = ("acpi", "scsi", "asound", "firmware", "driver")


class SetupError(Exception):
    """A step of the sandbox setup failed; the message goes to the job's start error."""


@dataclass
class Bind:
    """A host object, already opened, to show at destination."""

    fd: int
    destination: str
    rw: bool
    is_dir: bool


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


@contextlib.contextmanager
def acting_as(uid: int, gid: int, groups: list[int]) -> Iterator[None]:
    """Resolve paths with someone else's file permissions (fsuid/fsgid, groups), then switch back."""
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
        self, destination: str, is_dir: bool, mount: Callable[[str], None], adjust: Callable[[str], None] | None = None
    ) -> None:
        """Mount on the leaf without following symlinks, then adjust the new mount's flags."""
        parent, name = self._walk(destination, is_dir)
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
        leaf = os.open(name, flags, dir_fd=parent)
        try:
            mount(_fd_path(leaf))
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

        self._mount(destination, is_dir, lambda leaf: libc.mount(source, leaf, None, MS_BIND | MS_REC), adjust)
        if host and is_dir:
            self.host_folders.append(destination)

    def mount_fs(self, fstype: str, destination: str, flags: int, data: str, source: str | None = None) -> None:
        self._mount(destination, True, lambda leaf: libc.mount(source or fstype, leaf, fstype, flags, data))


def prepare_root(new_root: str) -> Tree:
    """The part of every job's root that does not depend on the job: done before a job asks."""
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
    _apply(tree, ops)
    return tree


def finish_root(tree: Tree, plan: RootPlan) -> None:
    """Add what this job needs (its user, /work, /tmp sizes, mounts), then pivot into the root."""
    _write_identity(plan)
    ops: list[tuple[str, Callable[[Tree], None]]] = [
        ("/tmp", lambda t: _mount_tmpfs(t, "/tmp", plan.tmp_mb)),
        ("/dev/shm", lambda t: _mount_tmpfs(t, "/dev/shm", plan.tmp_mb)),
        ("/work", lambda t: _mount_work(t, plan)),
    ]
    if plan.host_network and os.path.exists("/etc/resolv.conf"):
        resolv = "/etc/resolv.conf"
        ops.append((resolv, lambda t: t.mount_bind(resolv, resolv, is_dir=os.path.isdir(resolv))))
    for bind in plan.binds:
        ops.append(
            (bind.destination, lambda t, b=bind: t.mount_bind(_fd_path(b.fd), b.destination, rw=b.rw, is_dir=b.is_dir))
        )
    _apply(tree, ops)
    os.chdir(plan.new_root)
    libc.pivot_root(".", ".")
    libc.umount(".", libc.MNT_DETACH)
    os.chdir("/")
    libc.mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


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
    os.mkdir(os.path.join(root, "var"), 0o755)
    os.symlink("/tmp", os.path.join(root, "var", "tmp"))


def _write_identity(plan: RootPlan) -> None:
    """passwd and group holding the job's user, so whoami and getpass work; hostname and hosts."""
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
        with open(os.path.join(plan.new_root, "etc", name), "w") as f:
            f.write(text)


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


def _mount_work(tree: Tree, plan: RootPlan) -> None:
    if plan.work_device is not None:  # the job's disk image, attached by its supervisor
        tree.mount_fs("ext4", "/work", MS_NOSUID | MS_NODEV, "", source=plan.work_device)
        top = tree_path(tree, "/work")  # a fresh filesystem (root made the job's by mkfs): 0700, empty
        os.chmod(top, 0o700)
        os.rmdir(os.path.join(top, "lost+found"))
        tree.host_folders.append("/work")  # kept after the job, like a bound work folder: no mount points made in it
        return
    if plan.work_dir is None:
        size = plan.tmp_mb if plan.work_mb is None else plan.work_mb
        tree.mount_fs("tmpfs", "/work", MS_NOSUID | MS_NODEV, f"size={size}m,mode=700,uid={plan.uid},gid={plan.gid}")
        return
    fd = os.open(plan.work_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        tree.mount_bind(_fd_path(fd), "/work", rw=True)
    finally:
        os.close(fd)
