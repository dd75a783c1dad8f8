"""gotrace run as a CI gate: real `go test ./...` (tests/targets/leakytests) under trace, the
test binaries followed from their first instruction and read at their exit path.

Every run uses the newest toolchain of GO_VERSIONS offline (GOFLAGS=-mod=mod, GOPROXY=off; the
module has no dependencies) and `-count=1`, since a cached test result runs no binary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml

from gotrace.binary.gobinary import GoBinary
from gotrace.live.launcher import ProgramInfo, Selector, exit_probe, is_toolchain
from tests.gobuild import GO_VERSIONS, TARGETS, go_env, goroot, version_key

MODULE = TARGETS / "leakytests"
VERSION = max(GO_VERSIONS, key=version_key)
MARK = re.compile(r"^\s*go\s.*//\s*(leak|busy):(\w+)\s*$")
AUTHOR = ("Ada Leak", "ada@example.com")
TIMEOUT_S = 300


def marks() -> dict[str, tuple[str, int]]:
    """{'recv': ('leaky/leaky.go', 11), 'wg': (...), ...} from the sources' markers."""
    out = {}
    for f in sorted(MODULE.rglob("*.go")):
        for n, line in enumerate(f.read_text().splitlines(), 1):
            m = MARK.match(line)
            if m:
                out[m[2]] = (str(f.relative_to(MODULE)), n)
    return out


def env() -> dict[str, str]:
    e = go_env(VERSION)
    e["PATH"] = f"{goroot(VERSION) / 'bin'}:{e['PATH']}"
    return e


def gotrace_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gotrace", "run", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]


def programs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["path"]: d for d in docs if d["type"] == "program"}


def summary(docs: list[dict[str, Any]]) -> dict[str, Any]:
    assert docs[-1]["type"] == "run"
    return docs[-1]


def leaks(program: dict[str, Any]) -> set[tuple[str | None, str, int, int]]:
    """(test, file, line, count) of each leak group of a program's report."""
    return {(s["test"], os.path.basename(s["created_at"]["file"]), s["created_at"]["line"],
             s["count"]) for s in program["report"]["suspects"]}


def expected_leaks() -> set[tuple[str | None, str, int, int]]:
    m = marks()
    return {("TestReceivers", os.path.basename(m["recv"][0]), m["recv"][1], 3),
            ("TestWaitGroup", os.path.basename(m["wg"][0]), m["wg"][1], 5)}


@pytest.fixture()
def module(tmp_path: Path) -> Path:
    """A copy of the module: go test writes nothing there, but tests may commit it."""
    dst = tmp_path / "leakytests"
    shutil.copytree(MODULE, dst)
    return dst


def test_go_test_leaks_fail_the_run_and_name_their_tests(module: Path, tmp_path: Path) -> None:
    junit = tmp_path / "leaks.xml"
    p = gotrace_run("--threshold", "500ms", "--json", "--junit", str(junit), "--",
                    "go", "test", "-count=1", "./...", cwd=module)
    assert p.returncode == 1, p.stderr
    docs = lines(p.stdout)
    assert all(x.startswith("{") for x in p.stdout.splitlines())  # go test's output: stderr
    assert "ok  \texample.com/leakytests/leaky" in p.stderr
    progs = programs(docs)
    assert set(progs) == {"example.com/leakytests/leaky.test",
                          "example.com/leakytests/clean.test"}
    leaky, clean = progs["example.com/leakytests/leaky.test"], \
        progs["example.com/leakytests/clean.test"]
    assert leaky["seen_at_exit"] and clean["seen_at_exit"]
    assert leaky["exit_code"] == 0 and clean["exit_code"] == 0
    # Exactly the two leaks, each at its go line with its count and its test; the goroutine
    # of TestShortLived (exits 200ms after its test) and the subtests' are not reported.
    assert leaks(leaky) == expected_leaks()
    assert clean["report"]["suspects"] == []
    for s in leaky["report"]["suspects"]:
        assert s["creation_stack"][0] == s["created_at"]
        assert any(f["function"] == "testing.tRunner" for f in s["creation_stack"])
        assert s["parked_stack"][-1]["line"] == s["created_at"]["line"]
        assert s["parked_s_max"] >= 0.5
        assert s["blame"] is None  # a copy outside any git work tree
    run = summary(docs)
    assert (run["command_status"], run["exit_code"], run["leaked_goroutines"],
            run["leak_groups"]) == (0, 1, 8, 2)
    # The toolchain (go, compile, link, vet...) ran, stopped only to be recognised.
    assert run["go_programs"] > run["traced"] == 2
    assert {p["path"].split("/")[0] for p in run["left_out"]} == {"cmd"}
    assert all(p["why"] == "the Go toolchain" for p in run["left_out"])
    assert run["untraced_stop_ms_median"] < 100
    assert run["lost"] == {"forks": 0, "stops": 0}

    xml = JUnitXml.fromfile(str(junit))
    cases = {c.name: c for suite in xml for c in suite}
    assert set(cases) == set(progs)
    assert cases["example.com/leakytests/clean.test"].is_passed
    failures = [r for r in cases["example.com/leakytests/leaky.test"].result
                if isinstance(r, Failure)]
    assert len(failures) == 2
    text = {f.message: f.text for f in failures}
    m = marks()
    for (test, count), key in ((("TestReceivers", 3), "recv"), (("TestWaitGroup", 5), "wg")):
        msg = next(k for k in text if f"leaked by {test}" in k)
        assert msg.startswith(f"{count} goroutines")
        body = text[msg]
        file, line = m[key]
        assert "parked at:" in body and "created by" in body
        assert f"{module / file}:{line}" in body  # in both stacks
        assert body.count(f"{module / file}:{line}") == 2


