"""`gotrace dump` against the program's own runtime.Stack(buf, true), taken a moment earlier.

go-leaky prints Go's dump of all goroutines to stderr (-dump-after); gotrace dump then reads
the same goroutines from outside. The leak goroutines are parked for good, so for them both
views must agree exactly: goids, wait reasons, creation sites, parents and every frame Go
prints. Busy goroutines move between the two instants and are compared as a set only.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gotrace.binary.elf import ElfImage
from gotrace.binary.funcinfo import wrapper_functions
from gotrace.binary.pclntab import Frame, Pclntab
from gotrace.render.dump import visible_frames
from tests.gobuild import EDGE_GO_VERSIONS, GO_VERSIONS, build_go
from tests.integration.goleaky import GO_LEAKY_SRC, ROOT, Lines, markers

LEAKS = {"recv": 3, "wg": 5, "send": 7, "ctx": 9, "ticker": 11, "http": 13, "mutex": 15}
CREATORS = {"main.leakRecv": "recv", "main.leakWG": "wg", "main.leakSend": "send",
            "main.leakCtx": "ctx", "main.leakTicker": "ticker", "main.leakyHandler": "http",
            "main.leakMutex": "mutex"}
MAIN_GO = str(GO_LEAKY_SRC / "main.go")
HEADER = re.compile(r"^goroutine (\d+)(?: gp=\S+ m=\S+(?: mp=\S+)?)? \[([^\]]*)\]:$")
CREATED = re.compile(r"^created by (\S+)(?: in goroutine (\d+))?$")


@dataclass
class GoGoroutine:
    """One goroutine as runtime.Stack printed it."""

    goid: int
    state: str  # wait reason or status, without ", N minutes"
    frames: list[Frame] = field(default_factory=list)
    created_by: Frame | None = None
    parent: int | None = None


def _where(line: str) -> tuple[str, int]:
    path, _, rest = line.strip().rpartition(":")
    return path, int(rest.split()[0])


def parse_go_dump(text: str) -> dict[int, GoGoroutine]:
    out: dict[int, GoGoroutine] = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        m = HEADER.match(lines[0])
        assert m, f"not a goroutine header: {lines[0]!r}"
        state = m[2].split(",")[0].strip()
        g = GoGoroutine(int(m[1]), state)
        i = 1
        while i + 1 < len(lines):
            head, where = lines[i], lines[i + 1]
            c = CREATED.match(head)
            if c:
                g.created_by = Frame(c[1], *_where(where))
                g.parent = int(c[2]) if c[2] else None
            elif head.startswith("..."):
                i += 1
                continue
            else:
                g.frames.append(Frame(head.rsplit("(", 1)[0], *_where(where)))
            i += 2
        out[g.goid] = g
    return out


def leak_flags() -> list[str]:
    return [a for k, n in LEAKS.items() for a in (f"-{k}", str(n))]


def dump_both(binary: Path) -> tuple[dict[int, GoGoroutine], dict[str, Any]]:
    """(runtime.Stack's view, gotrace dump --json) of one go-leaky run."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(binary), "-leaks-at-start", *leak_flags(),
                                 "-dump-after", "2s"],
                                stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1)
        try:
            out = Lines(proc.stdout)
            out.wait_for(r"^ready", timeout=60)
            out.wait_for(r"^dumped", timeout=60)
            gt = subprocess.run([sys.executable, "-m", "gotrace", "dump", str(proc.pid),
                                 "--json"], capture_output=True, text=True, cwd=ROOT,
                                timeout=120, check=False)
            assert gt.returncode == 0, gt.stderr
            assert gt.stderr == ""
            ours: dict[str, Any] = json.loads(gt.stdout)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        err.seek(0)
        text = err.read()
    begin, end = "=== go-leaky stack dump begin ===\n", "\n=== go-leaky stack dump end ==="
    assert begin in text and end in text, text[-2000:]
    return parse_go_dump(text.split(begin, 1)[1].split(end, 1)[0]), ours


def frame(obj: dict[str, Any]) -> Frame:
    return Frame(obj["function"], obj["file"], obj["line"])


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("variant", ["plain", "stripped"])
def test_dump_agrees_with_runtime_stack(version: str, variant: str) -> None:
    check_against_runtime_stack(version, build_go(version, GO_LEAKY_SRC, variant))


@pytest.mark.parametrize("version", EDGE_GO_VERSIONS)
@pytest.mark.parametrize("variant", ["pie", "cgo", "cgo-pie"])
def test_dump_of_pie_and_cgo_builds(version: str, variant: str) -> None:
    """A load bias to add (PIE), C start-up code and extra Ms' dead gs (cgo)."""
    check_against_runtime_stack(version, build_go(version, GO_LEAKY_SRC, variant))


