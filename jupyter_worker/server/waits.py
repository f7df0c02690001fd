"""GET jobs/{id}?wait_s=N: every waiting request of one server shares ONE watch of the executor.

A watch per request would hold an executor connection per request for up to MAX_WAIT_S: a user
firing waits and dropping them would use up their connections at the executor, and a server the
executor shows every job (root, admin: no per-user caps) its global max_connections. Here the
watch is opened when the first wait begins and closed when the last one ends, and its changes fan
out to the waiting requests by job id; a request's wait ends (and leaves) when its client goes.
At most MAX_WAITS waits at once per server, and at most MAX_WAITS_PER_REQUESTER of them for any one
requester (the server's owner, or another hub user or service its worker scopes let in), the owner's
share kept for them (server/shares.py). More are refused as busy; a plain GET (no wait_s) is never
refused for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ..spec import JobRecord
from .handlers import _ExecutorStream
from .shares import OWNER, Shares

MAX_WAITS = 1000  # waiting requests of one server at once: each is a future here and an HTTP connection
MAX_WAITS_PER_REQUESTER = 250  # of those, one requester's; the owner's share is kept for them


class JobWaits:
    """The shared watch and the requests waiting on it."""

    def __init__(self, socket: str):
        self.socket = socket
        self._waiting: dict[str, set[asyncio.Future[JobRecord]]] = {}
        self.shares = Shares("waiting requests")
        self._watch: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Future[None] | None = None

    @property
    def watching(self) -> bool:
        """Whether the shared watch (its executor connection) is open."""
        return self._watch is not None

    @property
    def count(self) -> int:
        """Waits at once."""
        return self.shares.count

    @property
    def held(self) -> dict[str | None, int]:
        """Waits at once by requester."""
        return self.shares.held

    async def until_ended(
        self,
        job_id: str,
        reread: Callable[[], Awaitable[JobRecord]],
        wait_s: float,
        gone: asyncio.Future[None],
        requester: str | None = OWNER,
    ) -> JobRecord:
        """The job once it has ended, or as it is after wait_s seconds or once `gone` is done (the
        client went). The request is registered and the watch subscribed BEFORE the job is read
        again, so an ending between the watch opening and that read is not missed. `requester`:
        whose wait it is (handlers.requester), for the shares kept (server/shares.py)."""
        self.shares.take(requester, MAX_WAITS, MAX_WAITS_PER_REQUESTER)
        ended: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(job_id, set())
        waiters.add(ended)
        try:
            if self._watch is None:
                self._subscribed = asyncio.get_running_loop().create_future()
                self._subscribed.add_done_callback(_retrieved)
                self._watch = asyncio.create_task(self._run(self._subscribed))
            assert self._subscribed is not None
            await asyncio.shield(self._subscribed)  # a waiter cancelled does not cancel the shared subscription
            latest = await reread()  # outside the timeout: a request of the shared client is never cut off halfway
            if latest.finished:
                return latest
            await asyncio.wait({ended, gone}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
            if ended.done():
                return ended.result()  # the ended job, or the watch's failure
            return latest if gone.done() else await reread()
        finally:
            waiters.discard(ended)
            if not waiters:
                self._waiting.pop(job_id, None)
            if ended.done() and not ended.cancelled():
                ended.exception()  # a failure no one asked for is not logged as never retrieved
            self.shares.give_back(requester)
            if self.count == 0:
                self.close()

    def close(self) -> None:
        """Closes the watch (its connection); the next wait opens another."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    async def _run(self, subscribed: asyncio.Future[None]) -> None:
        changes = _ExecutorStream(self.socket).changes()
        try:
            await anext(changes)
            subscribed.set_result(None)
            while True:
                changed = await anext(changes)
                if changed is not None and changed.finished:
                    for ended in self._waiting.get(changed.id, ()):
                        if not ended.done():
                            ended.set_result(changed)
        except Exception as exc:  # whatever ended the watch ends each wait on it, as it would its own
            if self._watch is asyncio.current_task():
                self._watch = None  # the next wait opens a new watch
            if not subscribed.done():
                subscribed.set_exception(exc)
            for waiters in self._waiting.values():
                for ended in waiters:
                    if not ended.done():
                        ended.set_exception(exc)
        finally:
            await changes.aclose()


def _retrieved(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
