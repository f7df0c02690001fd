"""A job's backend and placement: parsed once, at the boundary, into the request's types."""

from __future__ import annotations

import argparse

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.flags import add_job_flags, request_from_flags
from jupyter_worker.spec import BackendName, JobRecord, JobRequest, JobStatus, Placement


def test_a_request_names_no_backend_and_runs_locally():
    request = JobRequest.from_dict({"command": ["true"]})
    assert request.backend is BackendName.LOCAL and request.placement is None
    assert request.to_dict()["backend"] == "local"


def test_a_slurm_request_keeps_its_partition_account_and_qos():
    body = {"command": ["true"], "backend": "slurm", "placement": {"partition": "debug", "qos": "short"}}
    request = JobRequest.from_dict(body)
    assert request.backend is BackendName.SLURM
    assert request.placement == Placement(partition="debug", qos="short")
    assert request.to_dict()["placement"] == {"partition": "debug", "qos": "short"}


@pytest.mark.parametrize("backend", ["kubernetes", "", 1, None, ["slurm"]])
def test_an_unknown_backend_is_refused_in_one_line(backend):
    with pytest.raises(SpecError, match=r"backend: .* is not one of local, slurm"):
        JobRequest.from_dict({"command": ["true"], "backend": backend})


@pytest.mark.parametrize(
    "placement",
    [
        {"partition": "debug --uid=0"},
        {"partition": "a" * 65},
        {"account": "x\ny"},
        {"qos": 5},
        {"partition": "-"},
        {"nodes": "n1"},
        "debug",
    ],
)
def test_a_placement_that_is_not_plain_names_is_refused(placement):
    with pytest.raises(SpecError):
        JobRequest.from_dict({"command": ["true"], "backend": "slurm", "placement": placement})


def test_a_partition_for_a_local_job_is_refused_rather_than_ignored():
    with pytest.raises(SpecError, match="add backend slurm"):
        JobRequest.from_dict({"command": ["true"], "placement": {"partition": "debug"}})


def test_empty_placement_fields_mean_none():
    request = JobRequest.from_dict({"command": ["true"], "backend": "slurm", "placement": {"partition": ""}})
    assert request.placement is None


def test_the_flags_build_a_slurm_request():
    parser = add_job_flags(argparse.ArgumentParser())
    args = parser.parse_args(["--backend", "slurm", "--partition", "debug", "--account", "lab", "--", "true"])
    request = request_from_flags(args)
    assert request.backend is BackendName.SLURM and request.placement == Placement("debug", "lab")


def test_a_record_says_where_it_runs_and_reads_back():
    record = JobRecord.from_dict(
        {
            "id": "x",
            "name": "n",
            "owner": "alice",
            "owner_uid": 1000,
            "command": ["true"],
            "status": JobStatus.RUNNING.value,
            "limits": {},
            "network": "none",
            "created_at": 0.0,
            "backend": "slurm",
            "node": "n2",
            "placement": {"partition": "debug", "slurm_job_id": "7"},
        }
    )
    assert (record.backend, record.node, record.placement["slurm_job_id"]) == ("slurm", "n2", "7")
    assert record.to_dict()["node"] == "n2"
