from __future__ import annotations

import pytest

from gotrace.durations import format_duration, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), ("10", 10.0),
])
def test_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-1s", "1 day", "ms5"])
def test_reject(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_format() -> None:
    assert [format_duration(s) for s in (0.25, 12.34, 600, 7200)] == ["250ms", "12.3s", "10.0m",
                                                                     "2.0h"]
