"""Durations read as people write them ('2h 30m', '100d'), wherever one is shown: never '8.64e+06 s'."""

from __future__ import annotations

import pytest

from jupyter_worker.formatting import seconds
from jupyter_worker.limits import BY_FIELD, duration_words, parse_duration


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (2, "2s"),
        (2.5, "2.5s"),
        (60, "1m"),
        (90, "1m 30s"),
        (9000, "2h 30m"),
        (86401, "1d 1s"),
        (8_640_000, "100d"),
    ],
)
def test_a_duration_is_shown_in_words_that_parse_back_to_it(value, words):
    assert duration_words(value) == words
    assert parse_duration(words.replace(" ", "")) == value


def test_a_timeout_limit_above_its_bounds_is_refused_in_words_not_exponents():
    timeout = BY_FIELD["timeout_s"]
    assert timeout.show(8_640_000.0) == "100d"
    with pytest.raises(ValueError, match=r"^timeout: 36500d is above the most of 3650d$"):
        timeout.parse("36500d")


def test_the_tables_durations_keep_tenths_under_a_minute_and_words_from_there():
    assert (seconds(12.34), seconds(0.5, 2), seconds(None)) == ("12.3s", "0.50s", "-")
    assert seconds(8_640_000.0) == "100d" and seconds(5400.4) == "1h 30m"
