"""Pure rules behind a user's paths in a job: which destinations are the user's to name, and the
id maps of an id-mapped bind (sandbox/mounts.id_map)."""

from __future__ import annotations

import itertools

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.sandbox.mounts import id_map
from jupyter_worker.spec import Mount, check_destination

ALL_IDS = 2**32 - 1  # 0 .. 4294967294; (uid_t)-1 is no id


def parse(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(n) for n in line.split()) for line in text.splitlines()]


def mapping(lines: list[tuple[int, int, int]], inside: int) -> int | None:
    for first, lower, count in lines:
        if first <= inside < first + count:
            return lower + inside - first
    return None


@pytest.mark.parametrize(("requester", "job"), [(0, 65534), (4242, 65534), (65534, 0), (4294967294, 3), (7, 6)])
def test_the_id_map_shows_the_requester_as_the_job_and_every_other_id_as_itself_but_the_jobs(requester, job):
    lines = parse(id_map(requester, job))
    assert len(lines) <= 4
    assert mapping(lines, requester) == job
    for other in {0, 1, requester - 1, requester + 1, job - 1, job + 1, 65533, 65535, ALL_IDS - 1} - {requester, job}:
        if 0 <= other < ALL_IDS:
            assert mapping(lines, other) == other
    assert mapping(lines, job) is None  # the job's own id on disk is nobody's there
    insides = sorted((first, first + count) for first, _, count in lines)
    outsides = sorted((lower, lower + count) for _, lower, count in lines)
    for ranges in (insides, outsides):  # the kernel refuses overlapping ranges
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ranges))
    assert max(end for _, end in outsides) <= ALL_IDS


def test_the_id_map_of_a_job_running_as_its_requester_is_the_identity():
    assert parse(id_map(1000, 1000)) == [(0, 0, ALL_IDS)]


@pytest.mark.parametrize("path", ["/dev/shm/nb", "/dev/shm/a/b", "/tmp/nb", "/var/tmp/venv", "/work/proj", "/var/tmp"])
def test_a_users_folder_under_the_jobs_private_folders_may_be_a_destination(path):
    assert check_destination(path, "mount") == path
    assert Mount(path, path).destination == path


@pytest.mark.parametrize("path", ["/dev/shm", "/dev/shmx", "/dev/shm/../pts", "/dev/pts/x", "/dev"])
def test_dev_and_dev_shm_itself_stay_the_sandboxs(path):
    with pytest.raises(SpecError):
        check_destination(path, "mount")
