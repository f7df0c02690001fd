"""A job's /work of a fixed size: an ext4 image on a loop device, so the kernel says ENOSPC.

One image a job, `<work_dir>.img` beside the job's work folder: a sparse file of disk_mb MiB
(it takes on the host only what the job wrote), formatted without a journal, attached to a free
loop device that clears itself when the last user of it goes (LO_FLAGS_AUTOCLEAR). The job's
supervisor makes and attaches it (JobDisk); the job's init mounts the device at /work inside the
job's own mount namespace, and nowhere else is it mounted: the mount goes with the job's last
process, then the device clears itself. While the job runs, its /work is reached through one of
its processes (`open_live`: /proc/PID/root/work, checked to be this image's filesystem). The
image stays as the job's kept /work: `view` mounts it read-only, in a private mount namespace of
a thread of its own, for as long as one listing or read takes. Deleting a job is unlinking the
image.

The job never gets the loop device or the image file (both root's alone, outside its root), so
the filesystem it writes is only ever written by the kernel's own ext4 code.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

from . import libc
from .libc import MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC

LOOP_CONTROL = "/dev/loop-control"
LOOP_CONTROL_DEVICE = os.makedev(10, 237)  # misc device 237: no other file passes for it
LOOP_CTL_GET_FREE = 0x4C82
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01
LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
BLOCK = 4096
# struct loop_info64 (device, inode, rdevice, offset, sizelimit; number, encrypt type, key size,
# flags; file name, crypt name, key; init[2]) and struct loop_config (fd, block size, info, reserved)
_LOOP_INFO64 = "5Q4I64s64s32s2Q"
_LOOP_CONFIG = struct.Struct("=II" + _LOOP_INFO64 + "8Q")
_LOOP_STATUS = struct.Struct("=" + _LOOP_INFO64)
_FLAGS_AT = 5 + 3  # index of lo_flags in the info's fields
MKFS = ("mkfs.ext4", "mke2fs")
_TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_ATTACH_TRIES = 16
FSTYPE = "ext4"

T = TypeVar("T")


class DiskError(Exception):
    """The disk limit cannot be set up: the message is the job's start error."""


def image_of(work_dir: str) -> str:
    """The image that holds the /work whose folder is work_dir."""
    return work_dir.rstrip("/") + ".img"


def problem() -> str | None:
    """Why a disk limit cannot be enforced on this host, or None when it can."""
    try:
        info = os.stat(LOOP_CONTROL)
    except OSError:
        return f"no loop devices ({LOOP_CONTROL} is missing; load the loop module)"
    if not stat.S_ISCHR(info.st_mode) or info.st_rdev != LOOP_CONTROL_DEVICE:
        return f"no loop devices ({LOOP_CONTROL} is not the loop control device)"
    if _mkfs() is None:
        return "mkfs.ext4 is not installed (Debian and Ubuntu: apt install e2fsprogs)"
    if not _kernel_has(FSTYPE):
        return "the kernel has no ext4 filesystem"
    return None


def _mkfs() -> str | None:
    for name in MKFS:
        found = shutil.which(name, path=_TOOL_PATH)
        if found:
            return found
    return None


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == [fstype] for line in f)
    except OSError:
        return False


