"""gotrace attach on go-leaky: exact counts at exact go lines, nothing else, target unharmed."""

from __future__ import annotations

import signal

import pytest

from tests.integration.goleaky import GO_LEAKY_SRC, GoLeaky, Lines, gotrace, json_reports, markers

LEAKS = {"recv": 3, "wg": 5, "send": 7, "ctx": 9, "ticker": 11, "http": 13, "mutex": 15}
MAIN_GO = str(GO_LEAKY_SRC / "main.go")


def expected_reason(kind: str, version: str) -> str:
    minor = int(version.split(".")[1])
    if kind == "wg":
        return "sync.WaitGroup.Wait" if minor >= 24 else "semacquire"
    if kind == "mutex":
        return "sync.Mutex.Lock" if minor >= 20 else "semacquire"
    return {"recv": "chan receive", "ctx": "chan receive", "ticker": "chan receive",
            "send": "chan send", "http": "chan send"}[kind]


def leak_flags() -> list[str]:
    return [a for k, n in LEAKS.items() for a in (f"-{k}", str(n))]


def test_attach_reports_exactly_the_leaks(go_leaky: tuple[str, str]) -> None:
    version, binary = go_leaky
    lines = markers()
    target = GoLeaky(binary, "-on-usr1", *leak_flags())
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "3s",
                     "--interval", "1s", "--duration", "10s")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)  # the leaks are born after the probes are in
        target.out.wait_for(r"^batch 1 made")
        stdout, _ = gt.communicate(timeout=60)
        assert gt.returncode == 0
        reports = json_reports(stdout)
        final = reports[-1]
        assert final["final"] is True and not any(r["final"] for r in reports[:-1])
        assert final["go_version"].startswith(f"go{version}")
        assert final["pid"] == target.pid
        assert final["lost_events"] == 0, final["lost"]

        # Goroutines parked by design (the signal loop that made the batch) may show; the
        # rest of go-leaky's groups must be exactly the leaks.
        idle = set(lines["idle"].values())
        ours = [s for s in final["suspects"]
                if s["created_at"]["file"] == MAIN_GO and s["created_at"]["line"] not in idle]
        by_line = {s["created_at"]["line"]: s for s in ours}
        assert {line: s["count"] for line, s in by_line.items()} == {
            lines["leak"][k]: n for k, n in LEAKS.items()}
        for kind, line in lines["leak"].items():
            s = by_line[line]
            assert s["wait_reason"] == expected_reason(kind, version), kind
            assert s["parked_s_max"] >= 3.0
            assert s["creation_stack"][0] == s["created_at"]
            assert s["parked_stack"][0]["function"] == "runtime.gopark"
            assert len(s["goids"]) == min(10, LEAKS[kind])
        # Busy goroutines, the one computing after a network wake-up included, are not leaks.
        # That one is parked in the table (netpoll wake-ups are not probed) and must have been
        # caught by the memory check at least once while it computed past the threshold.
        assert any(r["no_longer_parked"] >= 1 for r in reports)
        busy = set(lines["busy"].values())
        assert not [s for s in final["suspects"] if s["created_at"]["line"] in busy
                    and s["created_at"]["file"] == MAIN_GO]
        # The only other parked goroutine gotrace may see is main, waiting for signals.
        others = [s for s in final["suspects"] if s["created_at"]["file"] != MAIN_GO]
        assert all(s["start_function"] == "runtime.main" for s in others), others
        assert final["created"] >= sum(LEAKS.values())

        # The target never noticed: same output format, counters still moving.
        ticks = target.ticks(3)
        assert [t["tick"] for t in ticks] == list(range(ticks[0]["tick"], ticks[0]["tick"] + 3))
        assert ticks[-1]["pingpong"] > ticks[0]["pingpong"]
        assert ticks[-1]["echoes"] > ticks[0]["echoes"]
    finally:
        assert target.stop() == 0


def test_bpf_park_stacks_match_memory_stacks(go_leaky: tuple[str, str]) -> None:
    """Both sources of parked stacks give the same frames for the same leak."""
    _, binary = go_leaky
    line = markers()["leak"]["wg"]
    target = GoLeaky(binary, "-on-usr1", "-wg", "5")
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval",
                     "1s", "--duration", "5s", "--park-stacks", "bpf")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 1 made")
        stdout, _ = gt.communicate(timeout=60)
        bpf = [s for s in json_reports(stdout)[-1]["suspects"] if s["created_at"]["line"] == line]
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval",
                     "1s", "--duration", "2s")
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 2 made")
        stdout, _ = gt.communicate(timeout=60)
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
        stdout, stderr = gt.communicate(timeout=30)
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
    target = GoLeaky(binary, "-exit-after", "4s", "-recv", "3")
    gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval", "1s")
    stdout, stderr = gt.communicate(timeout=60)
    assert gt.returncode == 0, stderr
    assert "exited" in stderr
    final = json_reports(stdout)[-1]
    assert final["final"] is True and final["target_exited"] is True
    assert target.stop() == 0
