"""gotrace hist on goroutines of known lifetimes and park times: exact counts in exact buckets."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gobuild import build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.lifetimes import (
    LIFETIMES_SRC,
    REASON,
    SCENARIO,
    SLOT,
    is_target_file,
    json_lines,
    markers,
    run_scenario,
)


@pytest.fixture(scope="module", params=GO_VERSIONS)
def lifetimes(request: pytest.FixtureRequest) -> str:
    return str(build_go(request.param, LIFETIMES_SRC, "plain"))


def nonzero(hist: dict[str, Any]) -> list[tuple[float, float, int]]:
    return [(b["lo_s"], b["hi_s"], b["count"]) for b in hist["buckets"] if b["count"]]


def bucket(slot: int) -> tuple[float, float]:
    return (1 << slot) / 1e9, (1 << (slot + 1)) / 1e9


def test_hist_by_site_exact_buckets(lifetimes: str) -> None:
    rc, out, err = run_scenario(lifetimes, "hist", "PID", "--duration", "300s", "--by", "site",
                                "--json")
    assert rc == 0, err
    (report,) = json_lines(out)
    assert report["by"] == "site"
    assert report["target_exited"] is True
    assert report["lost_events"] == 0
    lines = markers()["site"]
    by_line = {s["site"]["line"]: s for s in report["sites"] if is_target_file(s["site"])}
    for name, n in SCENARIO.items():
        site = by_line[lines[name]]
        lo, hi = bucket(SLOT[name])
        assert nonzero(site["lifetime"]) == [(lo, hi, n)], name
        assert list(site["park"]) == [REASON[name]], name
        assert nonzero(site["park"][REASON[name]]) == [(lo, hi, n)], name
        # Percentiles sit at the bucket's mean: inside the bucket, at or above the sleep.
        for h in (site["lifetime"], site["park"][REASON[name]]):
            assert h["count"] == n
            assert lo <= h["p50_s"] < hi and lo <= h["p99_s"] < hi
    # The totals hold every site's samples.
    assert report["lifetime"]["count"] >= sum(SCENARIO.values()) + 1  # + the releaser
    assert report["park"]["chan receive"]["count"] >= SCENARIO["long"]


def test_hist_by_reason_human(lifetimes: str) -> None:
    rc, out, err = run_scenario(lifetimes, "hist", "PID", "--duration", "300s")
    assert rc == 0, err
    assert "goroutine lifetime (create → exit)" in out
    assert "park time · chan receive" in out
    # Go's own words for a sleep, and the long group's bucket with its exact count.
    assert "park time · sleep" in out
    rows = [line.split() for line in out.splitlines()]
    assert ["537ms", "1.07s", str(SCENARIO["long"]), "█" * 40] in rows
    assert any("PID" in line and "exited" in line for line in err)


def test_hist_sigint_prints_and_exits_0(lifetimes: str) -> None:
    import signal

    from tests.integration.lifetimes import Lifetimes, Traced

    target = Lifetimes(lifetimes)
    try:
        traced = Traced("hist", str(target.pid), "--duration", "300s", "--json")
        traced.wait_attached()
        traced.proc.send_signal(signal.SIGINT)
        rc, out = traced.finish()
        assert rc == 0
        (report,) = json_lines(out)
        assert report["target_exited"] is False
        assert report["lifetime"]["count"] == 0  # the target never ran its scenario
    finally:
        target.stop()
