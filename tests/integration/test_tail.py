"""gotrace tail on goroutines of known lives: every event of every goroutine, in order."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest

from tests.gobuild import build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.lifetimes import (
    LIFETIMES_SRC,
    REASON,
    ROOT,
    SCENARIO,
    Lifetimes,
    Traced,
    is_target_file,
    json_lines,
    markers,
    run_scenario,
)

ORDER = ["create", "park", "wake", "exit"]


@pytest.fixture(scope="module", params=GO_VERSIONS)
def lifetimes(request: pytest.FixtureRequest) -> str:
    return str(build_go(request.param, LIFETIMES_SRC, "plain"))


def by_goid(events: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] != "end":
            out[e["goid"]].append(e)
    return out


def scenario_goids(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """goids created at each of the scenario's go statements."""
    lines = markers()["site"]
    names = {lines[n]: n for n in SCENARIO}
    out: dict[str, list[int]] = {n: [] for n in SCENARIO}
    for e in events:
        if e["type"] == "create" and is_target_file(e["site"]) and e["site"]["line"] in names:
            out[names[e["site"]["line"]]].append(e["goid"])
    return out


def test_tail_json_every_event_in_order(lifetimes: str) -> None:
    rc, out, err = run_scenario(lifetimes, "tail", "PID", "--json")
    assert rc == 0, err
    events = json_lines(out)
    end = events[-1]
    assert end["type"] == "end"
    assert end["target_exited"] is True
    assert end["lost_events"] == 0
    assert end["events"] == len(events) - 1
    goids = scenario_goids(events)
    assert {n: len(g) for n, g in goids.items()} == SCENARIO
    per = by_goid(events)
    parks = markers()["park"]
    for name, ids in goids.items():
        for goid in ids:
            evs = per[goid]
            assert [e["type"] for e in evs] == ORDER, (name, goid, evs)
            create, park, wake, exit_ = evs
            assert create["t"] <= park["t"] <= wake["t"] <= exit_["t"]
            assert all(e["parent_goid"] == create["parent_goid"] for e in evs)
            assert create["parent_goid"] == 1  # main
            assert park["wait_reason"] == REASON[name]
            assert is_target_file(park["site"]) and park["site"]["line"] == parks[name]
            # Sleeps never end early: lower bounds only, never a timed upper bound.
            assert wake["parked_s"] > 0
            assert exit_["lifetime_s"] >= wake["parked_s"]
            assert wake["site"] == exit_["site"] == create["site"]
    assert any("exited" in line for line in err)


def test_tail_match_filters_in_bpf(lifetimes: str) -> None:
    rc, out, err = run_scenario(lifetimes, "tail", "PID", "--json", "--match", r"spawnMedium")
    assert rc == 0, err
    events = json_lines(out)
    end = events.pop()
    assert end["type"] == "end" and end["lost_events"] == 0
    goids = scenario_goids(events)
    assert {n: len(g) for n, g in goids.items()} == {"short": 0, "medium": 11, "long": 0}
    # Nothing else came through: every event belongs to the 11 selected goroutines.
    per = by_goid(events)
    assert sorted(per) == sorted(goids["medium"])
    for goid, evs in per.items():
        assert [e["type"] for e in evs] == ORDER, (goid, evs)
    # The kernel still saw everything; only the matching goroutines were sent.
    assert end["created"] >= sum(SCENARIO.values())


def test_tail_events_when_gopark_grows_the_stack(lifetimes: str) -> None:
    """gopark's prologue runs twice when the stack grows there: one park, not two."""
    rc, out, err = run_scenario(lifetimes, "tail", "PID", "--json", mode="deep")
    assert rc == 0, err
    events = json_lines(out)
    assert events.pop()["lost_events"] == 0
    lines = markers()
    goids = [e["goid"] for e in events if e["type"] == "create" and is_target_file(e["site"])
             and e["site"]["line"] == lines["site"]["deep"]]
    assert len(goids) == 400
    per = by_goid(events)
    for goid in goids:
        evs = per[goid]
        assert [e["type"] for e in evs] == ["create", "park", "wake", "park", "wake", "exit"], evs
        assert [evs[1]["site"]["line"], evs[3]["site"]["line"]] == [lines["park"]["timer"],
                                                                   lines["park"]["deep"]]


def test_tail_events_subset(lifetimes: str) -> None:
    rc, out, err = run_scenario(lifetimes, "tail", "PID", "--json", "--events", "create,exit")
    assert rc == 0, err
    events = json_lines(out)
    assert events.pop()["type"] == "end"
    assert {e["type"] for e in events} == {"create", "exit"}
    goids = scenario_goids(events)
    per = by_goid(events)
    for ids in goids.values():
        for goid in ids:
            assert [e["type"] for e in per[goid]] == ["create", "exit"]


def test_tail_live_screen_without_tty(lifetimes: str) -> None:
    """Not a terminal: the final screen is printed once, at the end, with its figures."""
    rc, out, err = run_scenario(lifetimes, "tail", "PID")
    assert rc == 0, err
    assert "gotrace tail" in out and "target exited" in out
    lines = markers()["site"]
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 5 and cells[4].startswith("main.spawn"):
            rows[cells[4]] = cells
    for name, n in SCENARIO.items():
        func = {"short": "main.spawnShort", "medium": "main.spawnMedium",
                "long": "main.spawnLong"}[name]
        row = rows.get(f"{func} main.go:{lines[name]}")
        # live, Δ, created, exited: all of them came and went while the screen watched.
        assert row is not None, out
        assert row[0] == "0" and row[2] == str(n) and row[3] == str(n), row
    assert out.rstrip().endswith("lost 0")


def test_tail_sigterm_ends_cleanly(lifetimes: str) -> None:
    target = Lifetimes(lifetimes)
    try:
        traced = Traced("tail", str(target.pid), "--json")
        traced.wait_attached()
        traced.proc.send_signal(signal.SIGTERM)
        rc, out = traced.finish()
        assert rc == 0
        events = json_lines(out)
        assert events[-1]["type"] == "end" and events[-1]["target_exited"] is False
    finally:
        target.stop()


@pytest.mark.parametrize("args, message", [
    (["--events", "create,bogus"], "--events"),
    (["--match", "("], "not a valid regular expression"),
    (["--match", "no_such_function_anywhere"], "matches no function"),
])
def test_tail_bad_input(lifetimes: str, args: list[str], message: str) -> None:
    target = Lifetimes(lifetimes)
    try:
        p = subprocess.run([sys.executable, "-m", "gotrace", "tail", str(target.pid), *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert p.returncode == 2
        assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    finally:
        target.stop()


def test_tail_and_hist_no_such_pid() -> None:
    for cmd in (["tail", "999999"], ["hist", "999999", "--duration", "1s"]):
        p = subprocess.run([sys.executable, "-m", "gotrace", *cmd], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
        assert p.returncode == 2 and "no process with PID 999999" in p.stderr
