"""The one table of a job's limits, limits.json (one row a limit): for each, its field, kind,
unit, flag, words, bounds, and the policy settings that give its default and its maximum.

Everything that names a limit reads this table: the `Limits` type, the command-line flags of the
CLI and the magics, the Python API's keywords, the executor's policy settings and its merge of a
request over them, the host's refusals, the doctor, `capabilities` (from which the panel takes its
labels) and the OpenAPI schema (a test checks they agree). A new limit is one row in limits.json plus
its enforcement in the sandbox.

Values a person types take units: sizes `512M`, `2G`, `1.5GiB` (a plain number is the field's own
unit, MiB or bytes/s), durations `90s`, `10m`, `1h30m` (a plain number is seconds).
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, make_dataclass
from importlib import resources
from typing import Any

from .errors import SpecError

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*(/\s*s)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def parse_size(text: Any, what: str = "size", unit: int = 1) -> int:
    """A size in multiples of unit: '512M', '2G', '1.5GiB' (binary units), or a plain number
    already in that unit ('4096'); one clear error otherwise."""
    example = "e.g. 512M or 2G"
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise SpecError(f"{what}: {text!r} is not a size ({example})")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text != int(text):
            raise SpecError(f"{what}: {text!r} is not a whole number")
        return int(text)
    match = _SIZE_RE.match(text)
    if not match:
        raise SpecError(f"{what}: {text!r} is not a size ({example})")
    number, prefix, suffix, _ = match.groups()
    if len(number) > 24:  # beyond any bound (and int() of 4300 digits is an error of its own)
        raise SpecError(f"{what}: {text[:32]!r}... is too large")
    if not prefix and not suffix:
        if "." in number:
            raise SpecError(f"{what}: {text!r} is not a whole number")
        return int(number)
    return int(float(number) * _SIZE_UNITS[prefix.lower()] // unit)


def parse_duration(text: Any, what: str = "duration") -> float:
    """Seconds from '90', '90s', '10m', '1h30m', '250ms'; one clear error otherwise."""
    example = "e.g. 30s, 10m or 1h"
    if isinstance(text, bool) or not isinstance(text, (int, float, str)):
        raise SpecError(f"{what}: {text!r} is not a duration ({example})")
    if isinstance(text, (int, float)):
        if not math.isfinite(text) or text < 0:
            raise SpecError(f"{what}: {text!r} is not a duration ({example})")
        return float(text)
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        return float(compact)
    parts = _DURATION_PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise SpecError(f"{what}: {text!r} is not a duration ({example})")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def duration_words(seconds: float) -> str:
    """A duration as people write it and parse_duration reads it back: '2s', '0.5s', '250ms',
    '1m 30s', '2h 30m', '100d'. Whole seconds from a minute on; never '8.64e+06 s'."""
    if not math.isfinite(seconds) or seconds < 0:
        return str(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.3g}ms" if seconds >= 0.001 else f"{seconds:.3g}s"
    if seconds < 60:
        return f"{seconds:.3g}s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def _whole(text: Any, what: str) -> int:
    if isinstance(text, float) and math.isfinite(text) and text == int(text):
        return int(text)  # JSON's 2.0, as sizes take it
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise SpecError(f"{what}: {text!r} is not a whole number")
    try:
        return int(str(text).strip().removesuffix("%"), 10)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a whole number") from None


def _cpu_list(text: Any, what: str) -> str:
    if not isinstance(text, str) or not _CPUSET_RE.match(text):
        raise SpecError(f"{what}: {text!r} is not a CPU list (use e.g. 0-1 or 0,2)")
    return text


class Kind(str, enum.Enum):
    """How a limit's value is typed and shown."""

    MIB = "mib"  # a size, kept in MiB
    RATE = "rate"  # bytes per second
    COUNT = "count"
    PERCENT = "percent"
    DURATION = "duration"  # seconds
    CPU_LIST = "cpu_list"

    def parse(self, text: Any, what: str) -> Any:
        if self is Kind.MIB:
            return parse_size(text, what, unit=1 << 20)
        if self is Kind.RATE:
            return parse_size(text, what)
        if self is Kind.DURATION:
            return parse_duration(text, what)
        if self is Kind.CPU_LIST:
            return _cpu_list(text, what)
        return _whole(text, what)


