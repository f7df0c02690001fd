"""The parsing at the executor's boundary, fuzzed without an executor: whatever bytes arrive, the
decoding gives an object or one bad_request, and every field's decoding (the job request, the
limits, offsets, sizes, cursors, a stop's grace period, ids, paths) a value or one WorkerError,
never another exception (which would be a traceback and a dropped connection). The same strategies
drive the fuzzing of a real executor and Jupyter server in tests/security."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_worker import protocol
from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.executor import server
from jupyter_worker.limits import BY_FIELD, Limits
from jupyter_worker.spec import MAX_STOP_GRACE_S, JobRequest, validate_holder
from tests.security.fuzzing import FUZZ, JOB, NUMERIC, TEXTS, raw, requests

JOB_IDS = ["0f0f0f0f-1111-2222-3333-444455556666"]
FUZZ = settings(FUZZ, max_examples=100)  # pure and fast: a few seconds in all


def decoded(body: bytes) -> dict[str, Any] | None:
    """What the executor would see of a frame's body, or None if it refuses it (as it must: one
    bad_request)."""
    try:
        return protocol.decode(body)
    except WorkerError as exc:
        assert exc.reason is ErrorReason.BAD_REQUEST
        return None


def value_or_refusal(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except WorkerError as exc:
        assert exc.message
        return exc


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_any_bytes_decode_to_an_object_or_one_bad_request(body):
    message = decoded(body)
    assert message is None or isinstance(message, dict)


@FUZZ
@given(requests(JOB_IDS))
def test_a_decoded_frame_holds_no_nan_infinity_huge_whole_number_or_lone_surrogate(request):
    message = decoded(raw(request)[protocol.LENGTH.size :])
    if message is not None:
        json.dumps(message, allow_nan=False).encode()  # raises on NaN, Infinity and lone surrogates
        assert protocol.MAX_DEPTH >= _depth(message)


@FUZZ
@given(requests(JOB_IDS))
def test_every_field_of_every_operation_decodes_to_a_value_or_one_refusal(request):
    message = decoded(raw(request)[protocol.LENGTH.size :])
    if message is None:
        return
    value_or_refusal(protocol.request_id, message)
    value_or_refusal(server._job_ref, message)
    value_or_refusal(server._path, message, "")
    value_or_refusal(server._list_query, message)
    for key in ("offset", "max_bytes"):
        whole = value_or_refusal(server._whole, message, key, 0, 0)
        assert isinstance(whole, WorkerError) or 0 <= whole <= server.MAX_WHOLE
    grace = value_or_refusal(server._grace, message)
    assert grace is None or isinstance(grace, WorkerError) or 0 <= grace <= MAX_STOP_GRACE_S
    value_or_refusal(validate_holder, message.get("holder"))
    job = value_or_refusal(JobRequest.from_dict, message.get("job"))
    if isinstance(job, JobRequest):  # what is accepted is stored and sent on as strict JSON
        json.dumps(job.to_dict(), allow_nan=False).encode()


@FUZZ
@given(JOB)
def test_any_job_request_parses_or_is_refused_with_a_reason(job):
    message = decoded(raw({"job": job})[protocol.LENGTH.size :])
    if message is not None:
        value_or_refusal(JobRequest.from_dict, message["job"])


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(BY_FIELD)), st.one_of(NUMERIC, st.sampled_from(TEXTS)), min_size=1))
def test_any_limit_value_is_a_value_within_its_bounds_or_one_refusal(limits):
    parsed = value_or_refusal(Limits.parse, limits)
    if isinstance(parsed, Limits):
        for name, value in parsed.given().items():
            row = BY_FIELD[name]
            if isinstance(value, (int, float)):
                assert math.isfinite(value) and row.low <= value <= row.high, (name, value)


def test_huge_numbers_in_a_size_are_refused_not_crashed():
    for text in ("9" * 400 + "G", "9" * 5000, "9" * 5000 + "M", "1." + "0" * 400 + "1G"):
        assert isinstance(value_or_refusal(Limits.parse, {"memory_mb": text}), WorkerError)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def test_a_key_given_twice_at_any_depth_is_refused_at_the_socket_as_at_rest():
    for body in (
        b'{"op": "run", "op": "stop"}',
        b'{"op": "run", "job": {"command": ["true"], "command": ["false"]}}',
        b'{"a": [{"x": 1, "x": 2}]}',
        b'{"\\u001b[2J": 1, "\\u001b[2J": 2}',
    ):
        with pytest.raises(WorkerError, match="given twice, taken once") as refused:
            protocol.decode(body)
        assert refused.value.reason is ErrorReason.BAD_REQUEST
        assert "\x1b" not in refused.value.message  # a key is named escaped: inert on a terminal
