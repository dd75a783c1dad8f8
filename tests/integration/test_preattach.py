"""Leaks made before gotrace attached are reported from the first report on, exactly.

go-leaky makes one batch of leaks at start-up, gotrace attaches later: the first report must
already hold them (exact counts at the exact go lines, all marked as parked before the
attach). A second batch made after the attach must join the same groups, so that the final
report has both batches, the first still counted as before-attach.
"""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.gobuild import build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.goleaky import GO_LEAKY_SRC, GoLeaky, Lines, gotrace, markers

LEAKS = {"recv": 3, "send": 5, "mutex": 7}
MAIN_GO = str(GO_LEAKY_SRC / "main.go")


def leak_groups(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    lines = {line: kind for kind, line in markers()["leak"].items()}
    out = {}
    for s in report["suspects"]:
        kind = lines.get(s["created_at"]["line"]) if s["created_at"]["file"] == MAIN_GO else None
        if kind is not None:
            assert kind not in out, f"two groups for the {kind} leak: {report['suspects']}"
            out[kind] = s
    return out


def counts(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {k: (s["count"], s["before_attach"]) for k, s in leak_groups(report).items()}


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("variant", ["plain", "stripped"])
def test_leaks_made_before_the_attach_are_in_the_first_report(version: str,
                                                                variant: str) -> None:
    binary = build_go(version, GO_LEAKY_SRC, variant)
    flags = [a for k, n in LEAKS.items() for a in (f"-{k}", str(n))]
    target = GoLeaky(str(binary), "-leaks-at-start", "-on-usr1", *flags)  # batch 1 made
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s",
                     "--interval", "2s")
        err = Lines(gt.stderr)
        err.wait_for("attached", timeout=90)
        seeded = err.wait_for(r"goroutines existed already", timeout=30)
        out = Lines(gt.stdout)
        first = json.loads(out.wait_for(r"^\{", timeout=60))
        assert first["final"] is False
        assert counts(first) == {k: (n, n) for k, n in LEAKS.items()}, first["suspects"]
        for kind, s in leak_groups(first).items():
            # Known for them: the go statement only, and the stack they wait in.
            assert s["creation_stack"] == [s["created_at"]], kind
            assert s["parked_stack"][0]["function"] == "runtime.gopark", kind
            assert s["parked_s_max"] >= 1.0
        assert first["lost_events"] == 0, first["lost"]
        assert int(seeded.split()[1].replace(",", "")) >= sum(LEAKS.values())

        target.signal(signal.SIGUSR1)  # batch 2, born under the probes
        target.out.wait_for(r"^batch 2 made", timeout=60)
        want = {k: (2 * n, n) for k, n in LEAKS.items()}
        seen = []
        while True:
            report = json.loads(out.wait_for(r"^\{", timeout=60))
            seen.append(counts(report))
            if counts(report) == want:
                break
            assert len(seen) < 15, f"never reached {want}: {seen}"
        gt.send_signal(signal.SIGINT)
        final = json.loads(out.wait_for(r'^\{.*"final":true', timeout=60))
        assert gt.wait(timeout=60) == 0
        assert counts(final) == want
        assert final["lost_events"] == 0, final["lost"]
        for kind, s in leak_groups(final).items():
            # The group now also holds goroutines created under the probes: full stack.
            assert len(s["creation_stack"]) > 1, kind
            assert s["creation_stack"][0] == s["created_at"]
            assert s["created_at"]["line"] == markers()["leak"][kind]
        target.ticks(2)  # the target runs on after the detach
    finally:
        assert target.stop() == 0
