"""The CLI's one error boundary: every reason is one line on stderr and its own exit code.

tests/test_cli.py produces the reasons a real executor can give end to end; here each reason,
including those no test can provoke on this host (version, busy, disconnected, misconfigured,
unsupported), goes through the same boundary, as do errors found before any executor is reached.
"""

from __future__ import annotations

import json

import pytest

from jupyter_worker import cli
from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.sandbox import SandboxError


def refuse(error: Exception):
    def action() -> int:
        raise error

    return action


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_every_reason_is_one_line_and_exits_with_its_code(reason, capsys):
    code = cli.report_errors(refuse(WorkerError(reason, f"refused: {reason.value}")))
    assert code == reason.exit_code
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"jupyter-worker: refused: {reason.value}\n")


def test_a_request_that_is_wrong_exits_2_and_a_refusal_1():
    wrong = {ErrorReason.BAD_REQUEST, ErrorReason.INVALID, ErrorReason.AMBIGUOUS, ErrorReason.VERSION}
    for reason in ErrorReason:
        expected = 2 if reason in wrong | {ErrorReason.TOO_LARGE} else 1
        assert cli.report_errors(refuse(WorkerError(reason, "no"))) == expected


def test_a_message_of_several_lines_is_still_one_line(capsys):
    cli.report_errors(refuse(WorkerError(ErrorReason.MISCONFIGURED, "first\nsecond")))
    assert capsys.readouterr().err == "jupyter-worker: first second\n"


def test_a_sandbox_failure_exits_1_in_one_line(capsys):
    assert cli.report_errors(refuse(SandboxError("no cgroup"))) == 1
    assert capsys.readouterr().err == "jupyter-worker: no cgroup\n"


def test_an_interrupt_exits_130_quietly(capsys):
    assert cli.report_errors(refuse(KeyboardInterrupt())) == 130
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (["run", "--max-memry", "5", "--", "true"], 2, "jupyter-worker: unrecognized arguments: --max-memry"),
        (["run", "--network", "wifi", "--", "true"], 2, "jupyter-worker: run: argument --network: invalid choice"),
        (["status"], 2, "jupyter-worker: status: the following arguments are required: ID"),
        (["run", "--max-memory", "3", "--", "true"], 2, "jupyter-worker: memory limit: 3 MiB is below the least"),
        (["run", "--timeout", "soon", "--", "true"], 2, "jupyter-worker: timeout: 'soon' is not a duration"),
        (["run"], 2, "jupyter-worker: no command given (put it after --)"),
        (["frobnicate"], 2, "jupyter-worker: argument verb: invalid choice: 'frobnicate'"),
        (["--socket", "/nonexistent/executor.sock", "list"], 1, "jupyter-worker: no executor answers at /nonexistent"),
    ],
)
def test_errors_found_before_an_executor_answers_name_the_verb_once(argv, code, line, capsys):
    assert cli.main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "jupyter-worker: jupyter-worker" not in err


def test_an_os_error_at_the_boundary_is_one_line_and_exits_1(capsys):
    assert cli.report_errors(refuse(TimeoutError(110, "Connection timed out"))) == 1
    assert capsys.readouterr().err == "jupyter-worker: Connection timed out\n"
    assert cli.report_errors(refuse(PermissionError(13, "Permission denied", "/run/x.sock"))) == 1
    assert capsys.readouterr().err == "jupyter-worker: Permission denied: /run/x.sock\n"


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["kernelspec"], "jupyter-worker: kernelspec: the following arguments are required: action"),
        (["kernelspec", "remove"], "jupyter-worker: kernelspec: argument action: invalid choice: 'remove'"),
        (["kernelspec", "install", "--user", "--sys-prefix"], "jupyter-worker: kernelspec: argument --sys-prefix"),
        (["stop"], "jupyter-worker: stop: the following arguments are required: ID"),
    ],
)
def test_the_new_verbs_usage_errors_name_the_verb_once(argv, line, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "jupyter-worker: jupyter-worker" not in err


def test_doctor_takes_the_socket_after_its_verb_too(capsys):
    code = cli.main(["doctor", "--json", "--socket", "/nonexistent/executor.sock"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["executor"]["socket"] == "/nonexistent/executor.sock"
    assert report["verdict"].startswith("not ready: no executor answers at /nonexistent/executor.sock")
