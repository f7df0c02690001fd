"""Values and requests for fuzzing the executor's protocol and REST, shared by tests/security's fuzz
tests and the pure ones in tests/unit (Hypothesis strategies; no root, no executor needed).

Every example is derandomized (FUZZ): CI runs the same examples on both lanes, every time.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from jupyter_worker import protocol
from jupyter_worker.limits import BY_FIELD

FUZZ = settings(
    max_examples=250,
    derandomize=True,  # deterministic: CI runs the same examples on both lanes, every time
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

NUMBERS = [
    0,
    -1,
    1,
    -(2**63),
    2**63 - 1,
    2**53,
    2**53 + 1,
    2**31,
    -(2**31),
    1e308,
    -1e308,
    5e-324,
    0.5,
    -0.0,
    3600,
    3600.5,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
]
TEXTS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1b]0;owned\x07\x1b[2J",
    "../../etc/passwd",
    "/",
    "/proc/self/root",
    "/etc",
    "9" * 30 + "G",
    "1e308",
    "NaN",
    "-1",
    "\u202e",
    "\ud800",
    "x\udfff",
    "😀",
    "%s%n",
    "a" * 5000,
]


# What the executor must refuse at decode (a value it never sees), and what it must decode.
POISON = [math.nan, math.inf, -math.inf, 2**64, -(2**70), 10**400, "\ud800", "x\udfff"]
SANE_NUMBERS = [n for n in NUMBERS if n not in POISON and not (isinstance(n, float) and math.isnan(n))]
SANE_TEXTS = [t for t in TEXTS if t not in POISON]


def _values(numbers: list[Any], texts: list[str], integers: Any, floats: Any) -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.sampled_from(numbers), st.sampled_from(texts), integers, floats, st.text(max_size=12))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
        max_leaves=8,
    )


# SANE decodes (within 64 bits, finite, UTF-8, shallow); ANY is anything JSON can carry, or claim to.
SANE_INTEGERS = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
SANE = _values(SANE_NUMBERS, SANE_TEXTS, SANE_INTEGERS, st.floats(allow_nan=False, allow_infinity=False))
DEEP = st.integers(min_value=1, max_value=300).map(lambda depth: json.loads("[" * depth + "]" * depth))
VALUES = _values(NUMBERS, TEXTS, st.integers(), st.floats())  # NaN and the infinities as JSON tokens
ANY = st.one_of(VALUES, DEEP)
NUMERIC = st.one_of(st.sampled_from(NUMBERS), st.integers(), st.floats(), VALUES)


def _job(value: Any, number: Any, texts: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A job request: every field, each a likely value or any other."""
    return st.fixed_dictionaries(
        {"command": st.one_of(st.sampled_from([["true"], ["sleep", "300"]]), value)},
        optional={
            "name": st.one_of(st.sampled_from(texts), value),
            "limits": st.one_of(
                st.dictionaries(st.sampled_from(sorted(BY_FIELD)), number | st.sampled_from(texts)), value
            ),
            "env": st.one_of(st.dictionaries(st.sampled_from(["A", "", "1X", "a=b", *texts]), value), value),
            "mounts": st.one_of(
                st.lists(st.one_of(st.sampled_from(["/tmp:/data", "/etc:/etc", "a:b:c:d", ":", "/:/x:rw"]), value)),
                value,
            ),
            "network": st.one_of(st.sampled_from(["none", "host", "isolated", "NONE"]), value),
            "cwd": st.one_of(st.sampled_from(texts), value),
            "python_prefixes": value,
            "owner": st.one_of(st.sampled_from(["jwtest-bob", "root"]), value),
            "holder": value,
            "unknown": value,
        },
    )


JOB = _job(ANY, NUMERIC, TEXTS)
# Streams are rarer: one that is answered keeps its connection until the stream has news.
OP_NAMES = [op for op in protocol.OPS if op not in ("follow", "watch", "hold")] * 4 + ["follow", "watch", "hold"]


def _request(job_ids: list[str], value: Any, number: Any, texts: list[str]) -> Any:
    return st.fixed_dictionaries(
        {"op": st.one_of(st.sampled_from(OP_NAMES), st.sampled_from(OP_NAMES), value)},
        optional={
            "id": st.one_of(st.integers(min_value=0, max_value=1 << 20), value),
            "version": st.one_of(st.just(protocol.VERSION), number),
            "job_id": st.one_of(st.sampled_from(job_ids), st.sampled_from([j[:4] for j in job_ids]), value),
            "job": st.one_of(_job(value, number, texts), value),
            "offset": number,
            "max_bytes": number,
            "grace_s": number,
            "limit": number,
            "cursor": number,
            "status": st.one_of(st.sampled_from(["RUNNING", ["QUEUED", "RUNNING"], [["RUNNING"]]]), value),
            "owner": value,
            "order": value,
            "path": st.one_of(st.sampled_from(texts), value),
            "holder": value,
        },
    )


def requests(job_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A request: an operation (or not one) with any of every operation's fields. Most carry only
    values that decode, so the fuzzing reaches each operation's own checks; the rest anything."""
    sane_number = st.one_of(st.sampled_from(SANE_NUMBERS), SANE_INTEGERS, st.floats(-1e308, 1e308))
    sane = _request(job_ids, SANE, sane_number, SANE_TEXTS)
    return st.one_of(sane, sane, sane, _request(job_ids, ANY, NUMERIC, TEXTS))


def frame(body: bytes) -> bytes:
    return protocol.LENGTH.pack(len(body)) + body


def raw(message: Any) -> bytes:
    """A message as a careless client would write it: NaN and Infinity as tokens, surrogates escaped."""
    return frame(json.dumps(message, allow_nan=True).encode())
