"""The job flags shared by the CLI and the magics, and the requests built from them and from the
Python API's keywords: every value typed and checked once, with units."""

from __future__ import annotations

from typing import NoReturn

import pytest

from jupyter_worker import jobs
from jupyter_worker.errors import ErrorReason, SpecError
from jupyter_worker.flags import JobParser, add_job_flags, job_request, request_from_flags
from jupyter_worker.limits import LIMITS, Limits
from jupyter_worker.spec import Mount, NetworkMode, python_prefixes


class Usage(Exception):
    pass


def fail(prog: str, message: str) -> NoReturn:
    raise Usage(prog, message)


def parse(*words: str, submitted: bool = True, command: bool = True):
    parser = JobParser(prog="jw run", fail=fail)
    add_job_flags(parser, submitted=submitted, command=command)
    return parser.parse_args(list(words))


def request(*words: str, **options):
    return request_from_flags(parse(*words), **options)


@pytest.mark.parametrize(
    ("words", "field", "value"),
    [
        (["--max-memory", "512M"], "memory_mb", 512),
        (["--max-memory", "2G"], "memory_mb", 2048),
        (["--max-memory", "1.5GiB"], "memory_mb", 1536),
        (["--max-memory", "300"], "memory_mb", 300),
        (["--max-iobps", "50M"], "io_bps", 50 << 20),
        (["--max-iobps", "4096"], "io_bps", 4096),
        (["--max-netbps", "10M"], "net_bps", 10 << 20),
        (["--timeout", "90s"], "timeout_s", 90.0),
        (["--timeout", "10m"], "timeout_s", 600.0),
        (["--timeout", "2h"], "timeout_s", 7200.0),
        (["--timeout", "30"], "timeout_s", 30.0),
        (["--max-tmp", "256M"], "tmp_mb", 256),
        (["--max-cpu", "150"], "cpu_percent", 150),
        (["--max-pids", "20"], "pids", 20),
        (["--cpuset", "0-1"], "cpuset", "0-1"),
    ],
)
def test_limit_flags_take_units_and_become_typed_limits(words, field, value):
    limits = request(*words, "--", "true").limits
    assert getattr(limits, field) == value
    assert limits.given() == {field: value}


def test_every_limit_of_the_table_has_its_flag():
    for row in LIMITS:
        value = "0" if row.low is None else f"{row.low:g}"  # the least each allows
        assert request(row.flag, value, "--", "true").limits.given() == {row.field: row.parse(value)}


def test_limits_not_given_are_left_to_the_executor():
    assert request("--", "true").limits == Limits()


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["--max-memory", "lots"], "memory limit: 'lots' is not a size"),
        (["--max-memory", "3"], "memory limit: 3 MiB is below the least of 8 MiB"),
        (["--timeout", "soon"], "timeout: 'soon' is not a duration"),
        (["--max-pids", "many"], "process limit: 'many' is not a whole number"),
        (["--cpuset", "first"], "cpuset: 'first' is not a CPU list"),
        (["--env", "NOPE"], "env: 'NOPE' is not NAME=VALUE"),
        (["--mount", "/a:/proc"], "mount destination: /proc is reserved"),
        (["--network", "host", "--max-memory", "1.5"], "memory limit: '1.5' is not a whole number"),
    ],
)
def test_a_bad_value_is_one_invalid_error_naming_it(words, message):
    with pytest.raises(SpecError) as refused:
        request(*words, "--", "true")
    assert refused.value.reason is ErrorReason.INVALID
    assert message in refused.value.message


def test_usage_errors_go_to_the_callers_fail_with_the_parsers_name():
    with pytest.raises(Usage) as refused:
        parse("--max-memry", "5")
    assert refused.value.args == ("jw run", "unrecognized arguments: --max-memry")
    with pytest.raises(Usage) as refused:
        parse("--network", "wifi", "--", "true")
    assert refused.value.args[0] == "jw run" and "invalid choice: 'wifi'" in refused.value.args[1]


def test_the_command_comes_after_the_double_dash_and_must_be_there():
    assert request("--name", "x", "--", "sh", "-c", "exit 3", "--wait").command == ["sh", "-c", "exit 3", "--wait"]
    with pytest.raises(SpecError, match="no command given"):
        request("--name", "x")
    with pytest.raises(SpecError, match="no command given"):
        request("--")


