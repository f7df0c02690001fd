"""server/shares.py: the fair shares a server keeps of its waits and websockets (pure logic)."""

from __future__ import annotations

import pytest

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.server.shares import OWNER, Shares


def refused(shares: Shares, requester: str | None, words: str) -> None:
    with pytest.raises(WorkerError) as caught:
        shares.take(requester, 10, 3)
    assert caught.value.reason is ErrorReason.BUSY and words in caught.value.message


def test_one_requester_gets_at_most_its_share_and_gets_it_back_when_it_gives_back():
    shares = Shares("things")
    for _ in range(3):
        shares.take("user:carol", 10, 3)
    refused(shares, "user:carol", "you have 3")
    shares.give_back("user:carol")
    shares.take("user:carol", 10, 3)
    assert shares.held == {"user:carol": 3} and shares.count == 3


def test_the_others_together_never_take_the_owners_share_and_the_owner_gets_it():
    shares = Shares("things")
    for name in ("user:carol", "user:dave"):
        for _ in range(3):
            shares.take(name, 10, 3)
    shares.take("service:runner", 10, 3)  # 7 = 10 - 3: the others' whole
    refused(shares, "service:runner", "kept for its owner")
    for _ in range(3):
        shares.take(OWNER, 10, 3)
    refused(shares, OWNER, "this server has 10")


def test_every_share_given_back_leaves_nothing_held():
    shares = Shares("things")
    for requester in (OWNER, "user:carol", OWNER):
        shares.take(requester, 10, 3)
    for requester in ("user:carol", OWNER, OWNER):
        shares.give_back(requester)
    assert shares.held == {} and shares.count == 0
