"""Why a queued job waits, in the words its owner reads, and its place."""

from __future__ import annotations

from jupyter_worker.executor import waits


def test_the_reasons_name_the_cap_and_its_figures():
    assert waits.slots_full(4, 4) == "4 of 4 running slots in use"
    assert waits.own_cap(2) == "you have 2 jobs running, your maximum"
    assert waits.own_cap(1) == "you have 1 job running, your maximum"
    assert waits.disk_held(2048, 1536 << 20) == (
        "waiting for disk room: its 2048 MiB disk limit does not fit beside the running jobs' "
        "(1536 MiB free beyond the reserve)"
    )


def test_places_count_from_one_in_the_schedulers_order():
    assert waits.numbered([("a", "x"), ("b", "y")]) == {
        "a": {"position": 1, "reason": "x"},
        "b": {"position": 2, "reason": "y"},
    }
    assert waits.numbered([]) == {}
