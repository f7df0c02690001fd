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


def _leaf() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(NUMBERS),
        st.sampled_from(TEXTS),
        st.integers(),  # past 64 bits too
        st.floats(),  # NaN and the infinities too: json.dumps writes them as tokens
        st.text(max_size=12),
    )


VALUES = st.recursive(
    _leaf(),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=8,
)
DEEP = st.integers(min_value=1, max_value=300).map(lambda depth: json.loads("[" * depth + "]" * depth))
NUMERIC = st.one_of(st.sampled_from(NUMBERS), st.integers(), st.floats(), VALUES)
ANY = st.one_of(VALUES, DEEP)

JOB = st.fixed_dictionaries(
    {"command": st.one_of(st.sampled_from([["true"], ["sleep", "300"]]), ANY)},
    optional={
        "name": st.one_of(st.sampled_from(TEXTS), ANY),
        "limits": st.one_of(st.dictionaries(st.sampled_from(sorted(BY_FIELD)), NUMERIC | st.sampled_from(TEXTS)), ANY),
        "env": st.one_of(st.dictionaries(st.sampled_from(["A", "", "1X", "a=b", *TEXTS]), ANY), ANY),
        "mounts": st.one_of(
            st.lists(st.one_of(st.sampled_from(["/tmp:/data", "/etc:/etc", "a:b:c:d", ":", "/:/x:rw"]), ANY)), ANY
        ),
        "network": st.one_of(st.sampled_from(["none", "host", "isolated", "NONE"]), ANY),
        "cwd": st.one_of(st.sampled_from(TEXTS), ANY),
        "python_prefixes": ANY,
        "owner": st.one_of(st.sampled_from(["jwtest-bob", "root"]), ANY),
        "holder": ANY,
        "unknown": ANY,
    },
)
# Streams are rarer: one that is answered keeps its connection until the stream has news.
OPS = st.one_of(
    st.sampled_from([op for op in protocol.OPS if op not in ("follow", "watch", "hold")] * 4 + ["follow", "watch"]),
    ANY,
)


def requests(job_ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """A request: an operation (or not one) with any of every operation's fields, odd or not."""
    return st.fixed_dictionaries(
        {"op": OPS},
        optional={
            "id": ANY,
            "version": st.one_of(st.just(protocol.VERSION), NUMERIC),
            "job_id": st.one_of(st.sampled_from(job_ids), st.sampled_from([j[:4] for j in job_ids]), ANY),
            "job": st.one_of(JOB, ANY),
            "offset": NUMERIC,
            "max_bytes": NUMERIC,
            "grace_s": NUMERIC,
            "limit": NUMERIC,
            "cursor": NUMERIC,
            "status": st.one_of(st.sampled_from(["RUNNING", ["QUEUED", "RUNNING"], [["RUNNING"]]]), ANY),
            "owner": ANY,
            "order": ANY,
            "path": st.one_of(st.sampled_from(TEXTS), ANY),
            "holder": ANY,
        },
    )


def frame(body: bytes) -> bytes:
    return protocol.LENGTH.pack(len(body)) + body


def raw(message: Any) -> bytes:
    """A message as a careless client would write it: NaN and Infinity as tokens, surrogates escaped."""
    return frame(json.dumps(message, allow_nan=True).encode())