def test_text_report_names_tests_lines_and_counts(module: Path) -> None:
    p = gotrace_run("--threshold", "500ms", "--", "go", "test", "-count=1", "./...",
                    cwd=module)
    assert p.returncode == 1, p.stderr
    m = marks()
    out = re.sub(r"\s+", " ", p.stdout)
    for test, key, count in (("TestReceivers", "recv", 3), ("TestWaitGroup", "wg", 5)):
        file, line = m[key]
        assert (f"{count} goroutines" in out and f"test {test} · go statement "
                f"{os.path.basename(file)}:{line}" in out), p.stdout
    assert "ok  \texample.com/leakytests/leaky" in p.stdout  # go test's own output, untouched
    assert "8 goroutines leaked in 2 groups" in re.sub(r"\s+", " ", p.stderr)


def test_fixed_leaks_pass(module: Path) -> None:
    p = gotrace_run("--threshold", "500ms", "--json", "--", "go", "test", "-count=1",
                    "-tags", "fixed", "./...", cwd=module)
    assert p.returncode == 0, p.stderr
    docs = lines(p.stdout)
    assert summary(docs)["leaked_goroutines"] == 0
    assert all(d["seen_at_exit"] and d["report"]["suspects"] == []
               for d in programs(docs).values())


def test_a_failing_test_status_passes_through(module: Path) -> None:
    """Status 1 from go test itself: the leaks are fixed, the report finds none."""
    p = gotrace_run("--threshold", "500ms", "--json", "--", "go", "test", "-count=1",
                    "-tags", "fixed failing", "./...", cwd=module)
    assert p.returncode == 1
    assert "--- FAIL: TestFails" in p.stderr
    docs = lines(p.stdout)
    run = summary(docs)
    assert (run["command_status"], run["leaked_goroutines"]) == (1, 0)
    leaky = programs(docs)["example.com/leakytests/leaky.test"]
    assert leaky["exit_code"] == 1 and leaky["report"]["suspects"] == []


def _git(repo: Path, *args: str) -> str:
    e = dict(os.environ, GIT_AUTHOR_NAME=AUTHOR[0], GIT_AUTHOR_EMAIL=AUTHOR[1],
             GIT_COMMITTER_NAME=AUTHOR[0], GIT_COMMITTER_EMAIL=AUTHOR[1],
             GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", *args], cwd=repo, env=e, capture_output=True, text=True,
                          check=True).stdout


def test_blame_and_github_annotations(tmp_path: Path) -> None:
    """In a throwaway repository: each leak names the commit and author of its go line, and
    the annotations point at the files (relative to the work tree root) and lines."""
    repo = tmp_path / "repo"
    shutil.copytree(MODULE, repo / "go")  # the module one level down the work tree
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "Add the leaky tests")
    head = _git(repo, "rev-parse", "HEAD").strip()
    p = gotrace_run("--threshold", "500ms", "--json", "--annotations", "github", "--",
                    "go", "test", "-count=1", "./...", cwd=repo / "go")
    assert p.returncode == 1, p.stderr
    leaky = programs(lines(p.stdout))["example.com/leakytests/leaky.test"]
    for s in leaky["report"]["suspects"]:
        assert s["blame"] == {"commit": head, "author": AUTHOR[0],
                              "summary": "Add the leaky tests"}
    # With --json the annotations go to stderr (stdout stays JSON); GitHub reads both.
    ann = [x for x in p.stderr.splitlines() if x.startswith("::error ")]
    got = {(m[1], int(m[2]), m[3]) for m in (
        re.match(r"::error file=([^,]+),line=(\d+),title=goroutine leak in (\w+)::", a)
        for a in ann) if m}
    m = marks()
    assert got == {("go/" + m["recv"][0], m["recv"][1], "TestReceivers"),
                   ("go/" + m["wg"][0], m["wg"][1], "TestWaitGroup")}, ann
    assert all(f"{head[:12]} by {AUTHOR[0]}: Add the leaky tests" in a for a in ann)
    assert any(a.split("::", 2)[2].startswith("3 goroutines leaked by TestReceivers")
               for a in ann)