@dataclass(frozen=True)
class LimitRow:
    """One limit: how it is named, typed, bounded, asked for and set by the admin."""

    field: str  # in Limits, JSON and the Python API
    kind: Kind
    label: str  # a short heading ("Memory")
    what: str  # the subject of its errors ("memory limit")
    unit: str  # the unit of a plain number ("MiB")
    flag: str  # the command-line flag
    metavar: str
    words: str  # the flag's help
    low: float | None = None  # smallest value a job may ask for
    high: float | None = None  # largest value that makes sense at all
    default_setting: str | None = None  # Policy trait giving the default
    default: Any = None  # that trait's default value
    max_setting: str | None = None  # Policy trait giving the maximum
    max_default: Any = None

    def parse(self, value: Any) -> Any:
        """The typed value of what a person or a program gave, within this limit's bounds."""
        parsed = self.kind.parse(value, self.what)
        if isinstance(parsed, (int, float)):
            if self.low is not None and parsed < self.low:
                raise SpecError(f"{self.what}: {self.show(parsed)} is below the least of {self.show(self.low)}")
            if self.high is not None and parsed > self.high:
                raise SpecError(f"{self.what}: {self.show(parsed)} is above the most of {self.show(self.high)}")
        return parsed

    def show(self, value: Any) -> str:
        """A value in words, with its unit: '512 MiB', '1m 30s', '200 %'."""
        if value is None:
            return "none"
        if self.kind is Kind.DURATION:
            return duration_words(value)
        number = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{number} {self.unit}".rstrip()

    def describe(self) -> dict[str, Any]:
        """What a client needs to offer this limit (served by `capabilities`)."""
        return {
            "field": self.field,
            "kind": self.kind.value,
            "label": self.label,
            "what": self.what,
            "unit": self.unit,
            "flag": self.flag,
            "words": self.words,
            "low": self.low,
            "high": self.high,
            "default_setting": self.default_setting,
            "max_setting": self.max_setting,
        }


def _load_table() -> tuple[LimitRow, ...]:
    """The rows of limits.json, a data file so that the table reads as one (and any tool can read it)."""
    rows = json.loads(resources.files(__package__).joinpath("limits.json").read_text())
    return tuple(LimitRow(**{**entry, "kind": Kind(entry["kind"])}) for entry in rows)


LIMITS: tuple[LimitRow, ...] = _load_table()
BY_FIELD: dict[str, LimitRow] = {row.field: row for row in LIMITS}
_TYPES: dict[Kind, Any] = {Kind.MIB: int, Kind.RATE: int, Kind.COUNT: int, Kind.PERCENT: int, Kind.DURATION: float}


def row(name: str) -> LimitRow:
    """The row of a field, or one clear error naming those there are."""
    try:
        return BY_FIELD[name]
    except (KeyError, TypeError):
        raise SpecError(f"limits: unknown limit {name!r}; one of {', '.join(BY_FIELD)}") from None


def _check(self: Any) -> None:
    for item in LIMITS:
        value = getattr(self, item.field)
        if value is not None:
            object.__setattr__(self, item.field, item.parse(value))


_Fields = make_dataclass(
    "_Fields",
    [(r.field, _TYPES.get(r.kind, str) | None, field(default=None)) for r in LIMITS],
    frozen=True,
    namespace={"__post_init__": _check},
)


class Limits(_Fields):  # type: ignore[misc,valid-type]
    """A job's limits, one attribute per row of LIMITS; None means not set (no limit, or, in a
    request, the executor's default). Values are parsed and checked when made, so
    `Limits(memory_mb="2G").memory_mb == 2048`."""

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Limits:
        """From a mapping of fields (JSON, keywords, flags); unknown fields are refused."""
        if not isinstance(data, Mapping):
            raise SpecError("limits: must be an object of " + ", ".join(BY_FIELD))
        for name in data:
            row(name)
        return cls(**data)

    from_dict = parse

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _NAMES}  # every value is plain: no asdict walk

    def given(self) -> dict[str, Any]:
        """Only the limits that are set."""
        return {key: value for key, value in self.to_dict().items() if value is not None}

    def words(self) -> list[str]:
        """The set limits in words: ['Memory 512 MiB', 'Timeout 60 s']."""
        return [f"{r.label} {r.show(getattr(self, r.field))}" for r in LIMITS if getattr(self, r.field) is not None]


_NAMES = tuple(r.field for r in LIMITS)


def flag_values(args: Any) -> dict[str, Any]:
    """The limits command-line flags asked for (see add_flags), those not given left out."""
    asked = {r.field: getattr(args, r.field, None) for r in LIMITS}
    return {key: value for key, value in asked.items() if value is not None}


def add_flags(parser: Any) -> None:
    """The limit flags, one per row, on an argparse parser; values stay text until Limits.parse."""
    for item in LIMITS:
        parser.add_argument(item.flag, dest=item.field, metavar=item.metavar, help=item.words)
