"""One vocabulary of errors: every reason has one HTTP status and one exit code, and an error
crosses the wire and comes back the same."""

from __future__ import annotations

import json

import pytest

from jupyter_worker.errors import REFUSED_EXIT, USAGE_EXIT, ErrorReason, SpecError, WorkerError

# The executor's own state: the only reasons that may be a server error (5xx). Everything else is
# caused by the request or by what this host can give, which the client must hear as a 4xx.
SERVER_SIDE = {ErrorReason.BUSY, ErrorReason.UNAVAILABLE, ErrorReason.DISCONNECTED, ErrorReason.MISCONFIGURED}


@pytest.mark.parametrize("reason", list(ErrorReason), ids=lambda r: r.value)
def test_every_reason_has_an_http_status_and_an_exit_code(reason):
    assert 400 <= reason.http_status < 600
    assert reason.exit_code in (USAGE_EXIT, REFUSED_EXIT)


@pytest.mark.parametrize("reason", sorted(set(ErrorReason) - SERVER_SIDE), ids=lambda r: r.value)
def test_no_reason_a_client_or_the_host_causes_is_a_server_error(reason):
    assert 400 <= reason.http_status < 500


def test_a_request_that_is_wrong_exits_2_and_one_that_is_refused_exits_1():
    assert USAGE_EXIT == 2
    assert REFUSED_EXIT == 1
    for reason in ErrorReason:
        if reason.exit_code == USAGE_EXIT:
            assert reason.http_status in (400, 413), reason
    assert ErrorReason.INVALID.exit_code == USAGE_EXIT
    assert ErrorReason.FORBIDDEN.exit_code == REFUSED_EXIT
    assert ErrorReason.UNSUPPORTED.exit_code == REFUSED_EXIT


@pytest.mark.parametrize("reason", list(ErrorReason), ids=lambda r: r.value)
def test_an_error_survives_the_trip_through_json(reason):
    error = WorkerError(reason, f"a {reason.value} sentence")
    sent = json.loads(json.dumps(error.to_dict()))
    assert sent == {"reason": reason.value, "message": f"a {reason.value} sentence"}
    back = WorkerError.from_dict(sent)
    assert (back.reason, back.message, str(back)) == (reason, error.message, error.message)


def test_a_reason_may_be_given_as_its_word_but_must_be_known():
    assert WorkerError("not_found", "no job abc").reason is ErrorReason.NOT_FOUND
    with pytest.raises(ValueError):
        WorkerError("teapot", "short and stout")


@pytest.mark.parametrize(
    ("sent", "reason", "message"),
    [
        ({"reason": "teapot", "message": "newer executor"}, ErrorReason.BAD_REQUEST, "newer executor"),
        ({"message": "no reason"}, ErrorReason.BAD_REQUEST, "no reason"),
        ({"reason": "busy"}, ErrorReason.BUSY, "the executor refused the request"),
        ("not an object", ErrorReason.BAD_REQUEST, "the executor refused the request"),
        (None, ErrorReason.BAD_REQUEST, "the executor refused the request"),
    ],
)
def test_whatever_a_peer_sends_reads_as_an_error(sent, reason, message):
    error = WorkerError.from_dict(sent)
    assert (error.reason, error.message) == (reason, message)


def test_a_spec_error_is_a_worker_error_with_reason_invalid():
    error = SpecError("memory limit: 2 MiB is below the least of 8 MiB")
    assert isinstance(error, WorkerError)
    assert isinstance(error, ValueError)  # so code that parses values may catch ValueError
    assert error.reason is ErrorReason.INVALID
    assert error.to_dict() == {"reason": "invalid", "message": "memory limit: 2 MiB is below the least of 8 MiB"}
    with pytest.raises(WorkerError, match="below the least"):
        raise error
