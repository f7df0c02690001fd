"""Pure logic, tested without root, an executor, cgroups or a Jupyter server: `pytest tests/unit`
runs in seconds as any user.

Two fixtures that the whole suite uses automatically are replaced here by ones that do nothing, as
these tests make nothing they would check or clean up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jupyter_worker.spec import JobRecord


@pytest.fixture(scope="session")
def no_residue_after_suite() -> Iterator[None]:
    """Pure logic leaves no cgroups, processes, mounts or links; the suite's check would also see
    those of an executor running on this machine, which is no fault of these tests."""
    yield


@pytest.fixture
def jp_server_cleanup() -> Iterator[None]:
    """pytest_jupyter's version makes a Jupyter ServerApp after every test (with a runtime folder in
    HOME, which an unprivileged user such as nobody may not have) to clean it up; no test here
    starts one."""
    yield


def make_record(**fields: Any) -> JobRecord:
    """A job record as the executor would send it: alice's, with the fields given on top."""
    data = {
        "id": "0123456789abcdef0123456789abcdef",
        "name": "napper",
        "owner": "alice",
        "owner_uid": 1000,
        "command": ["sleep", "300"],
        "status": "RUNNING",
        "limits": {},
        "network": "none",
        "created_at": 1.0,
        **fields,
    }
    return JobRecord.from_dict(data)
