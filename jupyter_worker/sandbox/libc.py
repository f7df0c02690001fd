"""Thin ctypes bindings for the Linux calls Python 3.11's os module lacks.

Each wrapper raises OSError with the errno and the call's name, so a failed setup step reads as
e.g. "mount /usr: [Errno 1] Operation not permitted" in the job's start error.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ANY = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000


_SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """open(2) with the kernel's resolve restrictions (RESOLVE_*): Linux 5.6 and later."""
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    return _check(_libc.syscall(_SYS_OPENAT2, dirfd, _b(path), ctypes.byref(how), ctypes.sizeof(how)), path)


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


SPLICE_F_NONBLOCK = 2
_libc.tee.restype = ctypes.c_ssize_t
_libc.tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]


def tee(fd_in: int, fd_out: int, length: int, flags: int = 0) -> int:
    """Copy up to length bytes from one pipe to another without consuming them (tee(2)); 0 at
    the end of fd_in; BlockingIOError when fd_in is empty (with SPLICE_F_NONBLOCK)."""
    result = _libc.tee(fd_in, fd_out, length, flags)
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))  # errno.EAGAIN makes it a BlockingIOError
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    args = (ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return _check(_libc.prctl(option, *args), f"prctl({option})")


def setfsuid(uid: int) -> None:
    """Switch the ids used for file access; setfsuid cannot report failure, so read it back."""
    _libc.setfsuid(uid)
    if _libc.setfsuid(-1) != uid:
        raise OSError(1, f"setfsuid({uid}) did not take effect")


def setfsgid(gid: int) -> None:
    _libc.setfsgid(gid)
    if _libc.setfsgid(-1) != gid:
        raise OSError(1, f"setfsgid({gid}) did not take effect")


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def make_tree_readonly(path: str) -> bool:
    """Make a mount and every mount beneath it read-only, nosuid, nodev in one call.

    Returns False where the kernel predates mount_setattr (5.12), so the caller can fall back.
    """
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    result = _libc.syscall(_SYS_MOUNT_SETATTR, -100, _b(path), _AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr))
    if result == -1 and ctypes.get_errno() == 38:
        return False
    _check(result, f"mount_setattr {path}")
    return True


def clone_tree(fd: int) -> int:
    """A detached copy of the mount tree at fd (an O_PATH handle) and everything mounted beneath it,
    as a new close-on-exec handle (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE), Linux 5.2): not yet
    visible anywhere, so its attributes, an id-mapping among them, can still be changed."""
    flags = _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_EMPTY_PATH | _AT_RECURSIVE
    return _check(_libc.syscall(_SYS_OPEN_TREE, fd, b"", ctypes.c_uint(flags)), "open_tree")


def set_tree_attributes(fd: int, attr_set: int, attr_clr: int = 0, userns_fd: int = 0, recursive: bool = True) -> None:
    """mount_setattr(2) on the mount at fd (and beneath it when recursive): MOUNT_ATTR_* flags set
    and cleared; with MOUNT_ATTR_IDMAP, ids are mapped through the user namespace userns_fd."""
    attr = _MountAttr(attr_set, attr_clr, 0, userns_fd)
    flags = _AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0)
    result = _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", ctypes.c_uint(flags), ctypes.byref(attr), ctypes.sizeof(attr))
    _check(result, "mount_setattr")


def attach_tree(fd: int, target_fd: int) -> None:
    """move_mount(2): show the detached tree fd on the mount point target_fd (an O_PATH handle)."""
    flags = _MOVE_MOUNT_F_EMPTY_PATH | _MOVE_MOUNT_T_EMPTY_PATH
    _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", target_fd, b"", ctypes.c_uint(flags)), "move_mount")


def last_capability() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def empty_bounding_set() -> None:
    """No exec can ever grant a capability again; the caller keeps those it has until setresuid."""
    for cap in range(last_capability() + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


_SYS_CAPGET = 125
_SYS_CAPSET = 126
_CAP_VERSION_3 = 0x20080522


def clear_inheritable_capabilities() -> None:
    """capget, inheritable set to none, capset: an inheritable set (an older container runtime leaves
    it full) would otherwise outlive an exec as root, and the program exec'd would keep everything."""
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # two of {effective, permitted, inheritable}
    _check(_libc.syscall(_SYS_CAPGET, header, data), "capget")
    data[2] = data[5] = 0
    _check(_libc.syscall(_SYS_CAPSET, header, data), "capset")


# inotify(7): the executor wakes a job's followers when its log grows, instead of polling it.
IN_MODIFY = 0x00000002
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
_INOTIFY_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)


def inotify_init() -> int:
    """A non-blocking, close-on-exec inotify descriptor."""
    return _check(_libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")


def inotify_add_watch(fd: int, path: str, mask: int) -> int:
    """A watch descriptor; the same one again for a path already watched through fd."""
    return _check(_libc.inotify_add_watch(fd, _b(path), ctypes.c_uint32(mask)), path)


def inotify_rm_watch(fd: int, wd: int) -> None:
    _check(_libc.inotify_rm_watch(fd, wd), "inotify_rm_watch")


def inotify_events(data: bytes) -> list[tuple[int, int]]:
    """(watch descriptor, mask) of each event in what a read of an inotify descriptor returned."""
    events, offset = [], 0
    while offset + _INOTIFY_EVENT.size <= len(data):
        wd, mask, _, length = _INOTIFY_EVENT.unpack_from(data, offset)
        events.append((wd, mask))
        offset += _INOTIFY_EVENT.size + length
    return events
