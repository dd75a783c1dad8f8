"""JUnit XML of gotrace run, read back with a JUnit parser as CI systems read it."""

from __future__ import annotations

from pathlib import Path

from junitparser import Error, Failure, JUnitXml

from gotrace.binary.pclntab import Frame
from gotrace.model import Blame, Counters, LeakReport, ProgramRun, Suspect
from gotrace.render.junit import failure_text, junit_xml

GO = Frame("example.com/m/pkg.Receivers", "/src/pkg/x.go", 11)
PARK = [Frame("runtime.gopark", "/go/src/runtime/proc.go", 474),
        Frame("example.com/m/pkg.Receivers.func1", "/src/pkg/x.go", 11)]
CREATE = [GO, Frame("example.com/m/pkg.TestReceivers", "/src/pkg/x_test.go", 17),
          Frame("testing.tRunner", "/go/src/testing/testing.go", 1792)]


def suspect(count: int, test: str | None, reason: str = "chan receive") -> Suspect:
    return Suspect(count=count, wait_reason=reason, parked_s_max=0.9, created_at=GO,
                   start_function="example.com/m/pkg.Receivers.func1", parked_at=PARK[-1],
                   creation_stack=CREATE, parked_stack=PARK, goids=list(range(count)),
                   test=test, blame=Blame("ab" * 20, "Ada <&> Leak", "Add \"leaky\" tests"))


def report(*suspects: Suspect) -> LeakReport:
    return LeakReport(pid=42, go_version="go1.27.3", threshold_s=0.5, elapsed_s=1.5, live=9,
                      counters=Counters(), suspects=list(suspects), final=True)


def runs() -> list[ProgramRun]:
    return [
        ProgramRun(42, "/tmp/b1/pkg.test", "example.com/m/pkg.test", "go1.27.3", True, True, 0,
                   report(suspect(3, "TestReceivers"), suspect(5, "TestWaitGroup",
                                                               "sync.WaitGroup.Wait"))),
        ProgramRun(43, "/tmp/b2/clean.test", "example.com/m/clean.test", "go1.27.3", True,
                   True, 0, report()),
        ProgramRun(44, "/tmp/srv", "example.com/m/srv", "go1.27.3", True,
                   note="it ended another way: killed by a signal"),
        ProgramRun(45, "/go/bin/go", "cmd/go", "go1.27.3", False, note="the Go toolchain"),
    ]


def test_junit_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "out.xml"
    path.write_bytes(junit_xml(runs(), "go test ./..."))
    xml = JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.tests, suite.failures, suite.errors) == (3, 1, 1)
    cases = {c.name: c for c in suite}
    assert set(cases) == {"example.com/m/pkg.test", "example.com/m/clean.test",
                          "example.com/m/srv"}  # the toolchain is no test case
    assert cases["example.com/m/clean.test"].is_passed
    fails = [r for r in cases["example.com/m/pkg.test"].result if isinstance(r, Failure)]
    assert [f.message.split(" in ")[0] for f in fails] == [
        "3 goroutines leaked by TestReceivers", "5 goroutines leaked by TestWaitGroup"]
    assert all(f.type == "goroutine leak" for f in fails)
    assert "test: TestReceivers" in fails[0].text
    errs = [r for r in cases["example.com/m/srv"].result if isinstance(r, Error)]
    assert len(errs) == 1 and "not seen at its exit path" in errs[0].message


def test_failure_text_has_both_stacks() -> None:
    text = failure_text(suspect(3, "TestReceivers"))
    parked, created = text.split("created by (start example.com/m/pkg.Receivers.func1):")
    assert "parked at:\n    runtime.gopark\n        /go/src/runtime/proc.go:474" in parked
    assert "example.com/m/pkg.TestReceivers\n        /src/pkg/x_test.go:17" in created
    assert "testing.tRunner" in created
    assert f"last changed in {'ab' * 20} by Ada <&> Leak" in text


def test_special_characters_survive() -> None:
    doc = junit_xml(runs(), "sh -c 'a < b && c'")
    assert b"Ada &lt;&amp;&gt; Leak" in doc
    assert doc.startswith(b"<?xml")


def test_no_programs() -> None:
    doc = junit_xml([], "true")
    assert b'tests="0"' in doc
