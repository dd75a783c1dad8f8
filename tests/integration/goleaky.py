"""Drive examples/go-leaky and gotrace as a user would: real processes, real probes."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GO_LEAKY_SRC = ROOT / "examples" / "go-leaky"
# Waits (never assertions) widen under software emulation: scripts/vmtest sets
# GOTRACE_VM_ACCEL=tcg when the VM runs without KVM, where everything is 10-20x slower.
SLOW = 10.0 if os.environ.get("GOTRACE_VM_ACCEL") == "tcg" else 1.0
MARKER = re.compile(r"^\s*go\s.*//\s*(leak|busy|idle):(\w+)\s*$")


def markers() -> dict[str, dict[str, int]]:
    """{'leak': {'recv': line, ...}, 'busy': {...}, 'idle': {...}} from go-leaky's source."""
    out: dict[str, dict[str, int]] = {"leak": {}, "busy": {}, "idle": {}}
    for n, line in enumerate((GO_LEAKY_SRC / "main.go").read_text().splitlines(), 1):
        m = MARKER.match(line)
        if m:
            out[m[1]][m[2]] = n
    return out


class Lines:
    """A pipe read by a thread, so tests can wait for a line without blocking forever."""

    def __init__(self, pipe: Any) -> None:
        self.q: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout * SLOW
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line matching {pattern!r}; saw {self.seen[-10:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise EOFError(f"stream ended before {pattern!r}; saw {self.seen[-10:]}")
            self.seen.append(line)
            if rx.search(line):
                return line


class GoLeaky:
    def __init__(self, binary: str, *args: str) -> None:
        self.proc = subprocess.Popen([binary, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.out = Lines(self.proc.stdout)
        self.out.wait_for(r"^go-leaky pid=")
        self.out.wait_for(r"^ready")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def ticks(self, n: int, timeout: float = 10.0) -> list[dict[str, int]]:
        got = []
        for _ in range(n):
            line = self.out.wait_for(r"^tick ", timeout)
            got.append({k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
                       | {"tick": int(line.split()[1])})
        return got

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def gotrace(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gotrace", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT)


def json_reports(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# -- the leak check shared by test_attach.py and test_matrix.py ---------------------------------

# How attach knows a goroutine stayed parked: memory reads with go statement probes (the
# default), memory reads alone (no BPF), or probes on every park and exit.
ATTACH_MODES = {"memory": [], "no-bpf": ["--no-bpf"], "exact": ["--park-times", "exact"]}
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


def assert_exactly_the_leaks(reports: list[dict[str, Any]], version: str, pid: int,
                             threshold_s: float, mode: str = "memory") -> None:
    """The reports of a session during which go-leaky made one batch of LEAKS."""
    lines = markers()
    final = reports[-1]
    assert final["final"] is True and not any(r["final"] for r in reports[:-1])
    assert final["go_version"].startswith(f"go{version}")
    assert final["pid"] == pid
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
        assert s["parked_s_max"] >= threshold_s
        assert s["creation_stack"][0] == s["created_at"]
        callers = [f["function"] for f in s["creation_stack"][1:]]
        if mode == "no-bpf":  # no probe: the go statement alone
            assert callers == [], kind
        else:  # walked by a go statement's probe: its callers, from where the leak began
            caller = "net/http.HandlerFunc.ServeHTTP" if kind == "http" else "main.makeBatch"
            assert caller in callers, (kind, callers)
        assert s["parked_stack"][0]["function"] == "runtime.gopark"
        assert len(s["goids"]) == min(10, LEAKS[kind])
    # Busy goroutines, the one computing after a network wake-up included, are not leaks.
    # With exact park times that one is parked in the table (netpoll wake-ups are not probed)
    # and must have been caught by the memory check at least once while it computed past the
    # threshold; memory reads never see it parked while it computes.
    if mode == "exact":
        assert any(r["no_longer_parked"] >= 1 for r in reports)
    else:
        assert all(r["no_longer_parked"] == 0 for r in reports)
    busy = set(lines["busy"].values())
    assert not [s for s in final["suspects"] if s["created_at"]["line"] in busy
                and s["created_at"]["file"] == MAIN_GO]
    # The only other parked goroutine gotrace may see is main, waiting for signals.
    others = [s for s in final["suspects"] if s["created_at"]["file"] != MAIN_GO]
    assert all(s["start_function"] == "runtime.main" for s in others), others
    assert final["created"] >= sum(LEAKS.values())


def assert_target_unharmed(target: GoLeaky) -> None:
    """The target never noticed: same output format, counters still moving."""
    ticks = target.ticks(3)
    assert [t["tick"] for t in ticks] == list(range(ticks[0]["tick"], ticks[0]["tick"] + 3))
    assert ticks[-1]["pingpong"] > ticks[0]["pingpong"]
    assert ticks[-1]["echoes"] > ticks[0]["echoes"]


def leaks_seen(report: dict[str, Any]) -> int:
    """How many of the batch's leak goroutines a report shows (to know when to stop)."""
    leak_lines = set(markers()["leak"].values())
    return sum(s["count"] for s in report["suspects"]
               if s["created_at"]["file"] == MAIN_GO and s["created_at"]["line"] in leak_lines)


def leak_session(target: GoLeaky, *, threshold: str = "2s", timeout: float = 90.0,
                 mode: str = "memory") -> tuple[list[dict[str, Any]], str]:
    """Attach to a go-leaky started with -on-usr1 and leak_flags(), make one batch after the
    probes are in, wait until the periodic reports have shown every leak and the memory check
    at work (no fixed duration: a loaded machine only makes it slower), then stop gotrace with
    SIGINT. (reports, stderr)."""
    gt = gotrace("attach", str(target.pid), "--json", "--threshold", threshold,
                 "--interval", "1s", *ATTACH_MODES[mode])
    err = Lines(gt.stderr)
    out = Lines(gt.stdout)
    try:
        err.wait_for("attached", timeout=timeout)
        target.signal(signal.SIGUSR1)  # the leaks are born after the probes are in
        target.out.wait_for(r"^batch 1 made", timeout=timeout)
        deadline = time.monotonic() + timeout * SLOW
        checked = False
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = out.wait_for(r"^\{", timeout=left)
            except TimeoutError:
                break  # the final report will show what is missing
            report = json.loads(line)
            checked = checked or mode != "exact" or report["no_longer_parked"] >= 1
            if checked and leaks_seen(report) >= sum(LEAKS.values()):
                break
        gt.send_signal(signal.SIGINT)
        gt.wait(timeout=60 * SLOW)
        drain(out)
        drain(err)
    finally:
        if gt.poll() is None:
            gt.kill()
            gt.wait()
    stderr = "\n".join(err.seen)
    assert gt.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return json_reports("\n".join(out.seen)), stderr


def drain(lines: Lines) -> None:
    """Read a finished process's pipe to its end (into lines.seen)."""
    while True:
        try:
            lines.wait_for(r"", timeout=5)
        except (EOFError, TimeoutError):
            return