def make_image(path: str, size_mb: int, uid: int, gid: int) -> None:
    """A new sparse image of size_mb MiB holding an empty ext4 whose root belongs to uid:gid.

    No journal (the image is thrown away or only read after a crash, never repaired), no reserved
    blocks (the job gets all of its limit), inode tables initialized lazily (formatting writes
    under a megabyte whatever the size)."""
    mkfs = _mkfs()
    if mkfs is None:
        raise DiskError(f"disk limit: {problem()}")
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
        try:
            os.ftruncate(fd, size_mb << 20)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DiskError(f"disk limit: cannot make the job's disk image: {exc.strerror}") from None
    options = f"lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner={uid}:{gid}"
    command = [mkfs, "-q", "-F", "-t", FSTYPE, "-b", str(BLOCK), "-m", "0", "-O", "^has_journal", "-E", options, path]
    done = subprocess.run(
        command, env={"PATH": _TOOL_PATH}, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        remove_image(path)
        raise DiskError(f"disk limit: formatting the job's disk failed: {done.stderr.strip()[:500]}")


def remove_image(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def attach(image: str, read_only: bool) -> tuple[int, str]:
    """A free loop device backed by image: its open descriptor and its path. The device clears
    itself once the descriptor is closed and nothing has it mounted."""
    mode = os.O_RDONLY if read_only else os.O_RDWR
    try:
        backing = os.open(image, mode | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise DiskError(f"disk image {image}: {exc.strerror}") from None
    try:
        control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        os.close(backing)
        raise DiskError(f"disk limit: no loop devices here ({LOOP_CONTROL}: {exc.strerror})") from None
    flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO | (LO_FLAGS_READ_ONLY if read_only else 0)
    try:
        for _ in range(_ATTACH_TRIES):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{number}"
            try:
                device = os.open(path, mode | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # its node is not there yet
            try:
                _configure(device, backing, flags, image)
            except OSError as exc:
                os.close(device)
                if exc.errno == errno.EBUSY:
                    continue  # another process took it between GET_FREE and now
                raise DiskError(f"disk limit: attaching a loop device failed: {exc.strerror}") from None
            return device, path
        raise DiskError("disk limit: no free loop device could be had")
    except OSError as exc:
        raise DiskError(f"disk limit: no loop device: {exc.strerror}") from None
    finally:
        os.close(control)
        os.close(backing)


def _configure(device: int, backing: int, flags: int, image: str) -> None:
    """LOOP_CONFIGURE (Linux 5.8) sets file and flags at once; older kernels take two calls."""
    name = os.fsencode(image)[-63:]
    info = [0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0]
    try:
        fcntl.ioctl(device, LOOP_CONFIGURE, _LOOP_CONFIG.pack(backing, BLOCK, *info, *[0] * 8))
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    fcntl.ioctl(device, LOOP_SET_FD, backing)
    try:
        fcntl.ioctl(device, LOOP_SET_STATUS64, _LOOP_STATUS.pack(*info))
    except OSError:
        fcntl.ioctl(device, LOOP_CLR_FD, 0)
        raise


def mount(device: str, target: str, flags: int) -> None:
    libc.mount(device, target, FSTYPE, flags)


def allocated_bytes(path: str) -> int:
    """Bytes a file takes on the host's disk (a sparse image: what was written to it)."""
    try:
        return os.lstat(path).st_blocks * 512
    except OSError:
        return 0


def detach(mountpoint: str) -> None:
    """Take a mount away, lazily if something still uses it; nothing there is fine."""
    try:
        libc.umount(mountpoint, libc.MNT_DETACH)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOENT, errno.EPERM):  # EPERM: not root, so nothing of ours
            raise


def backs(device: int, image: str) -> bool:
    """Whether the block device numbered device is a loop device backed by image."""
    link = f"/sys/dev/block/{os.major(device)}:{os.minor(device)}/loop/backing_file"
    try:
        with open(link) as f:
            return f.read().strip() == os.path.realpath(image)
    except OSError:
        return False


def open_live(pid: int, image: str) -> int | None:
    """An O_PATH fd of the /work a running job sees, through the mount namespace of one of its
    processes (/proc/PID/root/work), if it is the filesystem of image; else None (the job ended,
    the pid went to another process, the job's root is not built yet)."""
    try:
        proc = os.open(f"/proc/{int(pid)}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except (OSError, ValueError, TypeError):
        return None
    try:
        root = os.open("root/work", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=proc)
    except OSError:
        return None
    finally:
        os.close(proc)
    if backs(os.fstat(root).st_dev, image):
        return root
    os.close(root)
    return None


class JobDisk:
    """A job's disk as its supervisor holds it: the image made and attached; `device` is what the
    job's init mounts as /work (mounts.py). Nothing is mounted on the host: a mount there would be
    copied into every sandbox prepared meanwhile and outlive the job. Once the job runs, `watch`
    keeps a handle on its /work for its usage; `close` lets the device go."""

    def __init__(self, work_dir: str, size_mb: int, uid: int, gid: int):
        self.image = image_of(work_dir)
        make_image(self.image, size_mb, uid, gid)
        try:
            self.fd, self.device = attach(self.image, read_only=False)
        except DiskError:
            remove_image(self.image)
            raise
        self.root: int | None = None

    @classmethod
    def held(cls, image: str, root: int | None) -> JobDisk:
        """The disk of a running job handed over by its supervisor (monitor.Handover): only the
        handle on its /work, root (None: the job's /work could not be reached)."""
        disk = cls.__new__(cls)
        disk.image, disk.fd, disk.device, disk.root = image, -1, "", root
        return disk

    def watch(self, pid: int) -> None:
        """The job's init has mounted the device: hold its /work (for statvfs), not the device."""
        self.root = open_live(pid, self.image)
        os.close(self.fd)
        self.fd = -1

    def used_bytes(self) -> int:
        if self.root is None:
            return 0
        info = os.fstatvfs(self.root)
        return max(0, (info.f_blocks - info.f_bfree) * info.f_frsize)

    def close(self) -> None:
        """Once the job's processes are gone: its filesystem is unmounted with them, written out
        as this last handle closes, and the loop device clears itself."""
        for fd in (self.fd, self.root):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.fd, self.root = -1, None


def view(work_dir: str, read: Callable[[int], T]) -> T:
    """read(fd of the root of a kept /work), the image mounted read-only (nosuid, nodev, noexec)
    on work_dir for the call's length, in a private mount namespace of a thread made for it: the
    host's mount table never shows it, and the thread's end takes mount and device away whatever
    happens. The caller waits for it."""
    outcome: list = []

    def run() -> None:
        try:
            libc.unshare(libc.CLONE_NEWNS)  # this thread's alone (it implies its own CLONE_FS)
            libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
            device_fd, device = attach(image_of(work_dir), read_only=True)
            try:
                mount(device, work_dir, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
            finally:
                os.close(device_fd)
            try:
                root = os.open(work_dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    outcome.append((True, read(root)))
                finally:
                    os.close(root)
            finally:
                detach(work_dir)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="jupyter-worker-view", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