def test_match_selects_programs(module: Path) -> None:
    """--match: only clean.test counts, so leaky's leaks do not fail the run."""
    p = gotrace_run("--threshold", "500ms", "--json", "--match", r"clean\.test$", "--",
                    "go", "test", "-count=1", "./...", cwd=module)
    assert p.returncode == 0, p.stderr
    docs = lines(p.stdout)
    assert set(programs(docs)) == {"example.com/leakytests/clean.test"}
    left = {x["path"]: x["why"] for x in summary(docs)["left_out"]}
    assert left["example.com/leakytests/leaky.test"] == "not selected by --match"
    assert left["cmd/go"] == "not selected by --match"


def test_ignore_rules_apply(module: Path) -> None:
    """Both leaks hidden by --ignore rules (and counted): nothing remains, exit 0."""
    m = marks()
    rules = [f"go:{os.path.basename(m['recv'][0])}:{m['recv'][1]}", "reason:sync.WaitGroup.Wait"]
    p = gotrace_run("--threshold", "500ms", "--json", "--ignore", rules[0], "--ignore",
                    rules[1], "--", "go", "test", "-count=1", "./leaky", cwd=module)
    assert p.returncode == 0, p.stderr
    leaky = programs(lines(p.stdout))["example.com/leakytests/leaky.test"]
    assert leaky["report"]["suspects"] == []
    assert leaky["report"]["ignored"] == {rules[0]: 3, rules[1]: 5}


@pytest.fixture(scope="module")
def leakymain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bin") / "leakymain"
    subprocess.run(["go", "build", "-o", str(out), "./cmd/leakymain"], cwd=MODULE, env=env(),
                   check=True, timeout=TIMEOUT_S)
    return out


@pytest.mark.parametrize(("mode", "status", "code"),
                         [("return", 1, 0), ("exit", 3, 3), ("panic", 2, 2)])
def test_every_exit_path_is_held(leakymain: Path, tmp_path: Path, mode: str, status: int,
                                 code: int) -> None:
    """main returning, os.Exit and a panic all end in runtime.exit: held and read there."""
    p = gotrace_run("--threshold", "200ms", "--json", "--", str(leakymain), "-mode", mode,
                    cwd=tmp_path)
    assert p.returncode == status, p.stderr
    prog = programs(lines(p.stdout))["example.com/leakytests/cmd/leakymain"]
    assert prog["seen_at_exit"] and prog["exit_code"] == code
    file, line = marks()["main"]
    assert leaks(prog) == {(None, os.path.basename(file), line, 2)}


def test_a_killed_program_is_not_seen_at_its_exit(leakymain: Path, tmp_path: Path) -> None:
    script = (f"{leakymain} -mode hang > out & "
              "while ! grep -q ready out 2>/dev/null; do sleep 0.05; done; kill -9 $!; wait $!")
    p = gotrace_run("--json", "--", "sh", "-c", script, cwd=tmp_path)
    assert p.returncode == 137, p.stderr
    docs = lines(p.stdout)
    prog = programs(docs)["example.com/leakytests/cmd/leakymain"]
    assert prog["traced"] and not prog["seen_at_exit"] and prog["report"] is None
    assert "killed by a signal" in prog["note"]
    assert "was not seen at its exit path" not in p.stdout  # JSON mode: no text
    run = summary(docs)
    assert (run["seen_at_exit"], run["leaked_goroutines"]) == (0, 0)
    # sh, grep and sleep are no Go programs: released at once.
    assert run["execs"] >= 3 and run["go_programs"] == 1


# -- the launcher's pure parts on real binaries -------------------------------------------------


@pytest.mark.parametrize("version", GO_VERSIONS)
def test_exit_probe_is_before_the_exit_syscall(go_build: Any, version: str) -> None:
    gb = GoBinary.open(str(go_build(version)))
    p = exit_probe(gb)
    f = gb.func("runtime.exit")
    assert p.addr == f.entry and not p.emulated  # single-stepped, once
    # the exit code at SP+8 into the syscall's first argument
    assert gb.img.read(p.addr, 4) == (bytes.fromhex("8b7c2408") if gb.arch == "amd64" else
                                      (0xB9800BE0).to_bytes(4, "little"))  # ldrsw x0, [sp, #8]


def test_toolchain_and_match() -> None:
    root = goroot(VERSION)
    go = str(root / "bin" / "go")
    compile_ = next(str(p) for p in (root / "pkg" / "tool").glob("*/compile"))
    assert is_toolchain("cmd/go", "/somewhere/go")
    assert is_toolchain("", go) and is_toolchain("cmd/compile", compile_)
    assert not is_toolchain("example.com/m/pkg.test", "/tmp/go-build1/b001/pkg.test")
    default = Selector(None)
    assert not default(ProgramInfo(go, "go1.27.3", "cmd/go", True))
    assert default(ProgramInfo("/tmp/x.test", "go1.27.3", "example.com/m.test"))
    assert not default(ProgramInfo("/bin/sh", None))
    pick = Selector(r"^cmd/vet$|leaky")
    assert pick(ProgramInfo("/r/pkg/tool/linux_amd64/vet", "go1.27.3", "cmd/vet", True))
    assert pick(ProgramInfo("/tmp/leaky.test", "go1.27.3", "example.com/x.test"))
    assert not pick(ProgramInfo("/tmp/clean.test", "go1.27.3", "example.com/clean.test"))
