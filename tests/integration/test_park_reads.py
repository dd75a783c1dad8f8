"""Busy goroutines built to fool park state read from memory, next to one exact leak.

attach's default and --no-bpf never see a park or a wake-up: they read every goroutine each
read interval and call it parked all along when nothing that changes at a run changed
(gotrace/analysis/parks.py). tests/targets/parkers attacks that: goroutines that park and
wake thousands of times a second at the same lines, one that parks for just under the
threshold again and again, and one that runs exactly 256 park/wake cycles between its parks
at one line, so its 8-bit trackingSeq reads the same there every time.
"""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from tests.gobuild import TARGETS, build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.goleaky import (
    ATTACH_MODES,
    SLOW,
    Lines,
    drain,
    gotrace,
    json_reports,
)

SRC = TARGETS / "parkers"
MARKER = re.compile(r".*// park: ([\w-]+)")


def park_lines() -> dict[str, int]:
    return {m[1]: n for n, line in enumerate((SRC / "main.go").read_text().splitlines(), 1)
            if (m := MARKER.match(line))}


@pytest.mark.parametrize("mode", list(ATTACH_MODES))
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_only_the_leak_is_parked_long(version: str, mode: str) -> None:
    binary = build_go(version, SRC, "plain")
    proc = subprocess.Popen([str(binary), "-almost", "1500ms", "-burst", "300ms"],
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    out = Lines(proc.stdout)
    try:
        out.wait_for(r"^ready")
        gt = gotrace("attach", str(proc.pid), "--json", "--threshold", "2s", "--interval", "1s",
                     "--duration", "8s", *ATTACH_MODES[mode])
        stdout, stderr = gt.communicate(timeout=120 * SLOW)
        assert gt.returncode == 0, stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        drain(out)
        wraps = [int(x) for x in re.findall(r"wraps=(\d+)", "\n".join(out.seen))]
        assert wraps[-1] >= 10  # the 256-cycle bursts kept coming while gotrace read
        lines = park_lines()
        reports = json_reports(stdout)
        final = reports[-1]
        assert final["final"] and final["lost_events"] == 0, final
        ours = {s["created_at"]["line"]: s for s in final["suspects"]
                if s["created_at"]["file"].endswith("parkers/main.go")}
        # The leak's goroutines are created at its go statement, one line up from the marker.
        leak = [s for s in ours.values() if s["parked_at"]["line"] == lines["leak"]]
        assert [(s["count"], s["wait_reason"]) for s in leak] == [(3, "chan receive")]
        fooled = [s for r in reports for s in r["suspects"]
                  if s["parked_at"] and s["parked_at"]["file"].endswith("parkers/main.go")
                  and s["parked_at"]["line"] in (lines["flicker-ping"], lines["flicker-pong"],
                                                 lines["almost"], lines["wrap"])]
        assert fooled == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
