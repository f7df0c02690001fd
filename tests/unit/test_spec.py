"""The shared vocabulary turns every bad value into one clear error (the limits have tests of their
own, in test_limits.py)."""

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec
from jupyter_worker.sandbox.launch_spec import JobLink
from jupyter_worker.spec import (
    JobRequest,
    JobStatus,
    Mount,
    Outcome,
    Reason,
    parse_env_assignment,
    validate_env,
)


def test_mounts_parse_relative_to_cwd_and_default_to_read_only():
    assert Mount.parse(".:.:rw", cwd="/home/a/nb") == Mount("/home/a/nb", "/home/a/nb", True)
    assert Mount.parse("/data:/data") == Mount("/data", "/data", False)
    for bad in ["/data", "/a:/b:rx", "/a:/b:rw:x", ":/b", "/a:/proc/x", "/a:/", "/a/../b:/c", "/a:/usr/lib"]:
        with pytest.raises(SpecError):
            Mount.parse(bad)


def test_environment_names_and_values_are_checked():
    assert parse_env_assignment("A_B=1=2") == ("A_B", "1=2")
    for bad in ["NOEQUALS", "1A=x", "A-B=x"]:
        with pytest.raises(SpecError):
            parse_env_assignment(bad)
    with pytest.raises(SpecError, match="NUL"):
        validate_env({"A": "x\0y"})


def test_a_requests_limits_are_typed_on_arrival_and_a_null_is_not_asked():
    request = JobRequest.from_dict({"command": ["true"], "limits": {"memory_mb": "1G", "timeout_s": None}})
    assert request.limits == Limits(memory_mb=1024)
    assert request.to_dict()["limits"] == {"memory_mb": 1024}
    assert JobRequest.from_dict(request.to_dict()) == request
    with pytest.raises(SpecError, match=r"^limits: unknown limit 'gpu'"):
        JobRequest.from_dict({"command": ["true"], "limits": {"gpu": 1}})
    with pytest.raises(SpecError, match=r"^memory limit: "):
        JobRequest(["true"], limits={"memory_mb": "lots"})


def test_job_names_and_holders_are_single_lines_of_plain_characters():
    request = JobRequest.from_dict({"command": ["true"], "name": "train v2", "holder": "server-3f2a:alice/gpu"})
    assert (request.name, request.holder) == ("train v2", "server-3f2a:alice/gpu")
    for field, bad in [("name", "a\n"), ("name", "$(x)"), ("holder", "a b"), ("holder", "a\n"), ("holder", 7)]:
        with pytest.raises(SpecError, match=f"^{field}:"):
            JobRequest.from_dict({"command": ["true"], field: bad})


def test_launch_spec_never_runs_root_and_knows_its_network_modes():
    with pytest.raises(SpecError, match="never run as root"):
        LaunchSpec(["true"], uid=0)
    with pytest.raises(SpecError, match="isolated"):
        LaunchSpec(["true"], network="none", link=JobLink("br", "jwv1", "10.0.0.2/24", "10.0.0.1", []))
    with pytest.raises(ValueError):
        LaunchSpec(["true"], network="bridge")
    with pytest.raises(SpecError, match="non-empty"):
        LaunchSpec([])
    with pytest.raises(SpecError, match="share one destination"):
        LaunchSpec(["true"], mounts=[Mount("/a", "/x"), Mount("/b", "/x")])


def test_launch_spec_survives_the_trip_to_the_spawner():
    spec = LaunchSpec(["echo", "hi"], env={"A": "1"}, limits=Limits(memory_mb=64), mounts=[Mount("/a", "/b", True)])
    assert LaunchSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("outcome", "status", "code"),
    [
        (Outcome(Reason.EXIT, exit_code=0), JobStatus.COMPLETED, 0),
        (Outcome(Reason.EXIT, exit_code=3), JobStatus.FAILED, 3),
        (Outcome(Reason.SIGNAL, signal=15), JobStatus.FAILED, 143),
        (Outcome(Reason.OOM, signal=9), JobStatus.FAILED, 137),
        (Outcome(Reason.TIMEOUT), JobStatus.FAILED, 137),
        (Outcome(Reason.STOPPED, signal=15), JobStatus.STOPPED, 143),
        (Outcome(Reason.START_ERROR, error="x"), JobStatus.FAILED, 127),
    ],
)
def test_outcomes_map_to_states_and_shell_codes(outcome, status, code):
    assert outcome.status is status
    assert outcome.shell_code == code
    assert Outcome.from_dict(outcome.to_dict()) == outcome
