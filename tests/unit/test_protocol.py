"""The executor's framing (protocol.py): a 4-byte big-endian length and one JSON object, with a size
limit both ways and one WorkerError for whatever is not a frame."""

from __future__ import annotations

import pytest

from jupyter_worker import protocol
from jupyter_worker.errors import ErrorReason, WorkerError


def test_a_frame_is_its_length_and_compact_json():
    frame = protocol.encode({"op": "get", "id": 1, "job": "abc"})
    body = b'{"op":"get","id":1,"job":"abc"}'
    assert frame == len(body).to_bytes(4, "big") + body
    assert protocol.frame_length(frame[:4]) == len(body)
    assert protocol.decode(frame[4:]) == {"op": "get", "id": 1, "job": "abc"}


def test_text_round_trips_whatever_its_characters():
    message = {"op": "run", "id": "x", "command": ["echo", "héllo ✓ \u0000 \n"]}
    frame = protocol.encode(message)
    assert protocol.decode(frame[4 : 4 + protocol.frame_length(frame[:4])]) == message


def test_a_message_may_fill_a_frame_but_not_exceed_it():
    overhead = len(protocol.encode({"pad": ""})) - 4
    full = {"pad": "x" * (protocol.MAX_FRAME - overhead)}
    assert protocol.frame_length(protocol.encode(full)[:4]) == protocol.MAX_FRAME
    with pytest.raises(WorkerError, match=f"exceeds {protocol.MAX_FRAME}") as caught:
        protocol.encode({"pad": "x" * (protocol.MAX_FRAME - overhead + 1)})
    assert caught.value.reason is ErrorReason.TOO_LARGE


def test_a_length_over_the_limit_is_refused_before_its_body_is_read():
    assert protocol.frame_length(protocol.LENGTH.pack(protocol.MAX_FRAME)) == protocol.MAX_FRAME
    for length in (protocol.MAX_FRAME + 1, 0xFFFFFFFF):
        with pytest.raises(WorkerError, match=f"frame of {length} bytes exceeds") as caught:
            protocol.frame_length(protocol.LENGTH.pack(length))
        assert caught.value.reason is ErrorReason.TOO_LARGE


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "must hold JSON"),
        (b"{not json", "must hold JSON"),
        (b'{"op": "get"', "must hold JSON"),
        (b"\xff\xfe{}", "must hold JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'"hello"', "must hold a JSON object"),
        (b"null", "must hold a JSON object"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_a_bad_request(body, words):
    with pytest.raises(WorkerError, match=words) as caught:
        protocol.decode(body)
    assert caught.value.reason is ErrorReason.BAD_REQUEST


def test_answers_carry_the_request_id_and_either_a_result_or_an_error():
    assert protocol.ok(7, job={"id": "abc"}) == {"id": 7, "ok": True, "job": {"id": "abc"}}
    error = WorkerError(ErrorReason.NOT_FOUND, "no job abc")
    answer = protocol.failed("r1", error)
    assert answer == {"id": "r1", "ok": False, "error": {"reason": "not_found", "message": "no job abc"}}
    sent = protocol.decode(protocol.encode(answer)[4:])
    assert WorkerError.from_dict(sent["error"]).reason is ErrorReason.NOT_FOUND


def test_every_operation_is_named_once_and_hello_comes_first():
    assert protocol.OPS[0] == "hello"
    assert len(set(protocol.OPS)) == len(protocol.OPS)
