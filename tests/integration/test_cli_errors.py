"""Bad input gets one line on stderr, no traceback, and a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.goleaky import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gotrace", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def free_pid() -> int:
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid += 1
    return pid


def test_no_such_pid() -> None:
    p = run("attach", str(free_pid()))
    assert p.returncode == 2
    assert "no process with PID" in one_line_error(p)


def test_not_a_go_program() -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        p = run("attach", str(sleeper.pid))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert p.returncode == 2
    assert "is not a Go program" in one_line_error(p) and "sleep" in p.stderr


@pytest.mark.parametrize("args", [["--threshold", "soon"], ["--interval", "0s"]])
def test_bad_durations(args: list[str]) -> None:
    p = run("attach", "1", *args)
    assert p.returncode == 2
    line = one_line_error(p)
    assert "duration" in line or "zero" in line


def test_doctor_passes_here() -> None:
    p = run("doctor")
    assert p.returncode == 0, p.stdout
    assert "FAIL" not in p.stdout


@pytest.mark.parametrize("args", [["attach"], ["run"], ["attach", "1", "--no-such-option"],
                                  ["attach", "1", "--no-bpf", "--park-times", "exact"],
                                  ["frobnicate"]])
def test_usage_errors_are_one_line_with_where_to_look(args: list[str]) -> None:
    p = run(*args)
    assert p.returncode == 2
    assert "--help" in one_line_error(p)
