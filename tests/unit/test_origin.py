"""Test attribution from creation stacks, git blame parsing, file naming, annotation lines."""

from __future__ import annotations

from pathlib import Path

from gotrace.analysis import origin
from gotrace.analysis.origin import Git, parse_blame, short_name
from gotrace.binary.pclntab import Frame
from gotrace.model import Blame, GoroutineRecord, LeakReport, ProgramRun, Suspect
from gotrace.model import Counters as _Counters
from gotrace.render.annotations import annotation, github_annotations

PKG = "example.com/m/pkg"


def F(function: str, line: int = 1, file: str = "/src/m/pkg/x_test.go") -> Frame:
    return Frame(function, file, line)


TRUNNER = F("testing.tRunner", 1792, "/go/src/testing/testing.go")
GOWRAP = F("testing.(*T).Run.gowrap1", 1851, "/go/src/testing/testing.go")


def test_short_names_drop_package_and_closures() -> None:
    assert short_name(f"{PKG}.TestReceivers") == "TestReceivers"
    assert short_name(f"{PKG}.TestParent.func1") == "TestParent"
    assert short_name(f"{PKG}.TestParent.func1.2") == "TestParent"
    assert short_name(f"{PKG}.TestX.gowrap3") == "TestX"
    assert short_name("example.com/a.b/c.v2/pkg.(*Suite).TestThing.func1") == "(*Suite).TestThing"
    assert short_name("main.TestMain") == "TestMain"


def test_go_statement_in_the_test() -> None:
    assert origin.test_of([F(f"{PKG}.TestWaitGroup", 28), TRUNNER, GOWRAP]) == "TestWaitGroup"


def test_go_statement_in_a_helper_names_the_calling_test() -> None:
    stack = [F(f"{PKG}.Receivers", 11, "/src/m/pkg/x.go"), F(f"{PKG}.startAll", 40),
             F(f"{PKG}.TestReceivers", 17), TRUNNER, GOWRAP]
    assert origin.test_of(stack) == "TestReceivers"


def test_subtests_and_cleanups_name_their_test_function() -> None:
    assert origin.test_of([F(f"{PKG}.TestParent.func1", 9), TRUNNER, GOWRAP]) == "TestParent"
    cleanup = [F(f"{PKG}.TestC.func2", 30), F("testing.(*common).Cleanup.func1"),
               F("testing.(*common).runCleanup"), F("testing.tRunner.func2"), TRUNNER]
    assert origin.test_of(cleanup) == "TestC"
    assert origin.test_of([F(f"{PKG}.checkSub", 5), TRUNNER]) == "checkSub"  # t.Run("x", checkSub)


def test_benchmarks_and_no_runner() -> None:
    assert origin.test_of([F(f"{PKG}.BenchmarkX", 3), F("testing.(*B).runN"),
                    F("testing.(*B).run1.func1")]) == "BenchmarkX"
    assert origin.test_of([F("main.main", 17), F("runtime.main")]) is None
    assert origin.test_of([F(f"{PKG}.worker", 3), F(f"{PKG}.TestY.func1", 4)]) is None  # no tRunner
    assert origin.test_of([]) is None
    assert origin.test_of([TRUNNER]) is None


def rec(goid: int, parent: int, gopc: int) -> GoroutineRecord:
    return GoroutineRecord(goid=goid, gaddr=0, created_ns=1, parked_ns=1, gopc=gopc, startpc=0,
                           parent_goid=parent, wait_reason=0)


def test_tests_follow_live_creators() -> None:
    stacks = {1: [F(f"{PKG}.TestA", 3), TRUNNER],  # made by TestA's goroutine
              2: [F(f"{PKG}.pump", 7), F(f"{PKG}.TestA.func1", 4)],  # made by that one
              3: [F(f"{PKG}.pump", 7)],  # its creator is gone
              4: [F(f"{PKG}.TestB", 5), TRUNNER]}
    records = [rec(10, 5, 1), rec(11, 10, 2), rec(12, 99, 3), rec(13, 5, 4), rec(14, 14, 3)]
    got = origin.tests_by_goid(records, lambda r: stacks[r.gopc])
    assert got == {10: "TestA", 11: "TestA", 12: None, 13: "TestB", 14: None}


