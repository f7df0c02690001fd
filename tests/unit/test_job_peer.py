"""The executor tells a process inside a job from any other by its cgroup (cgroups.in_a_job),
and refuses when it cannot tell."""

from __future__ import annotations

import os

from jupyter_worker.sandbox import cgroups


def test_this_process_is_not_in_a_job():
    assert cgroups.in_a_job(os.getpid()) is False


def test_a_process_that_cannot_be_seen_counts_as_in_a_job():
    assert cgroups.in_a_job(0) is True  # SO_PEERCRED's pid for a peer outside our pid namespace
    assert cgroups.in_a_job(2**22 + 1) is True  # above pid_max: gone


def test_a_job_cgroup_path_is_told_from_the_executors_own_and_from_look_alikes():
    job = "/system.slice/jupyter-worker.service/jupyter-worker/" + "0123456789abcdef" * 2
    assert cgroups._JOB_CGROUP.search(job)
    assert cgroups._JOB_CGROUP.search(job + "/child")
    assert not cgroups._JOB_CGROUP.search("/system.slice/jupyter-worker.service/jupyter-worker-executor")
    assert not cgroups._JOB_CGROUP.search("/user.slice/jupyter-worker/not-a-job")
    assert not cgroups._JOB_CGROUP.search("/jupyter-worker/" + "0123456789abcdef" * 2 + "0")
