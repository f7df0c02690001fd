"""The OpenAPI document says what the code does: its limits are the table's (jupyter_worker/limits.py),
its error reasons and their statuses are ErrorReason's (jupyter_worker/errors.py), and it is a valid
OpenAPI 3.0 document."""

from __future__ import annotations

import re
from importlib.resources import files
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from jupyter_worker.errors import ErrorReason, SpecError
from jupyter_worker.limits import LIMITS, Kind, Limits

OPENAPI = files("jupyter_worker") / "server" / "openapi.yaml"  # read, not imported: no Jupyter needed
WHOLE_KINDS = {Kind.MIB, Kind.RATE, Kind.COUNT, Kind.PERCENT}
RECORD_TYPES = {**dict.fromkeys(WHOLE_KINDS, "integer"), Kind.DURATION: "number", Kind.CPU_LIST: "string"}
# Texts of each kind's shape that the parser takes, and malformed ones it refuses: a string a
# request may send matches the schema's pattern exactly when its shape is right.
TAKEN = {
    Kind.MIB: ["512", "512M", "2G", "1.5GiB", " 8 m ", "2 GB", "64mib"],
    Kind.RATE: ["4096", "50M", "1G/s", "10 MiB/s", "2kb"],
    Kind.COUNT: ["64", " 7 "],
    Kind.PERCENT: ["50", "50%", "200 %"],
    Kind.DURATION: ["90", "1.5", "90s", "10m", "1h30m", "250ms", "2 h", "1D"],
    Kind.CPU_LIST: ["0", "0-1", "0,2", "0-3,8-11"],
}
MALFORMED = {
    Kind.MIB: ["", "abc", "2X", "-5", "G", "2 G B"],
    Kind.RATE: ["", "fast", "1Q/s", "-1M"],
    Kind.COUNT: ["", "many", "1.5", "2k"],
    Kind.PERCENT: ["", "half", "1.5", "%"],
    Kind.DURATION: ["", "m", "10x", "-1s", "1h-2m"],
    Kind.CPU_LIST: ["", "a", "0-", "1,,2", " 0"],
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(OPENAPI.read_text())


def schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["schemas"][name]


def alternatives(prop: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A property's schemas by type: its oneOf's, or itself."""
    return {choice["type"]: choice for choice in prop.get("oneOf", [prop])}


def check(document: dict[str, Any], name: str, instance: Any) -> None:
    OAS30Validator({"components": document["components"], **schema(document, name)}).validate(instance)


def test_the_document_is_valid_openapi(document):
    validate(document)


def test_records_have_exactly_the_tables_fields_typed_and_bounded_as_its_rows(document):
    limits = schema(document, "Limits")
    assert list(limits["properties"]) == [r.field for r in LIMITS]
    assert limits["required"] == [r.field for r in LIMITS] and limits["additionalProperties"] is False
    for item in LIMITS:
        prop = limits["properties"][item.field]
        assert prop["type"] == RECORD_TYPES[item.kind] and prop["nullable"] is True, item.field
        assert (prop.get("minimum"), prop.get("maximum")) == (item.low, item.high), item.field


def test_requests_take_the_tables_fields_as_numbers_or_as_text_with_units(document):
    request = schema(document, "LimitsRequest")
    assert list(request["properties"]) == [r.field for r in LIMITS] and request["additionalProperties"] is False
    for item in LIMITS:
        choices = alternatives(request["properties"][item.field])
        if item.kind is Kind.CPU_LIST:
            assert list(choices) == ["string"], item.field
            continue
        number = "integer" if item.kind in WHOLE_KINDS else "number"
        assert list(choices) == [number, "string"], item.field
        assert (choices[number]["minimum"], choices[number]["maximum"]) == (item.low, item.high), item.field
        assert any(choice.get("nullable") for choice in choices.values()), f"{item.field}: null means the default"


@pytest.mark.parametrize("item", LIMITS, ids=lambda r: r.field)
def test_a_limits_text_matches_the_schemas_pattern_when_the_parser_takes_its_shape(document, item):
    pattern = alternatives(schema(document, "LimitsRequest")["properties"][item.field])["string"]["pattern"]
    for text in TAKEN[item.kind]:
        item.kind.parse(text, item.what)
        assert re.search(pattern, text), f"{item.field}: {text!r} is taken but the schema refuses it"
    for text in MALFORMED[item.kind]:
        with pytest.raises(SpecError):
            item.kind.parse(text, item.what)
        assert not re.search(pattern, text), f"{item.field}: {text!r} is refused but the schema takes it"


def test_a_record_of_real_limits_and_a_request_with_units_fit_the_schemas(document):
    check(document, "Limits", Limits(memory_mb="2G", timeout_s="10m", cpuset="0-1").to_dict())
    check(document, "LimitsRequest", {"memory_mb": "2G", "timeout_s": "10m", "pids": 64, "io_bps": None})
    with pytest.raises(Exception, match="gpus"):
        check(document, "LimitsRequest", {"gpus": 10})


def test_capabilities_rows_are_described_as_the_table_serves_them(document):
    described = schema(document, "LimitRow")
    assert described["required"] == [*LIMITS[0].describe(), "default", "maximum", "host"]
    assert set(described["properties"]) == set(described["required"])
    assert described["properties"]["kind"]["enum"] == [kind.value for kind in Kind]
    policy = schema(document, "Capabilities")["properties"]["policy"]
    assert policy["properties"]["limits"]["items"] == {"$ref": "#/components/schemas/LimitRow"}
    for item in LIMITS:
        served = {"default": item.default, "maximum": item.max_default, "host": None}
        check(document, "LimitRow", item.describe() | served)


def test_the_error_reasons_are_exactly_error_reasons(document):
    reasons = schema(document, "Error")["properties"]["reason"]["enum"]
    assert [r for r in reasons if r is not None] == [reason.value for reason in ErrorReason]


def error_responses(document: dict[str, Any]) -> dict[str, set[str]]:
    """Each error response of the document with the reasons it may carry."""
    found = {}
    for name, response in document["components"]["responses"].items():
        body = response["content"]["application/json"]["schema"]
        assert body["allOf"][0] == {"$ref": "#/components/schemas/Error"}, name
        found[name] = {r for r in body["allOf"][1]["properties"]["reason"]["enum"] if r is not None}
    return found


def test_each_error_response_has_the_reasons_of_one_status_and_every_reason_has_one(document):
    responses = error_responses(document)
    statuses = {name: {ErrorReason(r).http_status for r in reasons} for name, reasons in responses.items()}
    assert all(len(codes) == 1 for codes in statuses.values()), statuses
    assert sorted(r for reasons in responses.values() for r in reasons) == sorted(r.value for r in ErrorReason)
    used = set()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for code, response in operation["responses"].items():
                if "$ref" in response:
                    name = response["$ref"].rsplit("/", 1)[1]
                    assert statuses[name] == {int(code)}, f"{method.upper()} {path} {code}: {name}"
                    used.add(name)
    assert used == set(responses), "an error response no route gives"


def test_a_refused_network_mode_is_a_422_for_a_new_job(document):
    responses = document["paths"]["/jobs"]["post"]["responses"]
    assert ErrorReason.UNSUPPORTED.http_status == 422
    assert responses["422"] == {"$ref": "#/components/responses/Unsupported"}
