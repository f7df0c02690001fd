"""The job's seccomp deny-list, built with libseccomp (pyseccomp bindings).

Namespaces do the isolation; this list removes the kernel surfaces that namespaces do not cover
(keyrings, BPF, perf, ptrace), the calls that would let a job build a new sandbox of its own or leave
this one (mount, unshare, setns, pivot_root, namespace clone flags), terminal input injection
(TIOCSTI/TIOCLINUX, matched on the low 32 bits so high-bit variants fail too), io_uring and
userfaultfd, and every non-native ABI (x32 and i386 calls are killed). Setting a setuid or setgid
bit fails (chmod family, and the mode of open/creat/mknod): inside the job it grants nothing (no
new privileges), outside it would, on a file left in a mount the job writes (an id-mapped mount of
root's folder makes the job's files root's); openat2, whose mode seccomp cannot read, reports ENOSYS.
"""

from __future__ import annotations

import ctypes
import errno
import stat
import tempfile
import termios

import pyseccomp as seccomp

from . import libc
from .libc import CLONE_NEW_ANY

DENIED_SYSCALLS = (
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "syslog",
    "vhangup",
    "iopl",
    "ioperm",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
)
TIOCLINUX = 0x541C
# The argument that carries a file mode, for each call that sets or creates one.
_MODE_ARGUMENT = {
    "chmod": 1,
    "fchmod": 1,
    "fchmodat": 2,
    "fchmodat2": 2,
    "open": 2,
    "openat": 3,
    "creat": 1,
    "mknod": 1,
    "mknodat": 2,
}
_AF_VSOCK = 40
_LOW_32 = 0xFFFFFFFF


def build_filter() -> seccomp.SyscallFilter:
    """A filter that allows everything not named above."""
    deny = seccomp.ERRNO(errno.EPERM)
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    flt.set_attr(seccomp.Attr.CTL_NNP, 0)
    for name in DENIED_SYSCALLS:
        flt.add_rule(deny, name)
    for request in (termios.TIOCSTI, TIOCLINUX):
        flt.add_rule(deny, "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, _LOW_32, request))
    for flag in _namespace_flags():
        flt.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory seccomp cannot read: make libc fall back to clone.
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for name, argument in _MODE_ARGUMENT.items():
        for bit in (stat.S_ISUID, stat.S_ISGID):
            flt.add_rule(deny, name, seccomp.Arg(argument, seccomp.MASKED_EQ, bit, bit))
    flt.add_rule(seccomp.ERRNO(errno.ENOSYS), "openat2")  # its mode is in memory: callers fall back to openat
    flt.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, _AF_VSOCK))
    return flt


def _namespace_flags() -> list[int]:
    return [bit for bit in (1 << n for n in range(32)) if CLONE_NEW_ANY & bit]


def compile_filter() -> bytes:
    """The filter as a BPF program, compiled once by the spawner and loaded by every job."""
    with tempfile.TemporaryFile() as out:
        build_filter().export_bpf(out)
        out.seek(0)
        return out.read()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2


class LoadableFilter:
    """A compiled filter laid out in memory ahead of time, so the job only makes the one call."""

    def __init__(self, program: bytes):
        self._buffer = ctypes.create_string_buffer(program, len(program))
        self._prog = _SockFprog(len(program) // 8, ctypes.cast(self._buffer, ctypes.c_void_p))

    def install(self) -> None:
        """Filter the calling thread from now on; needs no_new_privs (or CAP_SYS_ADMIN)."""
        libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(self._prog))
