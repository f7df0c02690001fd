"""Pure logic, tested without root, an executor, cgroups or a Jupyter server: `pytest tests/unit`
runs in seconds as any user.

Two fixtures that the whole suite uses automatically are replaced here by ones that do nothing, as
these tests make nothing they would check or clean up.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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
