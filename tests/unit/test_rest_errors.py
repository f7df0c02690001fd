"""How REST answers each refusal (server/handlers.py's one mapping); tests/server/test_errors.py
produces every reason it can for real, through a Jupyter server and an executor."""

import pytest

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.server.handlers import error_reply

# only these are the server's or the executor's fault, never the client's nor the host's limits
SERVER_SIDE = {
    ErrorReason.MISCONFIGURED: 500,
    ErrorReason.UNAVAILABLE: 503,
    ErrorReason.BUSY: 503,
    ErrorReason.DISCONNECTED: 503,
}


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_every_reason_answers_its_status_with_its_word_and_the_message(reason):
    status, body = error_reply(WorkerError(reason, "why, in a sentence"))
    assert status == reason.http_status
    assert body == {"message": "why, in a sentence", "reason": reason.value}


@pytest.mark.parametrize("reason", list(ErrorReason))
def test_only_an_absent_busy_gone_or_misconfigured_executor_is_a_5xx(reason):
    status, _ = error_reply(WorkerError(reason, "m"))
    assert status == SERVER_SIDE.get(reason, status)
    assert (status >= 500) == (reason in SERVER_SIDE)


def test_what_the_host_cannot_give_is_a_4xx_the_client_can_act_on():
    assert error_reply(WorkerError(ErrorReason.UNSUPPORTED, "no isolated network here"))[0] == 422


def test_a_reason_a_newer_executor_sent_that_this_side_does_not_know_is_a_4xx():
    status, body = error_reply(WorkerError.from_dict({"reason": "quota", "message": "over your quota"}))
    assert status < 500 and body["message"] == "over your quota"
