"""Edge cases of live processes: each ends with one clear line, never a traceback or a wrong
figure: a target that exec's another program, one that is frozen, one whose memory gotrace
may not read, a PID reused under gotrace's feet."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.gobuild import ROOT, TARGETS, build_go
from tests.integration.conftest import GO_VERSIONS
from tests.integration.goleaky import GO_LEAKY_SRC, SLOW, GoLeaky, Lines, gotrace, json_reports

NEWEST = GO_VERSIONS[-1]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


@pytest.mark.parametrize("mode", [[], ["--no-bpf"], ["--park-times", "exact"]])
def test_a_target_that_execs_another_program_ends_the_trace(mode: list[str]) -> None:
    binary = build_go(NEWEST, TARGETS / "execer", "plain")
    proc = subprocess.Popen([str(binary), "/bin/sleep", "30"], stdout=subprocess.PIPE,
                            text=True, bufsize=1)
    out = Lines(proc.stdout)
    try:
        out.wait_for(r"^ready")
        gt = gotrace("attach", str(proc.pid), "--json", "--threshold", "1s", "--interval", "1s",
                     "--duration", "30s", *mode)
        err = Lines(gt.stderr)
        err.wait_for("attached", timeout=60)
        time.sleep(2)
        proc.send_signal(signal.SIGUSR1)  # becomes /bin/sleep, same PID
        line = err.wait_for(r"exec'd", timeout=30)
        assert "/bin/sleep" in line or "sleep" in line
        stdout, _ = gt.communicate(timeout=60 * SLOW)
        assert gt.returncode == 0
        assert "Traceback" not in "\n".join(err.seen)
        final = json_reports(stdout)[-1]
        assert final["final"] and final["target_exited"]
        # What it reports is the last state of the Go program, never the new one read with
        # the old binary's facts.
        leaks = [s for s in final["suspects"] if s["created_at"]["file"].endswith("execer/main.go")]
        assert [s["count"] for s in leaks] == [3]
    finally:
        proc.kill()
        proc.wait()


def test_a_frozen_target_is_said_to_be_frozen() -> None:
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary), "-recv", "3")
    try:
        gt = gotrace("attach", str(target.pid), "--json", "--threshold", "1s", "--interval", "1s",
                     "--duration", "6s")
        err = Lines(gt.stderr)
        err.wait_for("attached", timeout=60)
        os.kill(target.pid, signal.SIGSTOP)
        err.wait_for(r"is stopped \(SIGSTOP", timeout=30)
        time.sleep(1.5)
        os.kill(target.pid, signal.SIGCONT)
        err.wait_for(r"runs again", timeout=30)
        stdout, _ = gt.communicate(timeout=60 * SLOW)
        assert gt.returncode == 0
        assert json_reports(stdout)[-1]["final"]
        target.ticks(2)  # it runs on
    finally:
        os.kill(target.pid, signal.SIGCONT)
        assert target.stop() == 0


@pytest.mark.parametrize("command", [["dump"], ["attach", "--no-bpf", "--duration", "1s"]])
def test_memory_gotrace_may_not_read_is_exit_3_with_the_fix(command: list[str]) -> None:
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary))
    try:
        p = subprocess.run([*NOBODY, sys.executable, "-m", "gotrace", command[0],
                            str(target.pid), *command[1:]],
                           capture_output=True, text=True, cwd="/", timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT),
                                "GOTRACE_BINARY_CACHE": "off"})
        assert p.returncode == 3, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gotrace: error: "), p.stderr
        assert "permission denied" in lines[0] and "CAP_SYS_PTRACE" in lines[0]
    finally:
        assert target.stop() == 0


def test_a_pid_reused_while_gotrace_opens_it_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process gotrace found is gone and its PID taken by another before the binary is
    read: the start time, checked again after the read, says so."""
    from gotrace.commands import common
    from gotrace.errors import BadInput
    from gotrace.live import process

    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary))
    try:
        real = process._start_time
        calls = {"n": 0}

        def start_time(pid: int) -> int | None:
            calls["n"] += 1
            t = real(pid)
            return t if calls["n"] == 1 or t is None else t + 1  # a newer process after

        monkeypatch.setattr(process, "_start_time", start_time)
        with pytest.raises(BadInput, match="exited or exec'd another program"):
            common.open_target(target.pid)
    finally:
        assert target.stop() == 0


def test_no_bpf_needs_only_the_right_to_read_memory() -> None:
    """A container that grants CAP_SYS_PTRACE but not BPF: attach --no-bpf and dump work as
    an unprivileged user with that one capability (process_vm_readv; /proc/PID/mem is
    root's file)."""
    binary = build_go(NEWEST, GO_LEAKY_SRC, "plain")
    target = GoLeaky(str(binary), "-recv", "3")
    ptrace_only = [*NOBODY[:-1], "--inh-caps=+sys_ptrace", "--ambient-caps=+sys_ptrace"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GOTRACE_BINARY_CACHE": "off"}
    try:
        p = subprocess.run([*ptrace_only, sys.executable, "-m", "gotrace", "attach",
                            str(target.pid), "--no-bpf", "--json", "--threshold", "1s",
                            "--duration", "3s"], capture_output=True, text=True, cwd="/",
                           timeout=120, env=env)
        assert p.returncode == 0, p.stderr
        final = json_reports(p.stdout)[-1]
        recv = [s for s in final["suspects"] if s["created_at"]["function"] == "main.leakRecv"]
        assert [s["count"] for s in recv] == [3]
        d = subprocess.run([*ptrace_only, sys.executable, "-m", "gotrace", "dump",
                            str(target.pid), "--json"], capture_output=True, text=True,
                           cwd="/", timeout=120, env=env)
        assert d.returncode == 0, d.stderr
    finally:
        assert target.stop() == 0
