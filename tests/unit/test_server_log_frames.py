"""How the server extension reads the executor's follow frames (server/handlers.py `_loads`): a log
event's base64 is cut off unparsed, and the result always equals a whole JSON parse."""

from __future__ import annotations

import base64
import json

import pytest

from jupyter_worker import protocol
from jupyter_worker.server.handlers import _loads


def frame(message: dict) -> bytes:
    return protocol.encode(message)[protocol.LENGTH.size :]


def plain(message: dict) -> dict:
    """The message with its data as bytes, however it was read (base64 decodes either)."""
    if isinstance(message.get("data"), str):
        return {**message, "data": message["data"].encode()}
    return message


def test_a_log_event_as_the_executor_sends_it_reads_as_a_whole_parse_would():
    data = base64.b64encode(bytes(range(256)) * 100).decode()
    body = frame({"id": 3, "event": "log", "next_offset": 25605, "offset": 0, "stream": "stderr", "data": data})
    assert plain(_loads(body)) == plain(json.loads(body))
    assert _loads(body)["data"] == data.encode()


@pytest.mark.parametrize(
    "message",
    [
        {"id": 1, "event": "log", "data": "QUJD", "offset": 0},  # data not last
        {"id": 1, "event": "status", "job": {"name": "x", "data": "abc"}},  # nested
        {"id": 1, "data": "first", "event": "log", "data2": "x"},
        {"id": 1, "event": "log", "text": 'a,"data":"b', "data": "QUJD"},  # the marker inside a string
        {"id": 1, "event": "log", "data": 'quote " and \\ backslash'},  # escapes: parsed whole
        {"ok": True, "following": True},
    ],
)
def test_any_other_frame_reads_exactly_as_a_whole_parse(message):
    body = frame(message)
    assert plain(_loads(body)) == plain(json.loads(body))


def test_a_frame_with_the_key_twice_reads_as_a_whole_parse():
    body = b'{"id":1,"data":"QQ==","event":"log","data":"QUJD"}'
    assert plain(_loads(body)) == plain(json.loads(body))


def test_a_broken_frame_is_refused_as_json_would_refuse_it():
    for body in (b'{"id":1,,"data":"QUJD"}', b'[1,"data":"QUJD"}', b'"x","data":"QUJD"}'):
        with pytest.raises(ValueError):
            _loads(body)