def test_a_cells_command_is_given_and_its_parser_takes_none():
    args = parse("--wait", command=False)
    assert request_from_flags(args, ["python", "-c", "1"]).command == ["python", "-c", "1"]
    with pytest.raises(Usage, match="unrecognized arguments: stray"):
        parse("stray", command=False)


def test_the_sandbox_verb_has_no_executor_flags():
    with pytest.raises(Usage, match="unrecognized arguments: --name"):
        parse("--name", "x", submitted=False)


def test_every_flag_reaches_the_request(tmp_path):
    made = request_from_flags(
        parse(
            "--max-memory",
            "1G",
            "--network",
            "isolated",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--mount",
            "/srv/data:/data",
            "--name",
            "flagged",
            "--wait",
            "--no-cwd",
            "--",
            "true",
        ),
    )
    assert made.limits.memory_mb == 1024
    assert made.network is NetworkMode.ISOLATED
    assert made.env == {"A": "1", "B": "x=y"}
    assert made.mounts == [Mount("/srv/data", "/data")]
    assert made.name == "flagged"
    assert made.python_prefixes == python_prefixes()


def test_with_no_cwd_a_job_starts_in_work_and_its_relative_mounts_are_from_the_callers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = request("--no-cwd", "--mount", "data:/data:rw", "--", "true")
    assert made.cwd == "/work"
    assert made.mounts == [Mount(str(tmp_path / "data"), "/data", rw=True)]


def test_cwd_names_another_folder_relative_to_the_callers_resolved_through_symlinks(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    made = request("--cwd", "link", "--mount", "data:/data", "--", "python3", "train.py")
    project = str(tmp_path / "project")
    assert made.cwd == project
    assert made.mounts == [Mount(project, project), Mount(project + "/data", "/data")]


def test_cwd_and_no_cwd_together_are_one_usage_error(tmp_path, monkeypatch):
    with pytest.raises(Usage, match="not allowed with argument"):
        request("--cwd", "x", "--no-cwd", "--", "true")


def test_a_notebook_job_runs_in_its_folder_shown_read_only_unless_mounted_writable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    made = request("--mount", "/srv:/srv", "--", "true")
    assert made.cwd == here
    assert made.mounts == [Mount(here, here), Mount("/srv", "/srv")]
    writable = request("--mount", ".:.:rw", "--", "true")
    assert writable.mounts == [Mount(here, here, rw=True)]


def test_the_python_apis_keywords_make_the_same_request(tmp_path):
    made = job_request(
        ["true"],
        limits={"memory_mb": "1G", "timeout_s": "10m", "tmp_mb": 128},
        env={"A": "1"},
        mounts=["in:/in"],
        cwd=str(tmp_path),
    )
    assert made.limits == Limits(memory_mb=1024, timeout_s=600.0, tmp_mb=128)
    assert made.cwd == str(tmp_path)
    assert made.mounts == [Mount(str(tmp_path), str(tmp_path)), Mount(str(tmp_path / "in"), "/in")]
    assert made.to_dict()["limits"] == {"memory_mb": 1024, "tmp_mb": 128, "timeout_s": 600.0}


def test_an_unknown_limit_keyword_is_refused_naming_those_there_are():
    with pytest.raises(SpecError, match="unknown limit 'memory'; one of memory_mb"):
        job_request(["true"], limits={"memory": 5})


def test_run_refuses_bad_keywords_before_reaching_the_executor():
    socket = "/nonexistent/executor.sock"
    with pytest.raises(SpecError, match="unknown limit 'memory'"):
        jobs.run("print(1)", memory=512, socket=socket)
    with pytest.raises(SpecError, match="timeout or timeout_s, not both"):
        jobs.run("print(1)", timeout="1m", timeout_s=5, socket=socket)
    with pytest.raises(SpecError, match="memory limit: 'much' is not a size"):
        jobs.run("print(1)", memory_mb="much", socket=socket)


def test_run_documents_every_limit_keyword_from_the_table():
    assert jobs.run.__doc__ is not None
    for row in LIMITS:
        assert f"{row.field}: {row.words}" in jobs.run.__doc__
