"""pprof export, checked by the real `go tool pprof` rather than by our own reading of the format.

Synthetic reports and dumps are written with gotrace.render.pprof and read back by the pprof of
the newest Go toolchain (and, once, of the oldest), with no binary anywhere: a temp dir as
working directory and HOME, an empty PPROF_BINARY_PATH, and stderr checked for any attempt to
symbolize. The helpers here (`Pprof`, `parse_traces`, `parse_tags`) serve
tests/integration/test_pprof.py too.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from google.protobuf import json_format

from gotrace.binary.pclntab import Frame
from gotrace.frames import MAIN_GOROUTINE
from gotrace.model import Counters, DumpedGoroutine, GoroutineDump, LeakReport, Suspect
from gotrace.render import pprof as gpprof
from gotrace.render.pprof import (
    dump_groups,
    go_site,
    leaks_profile,
    write_dump_profile,
    write_leaks_profile,
    write_profile,
)
from tests.gobuild import (
    EDGE_GO_VERSIONS,
    GO_VERSIONS,
    ToolchainUnavailable,
    go_command,
    go_env,
    version_key,
)

NEWEST = max(GO_VERSIONS, key=version_key)

# -- running pprof ------------------------------------------------------------------------------

# What pprof may say on stderr: its note that `5s:` is a range. Anything else (symbolization,
# "Main binary filename not available", fetching) fails the test.
QUIET = re.compile(r"^(tagfocus|tagignore):Interpreted '.*' as range, not regexp$")


@dataclass
class Pprof:
    """`go tool pprof` of one toolchain, in a directory with no binary in sight."""

    version: str
    home: Path

    def run(self, *args: str | Path, allow_stderr: bool = False) -> str:
        try:
            go = go_command(self.version)
        except ToolchainUnavailable as e:
            pytest.fail(str(e), pytrace=False)
        binaries = self.home / "no-binaries"
        binaries.mkdir(exist_ok=True)
        env = dict(go_env(self.version), HOME=str(self.home), PPROF_TMPDIR=str(self.home),
                   PPROF_BINARY_PATH=str(binaries))
        proc = subprocess.run([str(go), "tool", "pprof", *map(str, args)], cwd=self.home,
                              env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        if not allow_stderr:
            noise = [line for line in proc.stderr.splitlines() if not QUIET.match(line)]
            assert not noise, proc.stderr
        return proc.stdout if not allow_stderr else proc.stdout + proc.stderr


@pytest.fixture
def pprof(tmp_path: Path) -> Pprof:
    return Pprof(NEWEST, tmp_path)


@dataclass
class Trace:
    """One sample as `pprof -traces` prints it."""

    count: int
    labels: dict[str, str]
    frames: list[str]  # leaf first; -tagroot pseudo-frames last


SEPARATOR = "-----------+"
LABEL = re.compile(r"^\s*([\w:.]+):  (.*)$")
COUNT = re.compile(r"^\s*(-?\d+)(?:\s+(\S.*))?$")


def parse_traces(text: str) -> list[Trace]:
    out: list[Trace] = []
    for block in text.split(SEPARATOR)[1:]:
        lines = [line for line in block.splitlines()[1:] if line.strip()]
        if not lines:
            continue
        t = Trace(0, {}, [])
        i = 0
        while (m := LABEL.match(lines[i])) and not COUNT.match(lines[i]):
            t.labels[m[1]] = m[2]
            i += 1
        c = COUNT.match(lines[i])
        assert c, f"no count line in {block!r}"
        t.count = int(c[1])
        t.frames = [c[2]] if c[2] else []
        t.frames += [line.strip() for line in lines[i + 1 :]]
        out.append(t)
    return out


TAG_HEAD = re.compile(r"^ (\S+): Total")
TAG_LINE = re.compile(r"^\s+(-?\d+) \(\s*[\d.]+%\): (.*)$")


def parse_tags(text: str) -> dict[str, dict[str, int]]:
    """`pprof -tags`: {label: {value: count}}."""
    out: dict[str, dict[str, int]] = {}
    current: dict[str, int] = {}
    for line in text.splitlines():
        if m := TAG_HEAD.match(line):
            current = out.setdefault(m[1], {})
        elif m := TAG_LINE.match(line):
            current[m[2]] = int(m[1])
    return out


# -- synthetic reports ------------------------------------------------------------------------

R = "/usr/lib/go/src/runtime"
GOPARK = Frame("runtime.gopark", f"{R}/proc.go", 425)
CHANRECV = Frame("runtime.chanrecv", f"{R}/chan.go", 583)
CHANRECV1 = Frame("runtime.chanrecv1", f"{R}/chan.go", 442)
SEMACQUIRE = Frame("sync.runtime_SemacquireWaitGroup", f"{R}/sema.go", 114)
WAIT = Frame("sync.(*WaitGroup).Wait", "/usr/lib/go/src/sync/waitgroup.go", 118)
SELECTGO = Frame("runtime.selectgo", f"{R}/select.go", 335)
CONSUME = Frame("main.consume", "/app/main.go", 20)
RECV_SITE = Frame("main.leakRecv", "/app/main.go", 15)
WG_SITE = Frame("main.leakWG", "/app/main.go", 30)
SIGNAL = Frame("main.signalLoop", "/app/main.go", 170)


def suspect(count: int, reason: str, parked: float, site: Frame, stack: list[Frame],
            before: int = 0) -> Suspect:
    return Suspect(count=count, wait_reason=reason, parked_s_max=parked, created_at=site,
                   start_function=f"{site.function}.func1", parked_at=stack[-1],
                   creation_stack=[site, Frame("main.main", "/app/main.go", 9)],
                   parked_stack=stack, goids=list(range(10, 10 + min(count, 10))),
                   before_attach=before)


RECV_STACK = [GOPARK, CHANRECV, CHANRECV1, CONSUME, Frame("main.leakRecv.func1", "/app/main.go",
                                                           15)]
WG_STACK = [GOPARK, SEMACQUIRE, WAIT, Frame("main.leakWG.func1", "/app/main.go", 30)]
MAIN_STACK = [GOPARK, SELECTGO, SIGNAL, Frame("main.main", "/app/main.go", 140)]


def report() -> LeakReport:
    return LeakReport(
        pid=4242, go_version="go1.27.3", threshold_s=3.0, elapsed_s=8.0, live=84,
        counters=Counters(created=1000, exited=900), final=True, suspects=[
            suspect(3, "chan receive", 7.1, RECV_SITE, RECV_STACK),
            suspect(5, "sync.WaitGroup.Wait", 4.9, WG_SITE, WG_STACK),
            # The same go statement, another wait site: its own sample.
            suspect(2, "chan receive", 5.0, WG_SITE, [GOPARK, CHANRECV, CHANRECV1, WG_STACK[-1]]),
            suspect(1, "select", 75.0, MAIN_GOROUTINE, MAIN_STACK, before=1),
        ])


def expected_traces(r: LeakReport) -> list[tuple[int, dict[str, str], list[str]]]:
    return [(s.count, {"wait_reason": s.wait_reason, "go_site": go_site(s.created_at),
                       "parked": f"{int(s.parked_s_max)}s"},
             [f.function for f in s.parked_stack]) for s in r.suspects]


def got_traces(text: str) -> list[tuple[int, dict[str, str], list[str]]]:
    return [(t.count, t.labels, t.frames) for t in parse_traces(text)]


def sort_key(t: tuple[int, dict[str, str], list[str]]) -> str:
    return repr(t)


@pytest.fixture
def leaks_file(tmp_path: Path) -> Path:
    path = tmp_path / "leaks.pb.gz"
    write_leaks_profile(report(), str(path))
    return path


# -- attach -----------------------------------------------------------------------------------


def test_attach_profile_has_one_sample_per_suspect(pprof: Pprof, leaks_file: Path) -> None:
    r = report()
    got = got_traces(pprof.run("-traces", leaks_file))
    assert sorted(got, key=sort_key) == sorted(expected_traces(r), key=sort_key)


def test_counts_per_go_statement_and_wait_reason_are_exact(pprof: Pprof,
                                                           leaks_file: Path) -> None:
    tags = parse_tags(pprof.run("-tags", leaks_file))
    assert tags["go_site"] == {"main.leakRecv /app/main.go:15": 3,
                               "main.leakWG /app/main.go:30": 7, "(main goroutine)": 1}
    assert tags["wait_reason"] == {"chan receive": 5, "sync.WaitGroup.Wait": 5, "select": 1}
    assert tags["parked"] == {"7s": 3, "4s": 5, "5s": 2, "75s": 1}
    pairs = Counter[tuple[str, str]]()
    for t in parse_traces(pprof.run("-traces", leaks_file)):
        pairs[t.labels["go_site"], t.labels["wait_reason"]] += t.count
    assert pairs == {("main.leakRecv /app/main.go:15", "chan receive"): 3,
                     ("main.leakWG /app/main.go:30", "sync.WaitGroup.Wait"): 5,
                     ("main.leakWG /app/main.go:30", "chan receive"): 2,
                     ("(main goroutine)", "select"): 1}


def test_raw_profile_is_a_symbolized_goroutine_profile(pprof: Pprof, leaks_file: Path) -> None:
    raw = pprof.run("-raw", leaks_file)
    assert "PeriodType: goroutine count" in raw
    assert "Period: 1" in raw
    assert "Duration: 8s" in raw
    assert "Comment: gotrace attach: pid 4242, go1.27.3" in raw
    assert re.search(r"^Samples:\ngoroutine/count\n", raw, re.M)
    # The one mapping says functions, files, lines and inlined frames are all there.
    mappings = raw.split("Mappings\n", 1)[1].splitlines()
    assert len(mappings) == 1 and mappings[0].endswith("[FN][FL][LN][IN]")
    # Every frame as a location with its function, file and line.
    assert f"runtime.chanrecv1 {R}/chan.go:442" in raw
    assert "main.consume /app/main.go:20" in raw
    # Collection started elapsed_s before the file was written.
    when = re.search(r"^Time: (\S+ \S+)", raw, re.M)
    assert when
    started = datetime.fromisoformat(when[1][:26])
    written = datetime.fromtimestamp(leaks_file.stat().st_mtime).astimezone(None)
    delay = written.timestamp() - started.replace(tzinfo=written.tzinfo).timestamp()
    assert 7.0 <= delay <= 9.0 + 60  # 8 s before writing (some slack for a loaded machine)


def test_file_is_gzipped_and_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_profile(leaks_profile(report(), now_ns=10**18), str(a))
    write_profile(leaks_profile(report(), now_ns=10**18), str(b))
    assert a.read_bytes()[:2] == b"\x1f\x8b"
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes())


def test_tagfocus_on_park_time_selects_exactly(pprof: Pprof, leaks_file: Path) -> None:
    def counts(*flags: str) -> list[int]:
        return sorted(t.count for t in parse_traces(pprof.run("-traces", *flags, leaks_file)))

    assert counts("-tagfocus=parked=5s:") == [1, 2, 3]  # 5.0 s, 7.1 s, 75 s; not 4.9 s
    assert counts("-tagfocus=parked=:4s") == [5]
    assert counts("-tagfocus=parked=5000ms:7999ms") == [2, 3]  # units are converted
    assert counts("-tagfocus=parked=60s:") == [1]  # pprof knows no minutes
    assert counts("-tagignore=parked=60s:") == [2, 3, 5]
    assert counts("-tagfocus=wait_reason=chan receive") == [2, 3]


def test_tagroot_puts_the_labels_at_the_root(pprof: Pprof, leaks_file: Path) -> None:
    traces = parse_traces(pprof.run("-traces", "-tagroot=wait_reason,go_site", leaks_file))
    roots = {(t.frames[-2], t.frames[-1]): t.count for t in traces}
    assert roots == {("main.leakRecv /app/main.go:15", "chan receive"): 3,
                     ("main.leakWG /app/main.go:30", "sync.WaitGroup.Wait"): 5,
                     ("main.leakWG /app/main.go:30", "chan receive"): 2,
                     ("(main goroutine)", "select"): 1}
    top = pprof.run("-top", "-tagroot=go_site", leaks_file)
    assert re.search(r"^\s+0\s+0%\s+\S+\s+7\s+63\.64%\s+main\.leakWG /app/main\.go:30$", top,
                     re.M), top


def test_the_oldest_toolchain_reads_it_too(tmp_path: Path, leaks_file: Path) -> None:
    for version in EDGE_GO_VERSIONS:
        got = got_traces(Pprof(version, tmp_path).run("-traces", leaks_file))
        assert sorted(got, key=sort_key) == sorted(expected_traces(report()), key=sort_key)


def test_without_the_symbolized_marks_pprof_would_look_for_the_binary(
        pprof: Pprof, tmp_path: Path) -> None:
    """The control for every quiet-stderr check above: an unmarked mapping makes pprof try."""
    doc = json_format.MessageToDict(leaks_profile(report()), preserving_proto_field_name=True)
    doc["string_table"].append("/nonexistent/go-leaky")
    doc["mapping"] = [{"id": 1, "filename": len(doc["string_table"]) - 1}]
    path = tmp_path / "unmarked.pb.gz"
    write_profile(json_format.ParseDict(doc, gpprof._PROFILE()), str(path))
    out = pprof.run("-traces", path, allow_stderr=True)
    assert "symbolization failed" in out.lower(), out


# -- dump -------------------------------------------------------------------------------------

BUSY_SITE = Frame("main.startBusy", "/app/main.go", 60)
BUSY_STACK = [Frame("main.spin", "/app/main.go", 66)]


def dg(goid: int, site: Frame = RECV_SITE, stack: list[Frame] | None = None,
       wait_s: float | None = 12.5, status: str = "waiting",
       reason: str | None = "chan receive") -> DumpedGoroutine:
    return DumpedGoroutine(goid=goid, parent_goid=1, status=status, wait_reason=reason,
                           wait_s=wait_s, created_at=site, start_function=f"{site.function}.f",
                           stack=RECV_STACK if stack is None else stack)


def busy(goid: int) -> DumpedGoroutine:
    return dg(goid, BUSY_SITE, BUSY_STACK, None, "running", None)


def dump(goroutines: list[DumpedGoroutine]) -> GoroutineDump:
    return GoroutineDump(pid=4242, go_version="go1.27.3", goroutines=goroutines, elapsed_s=0.02)


def test_dump_groups_like_debug_1_and_splits_by_wait_second() -> None:
    d = dump([dg(1), dg(2, wait_s=12.9), dg(3, wait_s=30.0), dg(4, wait_s=None), busy(5),
              dg(6, WG_SITE, WG_STACK, reason="sync.WaitGroup.Wait"), busy(7)])
    got = sorted(((g.count, g.labels.get("wait_reason"), g.labels["status"], g.parked_s)
                  for g in dump_groups(d)), key=repr)
    assert got == sorted([(2, "chan receive", "waiting", 12.5),  # 12.5 s and 12.9 s
                          (1, "chan receive", "waiting", 30.0),
                          (1, "chan receive", "waiting", None),
                          (1, "sync.WaitGroup.Wait", "waiting", 12.5),
                          (2, None, "running", None)], key=repr)


def test_dump_profile_reads_back(pprof: Pprof, tmp_path: Path) -> None:
    path = tmp_path / "dump.pb.gz"
    write_dump_profile(dump([dg(1), dg(2), dg(3, wait_s=None), busy(4), busy(5)]), str(path))
    traces = sorted(((t.count, t.labels, t.frames) for t in parse_traces(
        pprof.run("-traces", path))), key=sort_key)
    recv = [f.function for f in RECV_STACK]
    assert traces == sorted([
        (2, {"status": "waiting", "wait_reason": "chan receive",
             "go_site": "main.leakRecv /app/main.go:15", "parked": "12s"}, recv),
        (1, {"status": "waiting", "wait_reason": "chan receive",
             "go_site": "main.leakRecv /app/main.go:15"}, recv),  # wait not dated yet
        (2, {"status": "running", "go_site": "main.startBusy /app/main.go:60"}, ["main.spin"]),
    ], key=sort_key)
    raw = pprof.run("-raw", path)
    assert "Comment: gotrace dump: pid 4242, go1.27.3, 5 goroutines" in raw
    assert "[FN][FL][LN][IN]" in raw
    # Only goroutines whose wait is known and long enough pass a park-time focus.
    assert [t.count for t in parse_traces(pprof.run("-traces", "-tagfocus=parked=10s:",
                                                    path))] == [2]


def test_diff_base_of_two_dumps_shows_the_growth(pprof: Pprof, tmp_path: Path) -> None:
    old, new = tmp_path / "old.pb.gz", tmp_path / "new.pb.gz"
    write_dump_profile(dump([dg(1, wait_s=3.2), dg(2, wait_s=3.2), dg(3, wait_s=3.2),
                             busy(4), busy(5)]), str(old))
    write_dump_profile(dump(
        [dg(1, wait_s=13.2), dg(2, wait_s=13.2), dg(3, wait_s=13.2)]  # still there, older
        + [dg(i, wait_s=2.0) for i in range(10, 15)]  # 5 new receivers
        + [dg(i, WG_SITE, WG_STACK, 2.0, reason="sync.WaitGroup.Wait") for i in (20, 21)]
        + [busy(4), busy(5)]), str(new))
    tags = parse_tags(pprof.run("-tags", f"-diff_base={old}", new))
    assert tags["go_site"] == {"main.leakRecv /app/main.go:15": 5,
                               "main.leakWG /app/main.go:30": 2,
                               "main.startBusy /app/main.go:60": 0}
    top = pprof.run("-top", f"-diff_base={old}", new)
    cum = {m[2]: int(m[1]) for m in re.finditer(
        r"^\s+-?\d+\s+\S+\s+\S+\s+(-?\d+)\s+\S+\s+(\S+)$", top, re.M)}
    assert cum["main.leakRecv.func1"] == 5
    assert cum["main.leakWG.func1"] == 2
    assert cum["runtime.gopark"] == 7
    assert cum.get("main.spin", 0) == 0
