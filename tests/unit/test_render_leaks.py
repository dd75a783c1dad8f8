"""The attach renderers: what a person reads at a glance, what a pipe parses."""

from __future__ import annotations

import io
import json

from rich.console import Console

from gotrace.binary.pclntab import Frame
from gotrace.frames import MAIN_GOROUTINE
from gotrace.model import Counters, LeakReport, Lost, Suspect
from gotrace.render.json import JsonLinesRenderer
from gotrace.render.leaks import LeakTableRenderer

SPAWN = Frame("main.(*Server).spawnWorkersForTheQueue", "/src/app/server.go", 120)
WAIT = Frame("main.(*Server).worker", "/src/app/server.go", 141)


def report(**kw: object) -> LeakReport:
    s = Suspect(count=17, wait_reason="sync.WaitGroup.Wait", parked_s_max=754.2, created_at=SPAWN,
                start_function="main.(*Server).spawnWorkersForTheQueue.func1", parked_at=WAIT,
                creation_stack=[SPAWN, Frame("main.main", "/src/app/main.go", 9)],
                parked_stack=[Frame("runtime.gopark", "/go/src/runtime/proc.go", 474), WAIT],
                goids=list(range(40, 50)), before_attach=17)
    args: dict[str, object] = dict(pid=4242, go_version="go1.27.3", threshold_s=10.0,
                                   elapsed_s=35.0, live=123, counters=Counters(created=1000,
                                   exited=900, parks=5000, wakes=None), suspects=[s])
    args.update(kw)
    return LeakReport(**args)  # type: ignore[arg-type]


def render(r: LeakReport, width: int, stacks: bool = False) -> str:
    buf = io.StringIO()
    LeakTableRenderer(Console(file=buf, width=width, color_system=None), stacks=stacks).render(r)
    return buf.getvalue()


def columns(out: str) -> list[str]:
    """Each table column's text, its folded lines joined back together."""
    rows = [line.split("│")[1:-1] for line in out.splitlines() if line.startswith("│")]
    return ["".join(r[j].strip() for r in rows) for j in range(len(rows[0]))]


def test_table_folds_rather_than_cuts_at_80_columns() -> None:
    out = render(report(), 80)
    assert "…" not in out
    count, longest, reason, created, parked = columns(out)
    assert count == "17" and reason == "sync.WaitGroup.Wait"
    assert created.replace(" ", "") == "main.(*Server).spawnWorkersForTheQueueserver.go:120"
    assert parked.replace(" ", "") == "main.(*Server).workerserver.go:141"
    assert longest == "≥ 12.6m"  # parked before attach: a lower bound
    assert "pid 4242" in out and "live 123" in out


def test_losses_are_shown_not_hidden() -> None:
    r = report(counters=Counters(created=10, lost=Lost(table_full=3, stacks=2)))
    out = render(r, 120)
    assert "lost 5" in out and "lost: goroutine table full 3, stacks 2" in out


def test_no_suspects_says_so() -> None:
    assert "no goroutine parked longer than 10.0s" in render(report(suspects=[]), 100)


def test_stacks_view_lists_both_stacks() -> None:
    out = render(report(), 120, stacks=True)
    assert "parked at:" in out and "created by" in out
    assert out.index("runtime.gopark") < out.index("main.main")
    assert "goids 40, 41, 42, 43, 44, 45, 46, 47, 48, 49 …" in out


def test_json_is_one_line_per_report_with_the_contract_keys() -> None:
    buf = io.StringIO()
    JsonLinesRenderer(buf).render(report(final=True))
    (line,) = buf.getvalue().splitlines()
    obj = json.loads(line)
    assert {"pid", "go_version", "threshold_s", "elapsed_s", "live", "created", "exited",
            "lost_events", "suspects"} <= obj.keys()
    assert obj["final"] is True and "wakes" not in obj  # wake-ups are not probed by attach
    assert obj["lost"] == {"table_full": 0, "stacks": 0, "memory_reads": 0, "ring_buffer": 0,
                           "hist_full": 0, "unreadable_records": 0, "screen_table_full": 0}
    (s,) = obj["suspects"]
    assert {"count", "wait_reason", "parked_s_max", "created_at", "start_function",
            "creation_stack", "parked_stack", "goids"} <= s.keys()
    assert s["created_at"] == {"function": SPAWN.function, "file": SPAWN.file, "line": 120}


def test_the_main_goroutine_has_no_go_statement() -> None:
    r = report()
    s = r.suspects[0]
    s.start_function = "runtime.main"
    s.created_at = MAIN_GOROUTINE  # what gotrace.frames names it, for every output
    (_, _, _, created, _) = columns(render(r, 120))
    assert created == "(main goroutine)"
    buf = io.StringIO()
    JsonLinesRenderer(buf).render(r)
    assert json.loads(buf.getvalue())["suspects"][0]["created_at"] == {
        "function": "(main goroutine)", "file": "", "line": 0}
