"""Who is asking, and what they may see and do.

A caller is the uid the kernel vouches for (SO_PEERCRED), never what a message claims. Roles come
from groups the admin names: root and the admin group see, stop and delete every job and may run
jobs under another owner's name; the viewer group reads every job but runs, stops and deletes
none; everyone else sees and changes only their own jobs. A job a caller may not see does not
exist for them (not_found, never forbidden, so ids do not leak).
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
from dataclasses import dataclass

from ..errors import ErrorReason, WorkerError
from ..sandbox.mounts import SetupError, check_source
from ..spec import JobRecord


class Role(str, enum.Enum):
    ADMIN = "admin"
    VIEWER = "viewer"
    USER = "user"


@dataclass(frozen=True)
class Caller:
    """Who is asking: the uid the kernel vouches for (SO_PEERCRED), and the role it has here."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str
    role: Role
    # the connecting process's umask (/proc/PID/status), for files the executor makes as the caller
    # (--artifacts): unknown, private
    umask: int = 0o077

    @property
    def sees_all(self) -> bool:
        return self.role in (Role.ADMIN, Role.VIEWER)

    @property
    def visible_owner(self) -> int | None:
        """The owner uid that lists and lookups are narrowed to (None: every job)."""
        return None if self.sees_all else self.uid

    def may_see(self, record: JobRecord) -> bool:
        return self.sees_all or record.owner_uid == self.uid

    def check_run(self) -> None:
        """Viewers read jobs; they neither run them nor hold them."""
        if self.role is Role.VIEWER:
            raise WorkerError(ErrorReason.FORBIDDEN, "viewers may read jobs but not run them")

    def check_owner(self, owner: str | None) -> None:
        """A job runs under its caller's name unless root or an admin names another."""
        if owner is not None and self.role is not Role.ADMIN:
            raise WorkerError(ErrorReason.FORBIDDEN, "only root or an admin may name another owner")

    def check_sources(self, paths: list[str]) -> None:
        """Every mount source and Python prefix of a request is one the caller may read, opened as
        them (sandbox/mounts.open_source, which the job's start repeats: the authoritative check)."""
        for path in paths:
            try:
                check_source(path, self.uid, self.gid, list(self.groups))
            except SetupError as exc:
                raise WorkerError(ErrorReason.INVALID, str(exc)) from None

    def check_write(self, record: JobRecord) -> None:
        """Stopping or deleting: admins any job, users their own, viewers none."""
        if self.role is Role.ADMIN or (self.role is not Role.VIEWER and self.uid == record.owner_uid):
            return
        raise WorkerError(ErrorReason.FORBIDDEN, f"not permitted to change job {record.id}")


def runs_as(caller: Caller, root_runs_as: str) -> tuple[int, int]:
    """The uid and gid a caller's job runs as: their own; root's jobs as the configured user."""
    if caller.uid != 0:
        return caller.uid, caller.gid
    try:
        entry = pwd.getpwnam(root_runs_as)
    except KeyError:
        raise WorkerError(ErrorReason.MISCONFIGURED, f"root_runs_as: no user {root_runs_as!r}") from None
    return entry.pw_uid, entry.pw_gid


class Roles:
    """The admin and viewer groups of this executor (by name; a group that does not exist grants nothing)."""

    def __init__(self, admin_group: str | None, viewer_group: str | None):
        self.admin_gid = _group_id(admin_group)
        self.viewer_gid = _group_id(viewer_group)

    def caller(self, uid: int, gid: int) -> Caller:
        """The caller with this uid (and primary gid, as the kernel reported them), with its role."""
        try:
            entry = pwd.getpwuid(uid)
            name, groups = entry.pw_name, tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except KeyError:
            name, groups = f"uid{uid}", (gid,)
        if uid == 0 or (self.admin_gid is not None and self.admin_gid in groups):
            role = Role.ADMIN
        elif self.viewer_gid is not None and self.viewer_gid in groups:
            role = Role.VIEWER
        else:
            role = Role.USER
        return Caller(uid, gid, groups, name, role)


def _group_id(name: str | None) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
