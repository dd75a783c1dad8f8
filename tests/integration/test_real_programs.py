"""gotrace on a real Go server nobody here wrote: Debian's rclone (Go 1.19, stripped, 54 MB).

`rclone serve http` runs in the foreground on loopback with no configuration. The test holds
K keep-alive connections open after gotrace attached: the server then has exactly K goroutines
parked in `IO wait`, created by net/http's `go c.serve(...)`, which the report must show
with fully symbolized stacks, read from a binary with no symbol table and no DWARF.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gotrace.binary.elf import ElfImage
from tests.gobuild import ON_ARM64
from tests.integration.goleaky import ROOT, Lines, gotrace, json_reports

CONNS = 7
RCLONE = shutil.which("rclone") or "/usr/bin/rclone"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def rclone(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    if not Path(RCLONE).exists():
        pytest.fail("rclone is missing: sudo scripts/setup installs it (Debian package rclone)",
                    pytrace=False)
    www = tmp_path / "www"
    www.mkdir()
    (www / "hello.txt").write_text("hello from rclone\n")
    port = free_port()
    proc = subprocess.Popen(
        [RCLONE, "serve", "http", str(www), "--addr", f"127.0.0.1:{port}",
         "--config", str(tmp_path / "rclone.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "rclone never listened"
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def keep_alive_requests(port: int, n: int) -> list[http.client.HTTPConnection]:
    conns = []
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/hello.txt")
        resp = c.getresponse()
        assert resp.status == 200 and resp.read() == b"hello from rclone\n"
        conns.append(c)  # left open: its server goroutine parks reading the next request
    return conns


def all_frames(s: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["created_at"], s["parked_at"], *s["creation_stack"], *s["parked_stack"]]


def test_rclone_doctor(rclone: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = rclone
    p = subprocess.run([sys.executable, "-m", "gotrace", "doctor", str(proc.pid)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and not p.stderr, p.stderr
    lines = p.stdout.splitlines()
    assert all(line.startswith("OK   ") for line in lines), p.stdout
    check = 8 if ON_ARM64 else 4
    want = [
        f"OK   target          PID {proc.pid}: {RCLONE}",
        "OK   container       no: same mount and PID namespaces as gotrace",
        "OK   binary          position-dependent, cgo, stripped (no .symtab or DWARF); load bias "
        "0x0",
        "OK   g offsets       from built-in table for go1.19 (no DWARF): goid 152, status 144, "
        "waitreason 176, gopc 296, startpc 312",
        "OK   wait reasons    27 decoded from runtime.waitReason.String (their numbering changes "
        "between releases)",
        # the prologue's stack-check branch: the third instruction on arm64
        f"OK   hook park       runtime.gopark+{check:#x}: stack-check branch at +{check} (tail, "
        "hist and attach --park-times exact)",
    ]
    for w in want:
        assert w in lines, (w, p.stdout)
    assert any(line.startswith("OK   symbols         54,") for line in lines), p.stdout


def test_rclone_report_is_symbolized(rclone: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = rclone
    with ElfImage(RCLONE) as img:  # what makes this case hard: nothing but pclntab
        assert not img.has_symtab and not img.has_dwarf
    gt = gotrace("attach", str(proc.pid), "--json", "--threshold", "2s", "--interval", "1s")
    err = Lines(gt.stderr)
    out = Lines(gt.stdout)
    conns: list[http.client.HTTPConnection] = []
    try:
        err.wait_for("attached", timeout=90)
        conns = keep_alive_requests(port, CONNS)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            report = json_reports(out.wait_for(r"^\{", timeout=60))[0]
            if any(s["created_at"]["function"] == "net/http.(*Server).Serve"
                   and s["count"] >= CONNS for s in report["suspects"]):
                break
        gt.send_signal(2)
        gt.wait(timeout=60)
        for lines in (out, err):
            try:
                while True:
                    lines.wait_for("", timeout=5)
            except (EOFError, TimeoutError):
                pass
    finally:
        for c in conns:
            c.close()
        if gt.poll() is None:
            gt.kill()
            gt.wait()
    stderr = "\n".join(err.seen)
    assert gt.returncode == 0, stderr
    assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr
    reports = json_reports("\n".join(out.seen))
    final = reports[-1]
    assert final["final"] is True and final["pid"] == proc.pid
    assert final["go_version"].startswith("go1.19")
    assert final["lost_events"] == 0 and final["unverified"] == 0, final
    assert final["created"] >= CONNS and "parks" not in final  # parks are read, not probed

    # Exactly our connections, made after the attach, at net/http's go statement.
    conn_groups = [s for s in final["suspects"]
                   if s["created_at"]["function"] == "net/http.(*Server).Serve"]
    assert [(s["count"], s["wait_reason"], s["before_attach"]) for s in conn_groups] == [
        (CONNS, "IO wait", 0)]
    g = conn_groups[0]
    assert g["created_at"]["file"].endswith("net/http/server.go")
    # `go c.serve(ctx)` starts in a compiler-made closure up to Go 1.21 (gowrap from 1.22).
    assert g["start_function"] == "net/http.(*Server).Serve.func3"
    assert g["parked_stack"][0]["function"] == "runtime.gopark"
    assert any(f["function"] == "net/http.(*conn).serve" for f in g["parked_stack"])
    # Every frame of every group has a name, a file and a line.
    unnamed = [(s["created_at"], f) for s in final["suspects"] for f in all_frames(s)
               if f["function"] != "(main goroutine)" and (
                   f["function"] in ("", "?") or f["function"].startswith("0x")
                   or not f["file"] or f["file"] == "?" or f["line"] <= 0)]
    assert not unnamed, unnamed
