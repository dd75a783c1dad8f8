"""The attach renderers: what a person reads at a glance, what a pipe parses."""

from __future__ import annotations

import io
import json

from rich.console import Console

from gotrace.binary.pclntab import Frame
from gotrace.model import Counters, Report, Suspect
from gotrace.render.jsonl import JsonRenderer
from gotrace.render.table import TableRenderer

SPAWN = Frame("main.(*Server).spawnWorkersForTheQueue", "/src/app/server.go", 120)
WAIT = Frame("main.(*Server).worker", "/src/app/server.go", 141)


def report(**kw: object) -> Report:
    s = Suspect(count=17, wait_reason="sync.WaitGroup.Wait", parked_s_max=754.2, created_at=SPAWN,
                start_function="main.(*Server).spawnWorkersForTheQueue.func1", parked_at=WAIT,
                creation_stack=[SPAWN, Frame("main.main", "/src/app/main.go", 9)],
                parked_stack=[Frame("runtime.gopark", "/go/src/runtime/proc.go", 474), WAIT],
                goids=list(range(40, 50)), before_attach=17)
    args: dict[str, object] = dict(pid=4242, go_version="go1.27.3", threshold_s=10.0,
                                   elapsed_s=35.0, live=123, counters=Counters(created=1000,
                                   exited=900, parked=5000, woken=None), suspects=[s])
    args.update(kw)
    return Report(**args)  # type: ignore[arg-type]


def render(r: Report, width: int, stacks: bool = False) -> str:
    buf = io.StringIO()
    TableRenderer(Console(file=buf, width=width, color_system=None), stacks=stacks).report(r)
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
    r = report(counters=Counters(created=10, lost_table_full=3, lost_stacks=2))
    out = render(r, 120)
    assert "lost 5" in out and "3 goroutines (table full), 2 stacks" in out


def test_no_suspects_says_so() -> None:
    assert "no goroutine parked longer than 10.0s" in render(report(suspects=[]), 100)


def test_stacks_view_lists_both_stacks() -> None:
    out = render(report(), 120, stacks=True)
    assert "parked at:" in out and "created by" in out
    assert out.index("runtime.gopark") < out.index("main.main")
    assert "goids 40, 41, 42, 43, 44, 45, 46, 47, 48, 49 …" in out


def test_json_is_one_line_per_report_with_the_contract_keys() -> None:
    buf = io.StringIO()
    JsonRenderer(buf).report(report(final=True))
    (line,) = buf.getvalue().splitlines()
    obj = json.loads(line)
    assert {"pid", "go_version", "threshold_s", "elapsed_s", "live", "created", "exited",
            "lost_events", "suspects"} <= obj.keys()
    assert obj["final"] is True and "wakes" not in obj  # wake-ups are not probed by attach
    (s,) = obj["suspects"]
    assert {"count", "wait_reason", "parked_s_max", "created_at", "start_function",
            "creation_stack", "parked_stack", "goids"} <= s.keys()
    assert s["created_at"] == {"function": SPAWN.function, "file": SPAWN.file, "line": 120}