def check_against_runtime_stack(version: str, binary: Path) -> None:
    wrappers = wrapper_functions(Pclntab(ElfImage(str(binary))))
    theirs, ours = dump_both(binary)
    assert ours["go_version"].startswith(f"go{version}")
    # A busy goroutine may keep changing while it is read: gotrace skips and counts it. The
    # leaks below are parked for good and must all be there; only busy ones may be skipped.
    # go-leaky's busy goroutines: one per busy go line, plus 1 more for pingpong, 2 for sleeper.
    assert ours["skipped"] <= len(markers()["busy"]) + 3
    assert ours["system_hidden"] > 0  # GC workers, sweeper... hidden as Go hides them
    mine = {g["goid"]: g for g in ours["goroutines"]}
    assert len(mine) == len(ours["goroutines"]), "duplicate goids"

    # The leaks: parked for good, so the two views agree exactly.
    leaks = {goid: g for goid, g in theirs.items()
             if g.created_by is not None and g.created_by.function in CREATORS}
    per_kind: dict[str, int] = {}
    for g in leaks.values():
        assert g.created_by is not None
        per_kind[CREATORS[g.created_by.function]] = \
            per_kind.get(CREATORS[g.created_by.function], 0) + 1
    assert per_kind == LEAKS
    lines = markers()["leak"]
    bad = []
    for goid, g in sorted(leaks.items()):
        got = mine.get(goid)
        assert got is not None, f"goroutine {goid} ({g.state}) missing from gotrace dump"
        assert got["status"] == "waiting"
        created = frame(got["created_at"])
        kind = CREATORS[created.function]
        assert created == g.created_by
        assert (created.file, created.line) == (MAIN_GO, lines[kind])
        assert got["parent_goid"] == g.parent
        visible = list(visible_frames([frame(f) for f in got["stack"]], wrappers))
        if (got["wait_reason"], visible) != (g.state, g.frames):
            bad.append(f"goroutine {goid}: gotrace {got['wait_reason']} {visible}\n"
                       f"   runtime.Stack {g.state} {g.frames}")
        assert got["stack"][0]["function"] == "runtime.gopark"
    assert not bad, "\n".join(bad[:5])

    # Everything else that lives on is there too (churn workers come and go; the goroutine
    # that called runtime.Stack is the signal loop, parked again by now).
    def lasting(goids: set[int], created: dict[int, str | None]) -> set[int]:
        return {i for i in goids if created.get(i) not in ("main.churn", None) or i == 1}

    their_created = {i: g.created_by.function if g.created_by else None
                     for i, g in theirs.items()}
    our_created = {i: g["created_at"]["function"] for i, g in mine.items()}
    missing = lasting(set(theirs), their_created) - lasting(set(mine), our_created)
    assert len(missing) <= ours["skipped"], missing
    assert lasting(set(mine), our_created) <= lasting(set(theirs), their_created)


def test_dump_text_reads_like_go(version: str) -> None:
    """The text groups the 15 mutex waiters into one block with Go's frames and tabs."""
    binary = build_go(version, GO_LEAKY_SRC, "plain")
    proc = subprocess.Popen([str(binary), "-leaks-at-start", "-mutex", "15", "-busy=false"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            bufsize=1)
    try:
        Lines(proc.stdout).wait_for(r"^ready", timeout=60)
        gt = subprocess.run([sys.executable, "-m", "gotrace", "dump", str(proc.pid)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert gt.returncode == 0, gt.stderr
    line = markers()["leak"]["mutex"]
    minor = int(version.split(".")[1])
    reason = "sync.Mutex.Lock" if minor >= 20 else "semacquire"
    block = re.search(rf"\n15 goroutines \[{re.escape(reason)}\]: [\d, ]+\n(.*?)\n\n",
                      gt.stdout + "\n\n", re.S)
    assert block, gt.stdout
    assert block[1].endswith("created by main.leakMutex" +
                             ("" if minor < 21 else " in goroutine 1") +
                             f"\n\t{MAIN_GO}:{line}")
    assert f"main.leakMutex.func1(...)\n\t{MAIN_GO}:{line}\n" in block[1]
    assert "runtime.gopark" not in gt.stdout
    assert gt.stdout.startswith(f"gotrace dump · pid {proc.pid} · go{version}")


def test_dump_of_a_missing_process_is_one_line() -> None:
    gt = subprocess.run([sys.executable, "-m", "gotrace", "dump", "999999999"],
                        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert gt.returncode == 2
    assert gt.stderr.strip() == "gotrace: error: no process with PID 999999999"
