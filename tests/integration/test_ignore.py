"""Ignore rules and --baseline on go-leaky: each kind of rule hides exactly its goroutines, and
every report says how many each rule hid."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.gobuild import ROOT, build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.goleaky import (
    GO_LEAKY_SRC,
    LEAKS,
    MAIN_GO,
    SLOW,
    GoLeaky,
    Lines,
    gotrace,
    json_reports,
    leak_flags,
    markers,
)

NEWEST = GO_VERSIONS[-1]


def leak_counts(report: dict[str, Any]) -> dict[str, int]:
    kinds = {line: kind for kind, line in markers()["leak"].items()}
    return {kinds[s["created_at"]["line"]]: s["count"] for s in report["suspects"]
            if s["created_at"]["file"] == MAIN_GO and s["created_at"]["line"] in kinds}


def session(target: GoLeaky, *args: str, duration: str = "6s") -> dict[str, Any]:
    gt = gotrace("attach", str(target.pid), "--json", "--threshold", "2s", "--interval", "1s",
                 "--duration", duration, *args)
    Lines(gt.stderr).wait_for("attached", timeout=60)
    target.signal(signal.SIGUSR1)
    stdout, stderr = gt.communicate(timeout=90 * SLOW)
    assert gt.returncode == 0, stderr
    return json_reports(stdout)[-1]


def test_each_kind_of_rule_hides_exactly_its_goroutines(tmp_path: Path) -> None:
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary), "-on-usr1", *leak_flags())
    rules = tmp_path / "ignore"
    rules.write_text("# go-leaky's known leaks\n\nparked:main.onTick\ncreated:*main.go:285\n")
    try:
        final = session(target, "--ignore", "go:main.leakRecv", "--ignore",
                        "start:main.leakSend.func1", "--ignore", "/leakCtx/",
                        "--ignore", "reason:sync.Mutex.Lock", "--ignore-file", str(rules))
        assert final["ignored"] == {
            "go:main.leakRecv": LEAKS["recv"], "start:main.leakSend.func1": LEAKS["send"],
            "/leakCtx/": LEAKS["ctx"], "reason:sync.Mutex.Lock": LEAKS["mutex"],
            "parked:main.onTick": LEAKS["ticker"], "created:*main.go:285": LEAKS["http"]}
        assert leak_counts(final) == {"wg": LEAKS["wg"]}  # the one no rule names
    finally:
        assert target.stop() == 0


def test_baseline_hides_the_goroutines_that_existed_at_attach_and_only_them() -> None:
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary), "-leaks-at-start", "-on-usr1", *leak_flags())  # batch 1
    try:
        final = session(target, "--baseline", duration="7s")  # batch 2 after the attach
        assert leak_counts(final) == LEAKS  # batch 2 alone
        assert all(s["before_attach"] == 0 for s in final["suspects"])
        # Batch 1, plus go-leaky's own goroutines parked by design (accept loops, signals).
        assert set(final["ignored"]) == {"--baseline"}
        assert final["ignored"]["--baseline"] >= sum(LEAKS.values())
    finally:
        assert target.stop() == 0


def test_dump_applies_the_same_rules_and_counts_them() -> None:
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary), "-recv", "3", "-send", "7")
    try:
        p = subprocess.run([sys.executable, "-m", "gotrace", "dump", str(target.pid), "--json",
                            "--ignore", "go:main.leakRecv", "--ignore", "reason:nothing"],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert p.returncode == 0, p.stderr
        d = json.loads(p.stdout)
        assert d["ignored"] == {"go:main.leakRecv": 3, "reason:nothing": 0}
        created = [g["created_at"]["function"] for g in d["goroutines"]]
        assert "main.leakRecv" not in created and created.count("main.leakSend") == 7
        text = subprocess.run([sys.executable, "-m", "gotrace", "dump", str(target.pid),
                               "--ignore", "go:main.leakRecv"], capture_output=True, text=True,
                              cwd=ROOT, timeout=120).stdout
        assert "ignored 3 by 'go:main.leakRecv'" in text.splitlines()[0]
    finally:
        assert target.stop() == 0
