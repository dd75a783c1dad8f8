"""`--pprof FILE` of attach and dump on go-leaky, read back by the real `go tool pprof`.

The profile must say what gotrace's own report says, and that is go-leaky's leaks exactly: per
go statement and wait reason, the counts 3, 5, 7, ... at the marker lines. pprof runs with no
binary in reach and must not try to symbolize (tests/unit/test_pprof.py has the helpers and
the format-level checks).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.goleaky import (
    LEAKS,
    MAIN_GO,
    ROOT,
    SLOW,
    GoLeaky,
    Lines,
    assert_exactly_the_leaks,
    expected_reason,
    gotrace,
    json_reports,
    leak_flags,
    markers,
)
from tests.unit.test_pprof import NEWEST, Pprof, Trace, parse_tags, parse_traces

# The function holding each leak's go statement (what "created by" and go_site name).
CREATORS = {"recv": "main.leakRecv", "wg": "main.leakWG", "send": "main.leakSend",
            "ctx": "main.leakCtx", "ticker": "main.leakTicker", "http": "main.leakyHandler",
            "mutex": "main.leakMutex"}


@pytest.fixture
def pprof(tmp_path: Path) -> Pprof:
    home = tmp_path / "pprof"
    home.mkdir()
    return Pprof(NEWEST, home)


def leak_sites(version: str, times: int = 1) -> dict[tuple[str, str], int]:
    """{(go_site label, wait_reason label): count} of `times` batches of go-leaky's leaks."""
    lines = markers()["leak"]
    return {(f"{CREATORS[k]} {MAIN_GO}:{lines[k]}", expected_reason(k, version)): n * times
            for k, n in LEAKS.items()}


def by_site(traces: list[Trace]) -> dict[tuple[str, str], int]:
    """The same, from pprof's samples, for go-leaky's leak lines only."""
    leak_lines = {f"{MAIN_GO}:{line}" for line in markers()["leak"].values()}
    out = Counter[tuple[str, str]]()
    for t in traces:
        site = t.labels["go_site"]
        if site.split(" ", 1)[-1] in leak_lines:
            out[site, t.labels.get("wait_reason", t.labels.get("status", ""))] += t.count
    return dict(out)


def test_attach_pprof_holds_exactly_the_leaks(go_leaky: tuple[str, str], pprof: Pprof,
                                              tmp_path: Path) -> None:
    version, binary = go_leaky
    profile = tmp_path / "leaks.pb.gz"
    target = GoLeaky(binary, "-on-usr1", *leak_flags())
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "3s",
                     "--interval", "1s", "--duration", "10s", "--pprof", str(profile))
        Lines(gt.stderr).wait_for("attached", timeout=60)
        target.signal(signal.SIGUSR1)  # the leaks are born after the probes are in
        target.out.wait_for(r"^batch 1 made")
        stdout, _ = gt.communicate(timeout=60 * SLOW)
        assert gt.returncode == 0
    finally:
        assert target.stop() == 0
    reports = json_reports(stdout)
    assert_exactly_the_leaks(reports, version, target.pid, 3.0)
    final = reports[-1]

    traces = parse_traces(pprof.run("-traces", profile))
    # Exactly go-leaky's counts per creating go statement and wait reason...
    assert by_site(traces) == leak_sites(version)
    # ... and sample for sample, the final report's suspects: count, labels, parked stack.
    want = sorted((s["count"], s["wait_reason"],
                   f"{s['created_at']['function']} {s['created_at']['file']}:"
                   f"{s['created_at']['line']}" if s["created_at"]["file"]
                   else s["created_at"]["function"],
                   f"{int(s['parked_s_max'])}s", [f["function"] for f in s["parked_stack"]])
                  for s in final["suspects"])
    got = sorted((t.count, t.labels["wait_reason"], t.labels["go_site"], t.labels["parked"],
                  t.frames) for t in traces)
    assert got == want

    tags = parse_tags(pprof.run("-tags", profile))
    for (site, _), n in leak_sites(version).items():
        assert tags["go_site"][site] == n
    # Every suspect was parked at least the threshold: a focus on it keeps them all.
    focused = parse_traces(pprof.run("-traces", "-tagfocus=parked=3s:", profile))
    assert sum(t.count for t in focused) == sum(s["count"] for s in final["suspects"])
    raw = pprof.run("-raw", profile)
    assert f"Comment: gotrace attach: pid {target.pid}, go{version}" in raw
    assert raw.split("Mappings\n", 1)[1].strip().endswith("[FN][FL][LN][IN]")


def dump_pprof(pid: int, path: Path) -> None:
    gt = subprocess.run([sys.executable, "-m", "gotrace", "dump", str(pid), "--pprof",
                         str(path)], capture_output=True, text=True, cwd=ROOT,
                        timeout=120 * SLOW, check=False)
    assert gt.returncode == 0, gt.stderr
    assert "Traceback" not in gt.stderr
    assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_dump_pprof_counts_and_diff_base_growth(go_leaky: tuple[str, str], pprof: Pprof,
                                                tmp_path: Path) -> None:
    version, binary = go_leaky
    old, new = tmp_path / "old.pb.gz", tmp_path / "new.pb.gz"
    target = GoLeaky(binary, "-on-usr1", *leak_flags())
    try:
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 1 made")
        dump_pprof(target.pid, old)
        target.signal(signal.SIGUSR1)
        target.out.wait_for(r"^batch 2 made")
        dump_pprof(target.pid, new)
    finally:
        assert target.stop() == 0

    assert by_site(parse_traces(pprof.run("-traces", old))) == leak_sites(version)
    assert by_site(parse_traces(pprof.run("-traces", new))) == leak_sites(version, 2)
    # Every dumped leak goroutine is parked in the runtime, as Go's own profile shows it.
    for t in parse_traces(pprof.run("-traces", new)):
        if (t.labels["go_site"], t.labels.get("wait_reason", "")) in leak_sites(version):
            assert t.frames[0] == "runtime.gopark", t
            assert t.labels["status"] == "waiting"
    # The growth between the two dumps is one batch, per go statement.
    tags = parse_tags(pprof.run("-tags", f"-diff_base={old}", new))
    for (site, _), n in leak_sites(version).items():
        assert tags["go_site"][site] == n, (site, tags["go_site"])
    raw = pprof.run("-raw", new)
    assert f"Comment: gotrace dump: pid {target.pid}, go{version}" in raw
