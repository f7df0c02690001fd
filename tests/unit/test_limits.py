"""The table of limits: every row parses what a person types, within its bounds, and a bad value
gets one clear error that names the limit."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from jupyter_worker.errors import ErrorReason, SpecError
from jupyter_worker.limits import BY_FIELD, LIMITS, Limits, add_flags, flag_values, parse_duration, parse_size, row

NUMERIC = [r for r in LIMITS if r.low is not None]
WITH_DEFAULT = [r for r in LIMITS if r.default is not None]


def test_the_table_names_each_field_flag_and_setting_once():
    for attribute in ("field", "flag", "label", "what"):
        values = [getattr(r, attribute) for r in LIMITS]
        assert len(values) == len(set(values)), attribute
    settings = [s for r in LIMITS for s in (r.default_setting, r.max_setting) if s]
    assert len(settings) == len(set(settings))
    assert list(BY_FIELD) == [f.name for f in dataclasses.fields(Limits)]


@pytest.mark.parametrize("item", WITH_DEFAULT, ids=lambda r: r.field)
def test_every_row_parses_its_own_default(item):
    assert item.parse(item.default) == item.default
    if item.max_default is not None:
        assert item.parse(item.max_default) == item.max_default


@pytest.mark.parametrize("item", NUMERIC, ids=lambda r: r.field)
def test_every_row_takes_its_bounds_and_refuses_what_lies_beyond_them(item):
    assert item.parse(item.low) == item.low
    assert item.parse(item.high) == item.high
    below = item.low - (1 if isinstance(item.low, int) else item.low / 2)
    what, least, most = (re.escape(text) for text in (item.what, item.show(item.low), item.show(item.high)))
    with pytest.raises(SpecError, match=f"^{what}: .* is below the least of {least}$"):
        item.parse(below)
    with pytest.raises(SpecError, match=f"^{what}: .* is above the most of {most}$"):
        item.parse(item.high + 1)


# Per field, what a person types and the value it means.
UNITS = {
    "memory_mb": [("512M", 512), ("2G", 2048), ("1.5GiB", 1536), ("1g", 1024), (" 64 MiB ", 64), ("4096", 4096)],
    "tmp_mb": [("256M", 256), ("1G", 1024), (4096, 4096)],
    "io_bps": [("50M", 50 << 20), ("50M/s", 50 << 20), ("100k", 100 << 10), ("1048576", 1 << 20)],
    "net_bps": [("10M", 10 << 20)],
    "cpu_percent": [("50", 50), ("200%", 200)],
    "pids": [(64, 64)],
    "timeout_s": [("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1h30m", 5400.0), ("250ms", 0.25), ("90", 90.0)],
    "cpuset": [("0-1", "0-1"), ("0,2", "0,2")],
}


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [(field, text, expected) for field, pairs in UNITS.items() for text, expected in pairs] + [("timeout_s", 2.5, 2.5)],
)
def test_values_take_units_and_a_plain_number_is_in_the_rows_unit(field, text, expected):
    value = getattr(Limits(**{field: text}), field)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("memory_mb", "lots"),
        ("memory_mb", "12X"),
        ("memory_mb", "M"),
        ("memory_mb", "-5"),
        ("memory_mb", "1.2.3G"),
        ("memory_mb", "1.5"),
        ("memory_mb", 1.5),
        ("memory_mb", True),
        ("memory_mb", [512]),
        ("memory_mb", "2M"),
        ("io_bps", "fast"),
        ("io_bps", "1k"),
        ("net_bps", "10 Mbit"),
        ("tmp_mb", "2T"),
        ("cpu_percent", "half"),
        ("cpu_percent", "50.5"),
        ("cpu_percent", 0),
        ("pids", "many"),
        ("pids", 1.5),
        ("timeout_s", "forever"),
        ("timeout_s", "10x"),
        ("timeout_s", "m10"),
        ("timeout_s", "1h 30"),
        ("timeout_s", "-3"),
        ("timeout_s", -3),
        ("timeout_s", "0s"),
        ("timeout_s", float("nan")),
        ("cpuset", "0-"),
        ("cpuset", 3),
    ],
)
def test_a_bad_value_is_one_spec_error_that_names_the_limit(field, bad):
    with pytest.raises(SpecError) as caught:
        Limits(**{field: bad})
    assert caught.value.reason is ErrorReason.INVALID
    assert str(caught.value).startswith(f"{BY_FIELD[field].what}: ")
    assert "\n" not in str(caught.value)


def test_sizes_and_durations_parse_on_their_own_too():
    assert parse_size("2G") == 2 << 30
    assert parse_size("2G", unit=1 << 20) == 2048
    assert parse_duration("1h30m") == 5400.0
    with pytest.raises(SpecError, match=r"^--max-memory: 'ten' is not a size \(e.g. 512M or 2G\)$"):
        parse_size("ten", "--max-memory")
    with pytest.raises(SpecError, match=r"^--timeout: 'soon' is not a duration \(e.g. 30s, 10m or 1h\)$"):
        parse_duration("soon", "--timeout")


def test_limits_are_typed_when_made_and_cannot_change():
    limits = Limits(memory_mb="2G", timeout_s="2m")
    assert (limits.memory_mb, limits.timeout_s) == (2048, 120.0)
    assert limits == Limits(memory_mb=2048, timeout_s=120)
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.memory_mb = 1  # type: ignore[misc]


def test_parse_refuses_unknown_fields_and_anything_but_a_mapping():
    assert Limits.parse({"memory_mb": "1G", "timeout_s": None}) == Limits(memory_mb=1024)
    with pytest.raises(SpecError, match=r"^limits: unknown limit 'gpu'; one of memory_mb, cpu_percent, "):
        Limits.parse({"memory_mb": 64, "gpu": 1})
    with pytest.raises(SpecError, match=r"^limits: must be an object"):
        Limits.parse(["memory_mb"])  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="unknown limit 'gpu'"):
        row("gpu")


def test_to_dict_has_every_field_given_only_those_set_and_words_label_them():
    limits = Limits(memory_mb="512M", timeout_s="90s", cpu_percent=200)
    assert limits.to_dict() == {
        "memory_mb": 512,
        "cpu_percent": 200,
        "pids": None,
        "io_bps": None,
        "net_bps": None,
        "tmp_mb": None,
        "disk_mb": None,
        "timeout_s": 90.0,
        "cpuset": None,
    }
    assert limits.given() == {"memory_mb": 512, "cpu_percent": 200, "timeout_s": 90.0}
    assert Limits.parse(limits.to_dict()) == limits
    assert limits.words() == ["Memory 512 MiB", "CPU 200 %", "Timeout 1m 30s"]
    assert Limits().given() == {}
    assert Limits().words() == []


def test_each_row_describes_itself_for_clients():
    described = row("tmp_mb").describe()
    assert described["field"] == "tmp_mb"
    assert described["flag"] == "--max-tmp"
    assert (described["default_setting"], described["max_setting"]) == ("default_tmp_limit", "max_tmp_limit")
    assert described["kind"] == "mib"


def test_flags_come_from_the_table_and_stay_text_until_parsed():
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--max-memory", "2G", "--timeout", "10m", "--max-tmp", "256M"])
    asked = flag_values(args)
    assert asked == {"memory_mb": "2G", "tmp_mb": "256M", "timeout_s": "10m"}
    assert Limits.parse(asked).given() == {"memory_mb": 2048, "tmp_mb": 256, "timeout_s": 600.0}
    assert flag_values(parser.parse_args([])) == {}
