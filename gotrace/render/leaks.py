"""People's output: a title line with the counters, one table row per leak group, stacks."""

from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gotrace.binary.pclntab import Frame
from gotrace.durations import format_duration
from gotrace.frames import MAIN_GOROUTINE, UNKNOWN
from gotrace.model import LeakReport, Suspect


def site(f: Frame | None) -> str:
    """`function file:line`, the way every screen names a frame."""
    if f is None or f == UNKNOWN:
        return "?"
    if f == MAIN_GOROUTINE:
        return f.function
    return f"{f.function} {os.path.basename(f.file)}:{f.line}"


def parked_groups_table(title: str) -> Table:
    """Columns of a table of parked groups: attach's report and tail's screen share them."""
    table = Table(title=title, title_justify="left", expand=False)
    # Fold, never ellipsize: a cut function name is a lost clue.
    table.add_column("count", justify="right", style="bold", no_wrap=True)
    table.add_column("longest", justify="right", no_wrap=True)
    table.add_column("wait reason", style="cyan", overflow="fold")
    table.add_column("created at (go statement)", style="green", overflow="fold")
    table.add_column("parked at", style="magenta", overflow="fold")
    return table


def _parked(s: Suspect) -> str:
    text = format_duration(s.parked_s_max)
    return f"≥ {text}" if s.before_attach == s.count else text


class LeakTableRenderer:
    """attach's report for people: counters, one row per leak group, stacks on demand."""

    def __init__(self, console: Console | None = None, *, stacks: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.stacks = stacks

    def title(self, r: LeakReport) -> Text:
        c = r.counters
        t = Text()
        t.append("gotrace", style="bold")
        t.append(f" · pid {r.pid} · {r.go_version} · {format_duration(r.elapsed_s)}")
        t.append(f" · live {r.live:,} · created {c.created:,} · exited {c.exited:,}")
        t.append(f" · lost {c.lost_events:,}", style="bold red" if c.lost_events else "")
        if r.final:
            t.append(" · final", style="bold")
        return t

    def render(self, r: LeakReport) -> None:
        con = self.console
        con.print(self.title(r))
        if r.counters.lost_events:
            con.print(f"[yellow]lost: {r.counters.lost.describe()}[/]")
        if r.target_exited:
            con.print("[yellow]the target exited; this is the last state seen[/]")
        if r.ignored:
            con.print("[dim]ignored: " + ", ".join(
                f"{n:,} by {rule if rule.startswith('--') else repr(rule)}"
                for rule, n in r.ignored.items()) + "[/]")
        if not r.suspects:
            con.print(f"no goroutine parked longer than {format_duration(r.threshold_s)}\n")
            return
        total = sum(s.count for s in r.suspects)
        groups = len(r.suspects)
        table = parked_groups_table(f"{total:,} goroutines parked ≥ "
                                    f"{format_duration(r.threshold_s)}, in {groups} groups")
        for s in r.suspects:
            table.add_row(f"{s.count:,}", _parked(s), s.wait_reason, site(s.created_at),
                          site(s.parked_at))
        con.print(table)
        if any(s.before_attach == s.count for s in r.suspects):
            con.print("[dim]≥ parked before attach: these goroutines existed before gotrace "
                      "attached, so their time counts from the attach or from the GC that last "
                      "saw them parked (a lower bound)[/]")
        if self.stacks:
            for i, s in enumerate(r.suspects, 1):
                self._stacks(i, s)
        con.print()

    def _stacks(self, i: int, s: Suspect) -> None:
        con = self.console
        noun = "goroutine" if s.count == 1 else "goroutines"
        con.print(f"[bold]#{i}[/] {s.count} {noun} [cyan]\\[{s.wait_reason}][/], "
                  f"parked {_parked(s)}, goids {', '.join(map(str, s.goids))}"
                  f"{' …' if s.count > len(s.goids) else ''}")
        con.print("  [magenta]parked at:[/]")
        for f in s.parked_stack or []:
            con.print(f"    {f.function}\n        {f.file}:{f.line}")
        if not s.parked_stack:
            con.print("    (stack unavailable)")
        con.print(f"  [green]created by[/] (start {s.start_function}):")
        for f in s.creation_stack:
            con.print(f"    {f.function}\n        {f.file}:{f.line}")
