"""Holders: clients whose jobs end when they do.

A Jupyter server whose admin chose that its jobs stop with it keeps a connection to the executor
open (op "hold"); the jobs it and its kernels start name it as their holder. When that connection
closes, however the server ended (an orderly stop, a crash, SIGKILL: the kernel closes the socket
in every case), the executor stops those jobs. The claims are in the store, so after a restart of
the executor a holder has hold_grace_s to connect again before its jobs are stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import ErrorReason, WorkerError
from .store import JobStore

Key = tuple[int, str]


class Holds:
    def __init__(self, store: JobStore, grace_s: float, stop_jobs: Callable[[list[str]], None]):
        self.store = store
        self.grace_s = grace_s
        self.stop_jobs = stop_jobs
        self.connections: dict[Key, int] = {}
        self.pending: dict[Key, asyncio.TimerHandle] = {}
        self.closed = False

    def recover(self) -> None:
        """Holders recorded before a restart: each has the grace period, from now, to come back."""
        loop = asyncio.get_running_loop()
        for uid, holder in self.store.holders():
            if (uid, holder) not in self.connections:
                self.pending[(uid, holder)] = loop.call_later(self.grace_s, self.end, uid, holder)

    def connected(self, uid: int, holder: str) -> None:
        key = (uid, holder)
        timer = self.pending.pop(key, None)
        if timer is not None:
            timer.cancel()
        self.connections[key] = self.connections.get(key, 0) + 1
        self.store.add_holder(uid, holder)

    def disconnected(self, uid: int, holder: str) -> None:
        """The holder's connection closed from its side: its last one ends its jobs."""
        key = (uid, holder)
        self.connections[key] -= 1
        if self.connections[key] == 0:
            del self.connections[key]
            self.end(uid, holder)

    def end(self, uid: int, holder: str) -> None:
        if self.closed:
            return
        self.pending.pop((uid, holder), None)
        self.stop_jobs(self.store.release_holder(uid, holder))

    def check(self, uid: int, holder: str) -> None:
        """A job may name only a holder of the same uid that is connected (or may yet come back)."""
        if (uid, holder) not in self.connections and (uid, holder) not in self.pending:
            why = "the Jupyter server this job would end with has stopped"
            raise WorkerError(ErrorReason.CONFLICT, f"holder {holder!r} is not connected: {why}")

    def close(self) -> None:
        """The executor is stopping: claims stay in the store for the next start."""
        self.closed = True
        for timer in self.pending.values():
            timer.cancel()
        self.pending.clear()
