"""The Slurm backend through the other doors a user has: the CLI (run --wait, status), the doctor
and --artifacts; and an executor without the backend refusing it in words."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Iterator

import pytest

from jupyter_worker.errors import ErrorReason, WorkerError
from tests.executor.conftest import Daemon, as_user, folder_of, run_as, started_daemon, wait_for

pytestmark = pytest.mark.slurm

USER = "jwtest-alice"


@pytest.fixture(scope="module")
def head(slurm_cluster) -> Iterator[Daemon]:
    with started_daemon(slurm_cluster.head_config(poll_s=0.2, linger_s=60)) as daemon:
        yield daemon


def cli(daemon: Daemon, *argv: str, cwd: str = "/tmp") -> subprocess.CompletedProcess:
    """`jupyter-worker ARGV` as the user, against the head."""
    entry = pwd.getpwnam(USER)
    env = {"PATH": os.environ["PATH"], "HOME": entry.pw_dir, "JUPYTER_WORKER_SOCKET": daemon.socket}
    return subprocess.run(
        [sys.executable, "-m", "jupyter_worker.cli", *argv],
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_wait_with_backend_slurm_prints_the_jobs_output_and_exits_with_its_code(slurm_cluster, head):
    done = cli(head, "run", "--backend", "slurm", "--no-cwd", "--wait", "--", "sh", "-c", "echo from-node; exit 4")
    assert done.returncode == 4, done.stderr
    assert "from-node" in done.stdout


def test_status_says_the_backend_the_node_and_the_slurm_job(slurm_cluster, head):
    job = run_as(head, USER, {"command": ["true"], "backend": "slurm", "placement": {"partition": "only-n2"}})
    wait_for(lambda: as_user(USER, lambda: _finished(head, job.id)), 60, "the job to end")
    shown = cli(head, "status", job.id[:8])
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("Backend:"))
    assert "slurm" in line and "node n2" in line and "partition only-n2" in line and "slurm_job_id" in line


def _finished(daemon: Daemon, job_id: str) -> bool:
    from jupyter_worker.client import Client  # noqa: PLC0415 - in the user's process

    return Client(daemon.socket).get(job_id).finished


def test_the_doctor_shows_the_slurm_backend_and_its_partitions(head):
    def partitions_known() -> bool:
        shown = cli(head, "doctor")
        return "slurm: partitions" in shown.stdout and "only-n1" in shown.stdout and shown.stdout

    report = wait_for(partitions_known, 60, "the doctor to list the partitions")
    assert "backends: local, slurm" in report


def test_artifacts_of_a_slurm_job_come_back_into_the_users_folder(head):
    alice = pwd.getpwnam(USER)
    destination = folder_of(alice)
    script = "mkdir -p /work/res && echo 42 > /work/res/answer.txt"
    job = run_as(
        head, USER, {"command": ["sh", "-c", script], "backend": "slurm", "artifacts": {"destination": destination}}
    )
    wait_for(lambda: as_user(USER, lambda: _finished(head, job.id)), 60, "the job to end")
    copied = os.path.join(destination, job.id[:8], "res", "answer.txt")
    with open(copied) as f:
        assert f.read() == "42\n"
    assert os.stat(copied).st_uid == alice.pw_uid


def test_an_executor_without_the_slurm_backend_refuses_it_in_words(users):
    with started_daemon([]) as daemon:
        with pytest.raises(WorkerError) as refused:
            run_as(daemon, USER, {"command": ["true"], "backend": "slurm"})
    assert refused.value.reason is ErrorReason.UNSUPPORTED
    assert "backend 'slurm' is not enabled here" in refused.value.message
