"""Drive tests/targets/lifetimes (goroutines of known lifetimes and park times) and gotrace."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.integration.goleaky import Lines, gotrace

ROOT = Path(__file__).resolve().parents[2]
LIFETIMES_SRC = ROOT / "tests" / "targets" / "lifetimes"
MARKER = re.compile(r"//\s*(site|park):(\w+)\s*$")

# The scenario: how many goroutines each go statement makes, and the log2 slot (ns) that their
# lifetime and their single park fall in (see the constants of main.go).
SCENARIO = {"short": 23, "medium": 11, "long": 7}
SLOT = {"short": 25, "medium": 27, "long": 29}
REASON = {"short": "sleep", "medium": "sleep", "long": "chan receive"}


def markers() -> dict[str, dict[str, int]]:
    """{'site': {'short': line, ...}, 'park': {...}} from the target's source."""
    out: dict[str, dict[str, int]] = {"site": {}, "park": {}}
    for n, line in enumerate((LIFETIMES_SRC / "main.go").read_text().splitlines(), 1):
        m = MARKER.search(line)
        if m:
            out[m[1]][m[2]] = n
    return out


def is_target_file(site: dict[str, Any] | None) -> bool:
    return site is not None and str(site["file"]).endswith("tests/targets/lifetimes/main.go")


class Lifetimes:
    """The target, started paused: it runs its mode when release() writes a line."""

    def __init__(self, binary: str | Path, *args: str) -> None:
        self.proc = subprocess.Popen([str(binary), *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.out = Lines(self.proc.stdout)
        self.out.wait_for(r"^lifetimes pid=")
        self.out.wait_for(r"^waiting")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Traced:
    """gotrace running against a target: stderr read by a thread, stdout kept for the end."""

    def __init__(self, *args: str) -> None:
        self.proc = gotrace(*args)
        self.err = Lines(self.proc.stderr)

    def wait_attached(self, timeout: float = 120.0) -> None:
        self.err.wait_for(r"attached to PID", timeout)

    def finish(self, timeout: float = 180.0) -> tuple[int, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        rc = self.proc.wait(timeout=timeout)
        return rc, out


def run_scenario(binary: str | Path, *gotrace_args: str,
                 mode: str = "scenario") -> tuple[int, str, list[str]]:
    """Start the target paused, attach gotrace, release the target, wait for both to end.

    gotrace ends because the target exits, so no duration has to guess how slow the machine is.
    Returns gotrace's exit code, stdout and stderr lines.
    """
    target = Lifetimes(binary, f"-mode={mode}")
    try:
        traced = Traced(*[a.replace("PID", str(target.pid)) for a in gotrace_args])
        traced.wait_attached()
        target.release()
        target.out.wait_for(r"^done ", timeout=120)
        rc, out = traced.finish()
        with contextlib.suppress(EOFError):
            traced.err.wait_for(r"detached", timeout=10)
        return rc, out, traced.err.seen
    finally:
        target.stop()


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