PORCELAIN = """\
3f9c2d1e0b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d 11 11 1
author Ada Leak
author-mail <ada@example.com>
author-time 1700000000
author-tz +0000
committer Ada Leak
committer-mail <ada@example.com>
committer-time 1700000000
committer-tz +0000
summary Add the leaky tests
filename leaky/leaky.go
\t\tgo func() { <-ch }() // leak:recv
"""


def test_parse_blame() -> None:
    assert parse_blame(PORCELAIN) == Blame("3f9c2d1e0b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d",
                                           "Ada Leak", "Add the leaky tests")
    uncommitted = PORCELAIN.replace("3f9c2d1e0b8a7c6d5e4f3a2b1c0d9e8f7a6b5c4d", "0" * 40)
    assert parse_blame(uncommitted) is None
    assert parse_blame("") is None
    assert parse_blame("fatal: not a git repository") is None


def test_git_asks_once_and_names_files_from_the_work_tree(tmp_path: Path) -> None:
    calls: list[tuple[list[str], str]] = []

    def fake(args: list[str], cwd: str) -> str | None:
        calls.append((args, cwd))
        if args[0] == "rev-parse":
            return "/repo\n" if cwd.startswith("/repo") else None
        return PORCELAIN

    git = Git(run=fake)
    file = __file__  # a file that exists: blame asks git only about real files
    assert git.blame(file, 11) == git.blame(file, 11)
    assert len(calls) == 1
    assert calls[0][0] == ["blame", "--porcelain", "-L", "11,11", "--", "test_origin.py"]
    assert git.blame("/nonexistent/x.go", 3) is None
    assert git.blame("relative/x.go", 3) is None
    assert len(calls) == 1
    src = tmp_path / "go" / "leaky"
    src.mkdir(parents=True)
    top = f"{tmp_path}\n"
    assert Git(run=lambda a, c: top).relative(str(src / "leaky.go")) == "go/leaky/leaky.go"
    assert Git(run=lambda a, c: None).relative(str(src / "x.go")) == str(src / "x.go")


def suspect(test: str | None, blame: Blame | None, count: int = 3) -> Suspect:
    go = Frame(f"{PKG}.Receivers", "/repo/go/pkg/x.go", 11)
    return Suspect(count=count, wait_reason="chan receive", parked_s_max=1.25, created_at=go,
                   start_function=f"{PKG}.Receivers.func1", parked_at=go,
                   creation_stack=[go], parked_stack=[go], goids=[7, 8, 9], test=test,
                   blame=blame)


def test_annotation_lines() -> None:
    b = Blame("3f9c2d1e0b8a7c6d5e4f", "Ada, Leak", "fix: 100% of\nit")
    line = annotation(suspect("TestReceivers", b), "m/pkg.test", lambda f: "go/pkg/x.go")
    assert line.startswith("::error file=go/pkg/x.go,line=11,title=goroutine leak in "
                           "TestReceivers::3 goroutines leaked by TestReceivers in m/pkg.test")
    assert "last changed in 3f9c2d1e0b8a by Ada, Leak: fix: 100%25 of%0Ait" in line
    assert "\n" not in line
    bare = annotation(suspect(None, None, 1), "p", lambda f: "a:b,c.go")
    assert bare.startswith("::error file=a%3Ab%2Cc.go,line=11,title=goroutine leak::"
                           "1 goroutine leaked in p:")


def test_annotations_of_programs() -> None:
    report = LeakReport(pid=1, go_version="go1.27.3", threshold_s=1, elapsed_s=2, live=3,
                        counters=_Counters(), suspects=[suspect("TestA", None),
                                                        suspect("TestB", None)])
    runs = [ProgramRun(1, "/tmp/x.test", "m/x.test", "go1.27.3", True, True, 0, report),
            ProgramRun(2, "/tmp/y", "m/y", "go1.27.3", True, note="killed")]
    got = github_annotations(runs, lambda f: "x.go")
    assert len(got) == 2 and "leak in TestA" in got[0] and "leak in TestB" in got[1]


def test_suspect_json_has_test_and_blame() -> None:
    j = suspect("TestA", Blame("c" * 40, "A", "s")).to_json()
    assert j["test"] == "TestA" and j["blame"] == {"commit": "c" * 40, "author": "A",
                                                   "summary": "s"}
    j = suspect(None, None).to_json()
    assert j["test"] is None and j["blame"] is None
