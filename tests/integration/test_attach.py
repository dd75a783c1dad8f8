"""gotrace attach on go-leaky: exact counts at exact go lines, nothing else, target unharmed."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.gobuild import build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.goleaky import (
    ATTACH_MODES,
    SLOW,
    GoLeaky,
    Lines,
    assert_exactly_the_leaks,
    assert_target_unharmed,
    gotrace,
    json_reports,
    leak_flags,
    leak_session,
    markers,
)
from tests.integration.lifetimes import LIFETIMES_SRC, Lifetimes, Traced, json_lines


@pytest.mark.parametrize("mode", list(ATTACH_MODES))
def test_attach_reports_exactly_the_leaks(go_leaky: tuple[str, str], mode: str) -> None:
    version, binary = go_leaky
    target = GoLeaky(binary, "-on-usr1", *leak_flags())
    try:
        reports, stderr = leak_session(target, threshold="3s", mode=mode)
        assert reports, stderr
        assert_exactly_the_leaks(reports, version, target.pid, 3.0, mode)
        assert_target_unharmed(target)
    finally:
        assert target.stop() == 0


def test_bpf_park_stacks_match_memory_stacks(go_leaky: tuple[str, str]) -> None:
    """Both sources of parked stacks give the same frames for the same leak."""
    _, binary = go_leaky
    line = markers()["leak"]["wg"]
    target = GoLeaky(binary, "-on-usr1", "-wg", "5")
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval",
                     "1s", "--duration", "5s", "--park-times", "exact", "--park-stacks", "bpf")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 1 made")
        stdout, _ = gt.communicate(timeout=60 * SLOW)
        bpf = [s for s in json_reports(stdout)[-1]["suspects"] if s["created_at"]["line"] == line]
        # Park state read from memory, once a second: a park is known from the first read
        # that saw it, so give batch 2 a read and the threshold after that.
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval",
                     "1s", "--duration", "3s")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 2 made")
        stdout, _ = gt.communicate(timeout=60 * SLOW)
        mem = [s for s in json_reports(stdout)[-1]["suspects"] if s["created_at"]["line"] == line]
        assert bpf[0]["count"] == 5
        # The second attach also finds batch 1, parked since before it attached: same group.
        assert (mem[0]["count"], mem[0]["before_attach"]) == (10, 5)
        # The leaf differs by line only: gopark's entry (probe) vs its mcall (memory, as Go's
        # own tracebacks print it).
        assert bpf[0]["parked_stack"][0]["function"] == mem[0]["parked_stack"][0]["function"]
        assert bpf[0]["parked_stack"][1:] == mem[0]["parked_stack"][1:]
        assert bpf[0]["parked_stack"][-1]["line"] == line
    finally:
        assert target.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_gives_a_final_report_and_detaches(go_leaky: tuple[str, str], sig: int) -> None:
    _, binary = go_leaky
    target = GoLeaky(binary, "-on-usr1", "-recv", "3")
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval", "1s")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 1 made")
        target.ticks(4)
        gt.send_signal(sig)
        stdout, stderr = gt.communicate(timeout=30 * SLOW)
        assert gt.returncode == 0, stderr
        assert "Traceback" not in stderr
        final = json_reports(stdout)[-1]
        assert final["final"] is True
        assert sum(s["count"] for s in final["suspects"]
                   if s["created_at"]["line"] == markers()["leak"]["recv"]) == 3
        target.ticks(2)  # still running after the detach
    finally:
        assert target.stop() == 0


def test_target_exit_ends_the_session_cleanly(go_leaky: tuple[str, str]) -> None:
    _, binary = go_leaky
    # Long enough for gotrace to compile and attach on a loaded machine before the exit.
    target = GoLeaky(binary, "-exit-after", f"{15 * SLOW:g}s", "-recv", "3")
    gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval", "1s")
    stdout, stderr = gt.communicate(timeout=60 * SLOW)
    assert gt.returncode == 0, stderr
    assert "exited" in stderr
    final = json_reports(stdout)[-1]
    assert final["final"] is True and final["target_exited"] is True
    assert target.stop() == 0


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_go_statement_probes_come_off_once_they_walked_a_stack(version: str) -> None:
    """attach's default costs a hot go statement a few hits, not one per goroutine: lifetimes
    creates goroutines at one go statement as fast as it can for 3 s, and that probe comes off
    within a poll. The creation count comes from the goids the reads see."""
    binary = build_go(version, LIFETIMES_SRC, "plain")
    target = Lifetimes(binary, "-mode=churn", "-duration=3s")
    try:
        traced = Traced("attach", str(target.pid), "--json", "--interval", "1s")
        traced.wait_attached()
        target.release()
        ops = int(json.loads(target.out.wait_for(r'^\{"mode"', timeout=60))["ops"])
        rc, out = traced.finish()
    finally:
        target.stop()
    assert rc == 0
    final = json_lines(out)[-1]
    assert final["final"] and final["lost_events"] == 0
    assert ops > 100_000
    assert 0 < final["go_statement_hits"] < ops / 20, (final["go_statement_hits"], ops)
    # Counted up to the last read before the target exited (at most a read interval early),
    # give or take the goids each P holds back.
    slack = 16 * (os.cpu_count() or 1) + 16
    assert ops / 2 < final["created"] <= ops + slack, (final["created"], ops)
