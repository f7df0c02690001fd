"""Fair shares of what a server holds open for its requesters: REST waits (server/waits.py) and
websockets (handlers._Stream), each of which also costs the server's user a connection at the
executor (Policy.max_connections_per_user) or a future here.

A server is one user's, but under JupyterHub others reach it too (a reader with
custom:jupyter-worker:read, a service with :run). No one requester may hold more than its share,
and the others together never take the owner's: one of them holding websockets by the dozen
would otherwise use up the owner's executor connections, locking the owner's own kernels, CLI and
panel out of the executor.
"""

from __future__ import annotations

from ..errors import ErrorReason, WorkerError

OWNER = None  # the requester key of the server's owner (handlers.requester)


class Shares:
    """What each requester holds at once of one kind of thing (`what`, plural words)."""

    def __init__(self, what: str):
        self.what = what
        self.held: dict[str | None, int] = {}  # by requester (OWNER: the server's owner)
        self.count = 0

    def take(self, requester: str | None, total: int, per_requester: int) -> None:
        """One more for the requester, or busy: beyond `total` for the server, beyond
        `per_requester` for the requester, or for another requester than the owner, into the
        owner's share (the others together hold at most total - per_requester)."""
        if self.count >= total:
            raise WorkerError(ErrorReason.BUSY, f"too many {self.what}: this server has {total} at once")
        if self.held.get(requester, 0) >= per_requester:
            raise WorkerError(
                ErrorReason.BUSY,
                f"too many {self.what}: you have {per_requester} on this server at once, the most one requester may",
            )
        if requester is not OWNER and self.count - self.held.get(OWNER, 0) >= total - per_requester:
            kept = f"too many {self.what}: the rest of this server's are kept for its owner"
            raise WorkerError(ErrorReason.BUSY, kept)
        self.held[requester] = self.held.get(requester, 0) + 1
        self.count += 1

    def give_back(self, requester: str | None) -> None:
        self.count -= 1
        self.held[requester] -= 1
        if not self.held[requester]:
            del self.held[requester]
