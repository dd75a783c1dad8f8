"""The live screen of `gotrace tail`: one rich renderable per refresh, from a LiveSnapshot.

It only formats: the figures come from gotrace.analysis.livestats, so tests render recorded
data at a fixed width without BPF.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gotrace.analysis.livestats import LiveSnapshot, SiteRow
from gotrace.binary.pclntab import Frame
from gotrace.durations import format_duration
from gotrace.model import Kind
from gotrace.render.leaks import parked_groups_table, site

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[int], width: int = 20) -> str:
    vals = values[-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARKS[0] * len(vals)
    return "".join(SPARKS[(v - lo) * (len(SPARKS) - 1) // (hi - lo)] for v in vals)


def rate(v: float) -> str:
    if v >= 100_000:
        return f"{v / 1000:,.0f}k"
    return f"{v:,.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"{n:,}"


def _frame(f: Frame | None) -> str:
    return site(f) if f else "?"


class ScreenRenderer:
    def render(self, s: LiveSnapshot) -> RenderableType:
        parts: list[RenderableType] = [self.title(s), self.rates(s), self.totals(s)]
        if Kind.CREATE in s.kinds or Kind.PARK in s.kinds:
            parts.append(self.sites(s))
        if s.by_growth:
            parts.append(self.growth(s))
        if Kind.PARK in s.kinds and Kind.WAKE in s.kinds:
            parts.append(self.parked(s))
        parts.append(self.footer(s))
        return Group(*parts)

    def title(self, s: LiveSnapshot) -> Text:
        t = Text()
        t.append("gotrace tail", style="bold")
        t.append(f" · pid {s.pid} · {s.go_version} · {format_duration(s.elapsed_s)}")
        if s.match:
            t.append(f" · match /{s.match}/")
        if s.target_exited:
            t.append(" · target exited", style="bold yellow")
        return t

    KINDS = ((Kind.CREATE, "created"), (Kind.EXIT, "exited"), (Kind.PARK, "parks"),
             (Kind.WAKE, "wakes"))

    def rates(self, s: LiveSnapshot) -> Text:
        t = Text()
        t.append(f"live {s.live:,}", style="bold")
        if s.live_history:
            grew = s.live_history[-1] - s.live_history[0]
            t.append(f" {sparkline(s.live_history)}", style="cyan")
            t.append(f" {signed(grew)}")
        for kind, label in self.KINDS:
            if kind in s.kinds:
                t.append(f" · {label} {rate(s.rates.get(kind, 0.0))}/s")
            else:
                t.append(f" · {label} not traced", style="dim")
        return t

    def totals(self, s: LiveSnapshot) -> Text:
        figures = {Kind.CREATE: s.created, Kind.EXIT: s.exited, Kind.PARK: s.parks,
                   Kind.WAKE: s.wakes}
        return Text("since attach: " + " · ".join(
            f"{label} {figures[kind]:,}" for kind, label in self.KINDS if kind in s.kinds),
            style="dim")

    def _site_table(self, title: str, rows: list[SiteRow], window_s: float) -> Table:
        table = Table(title=title, title_justify="left", expand=False)
        table.add_column("live", justify="right", style="bold", no_wrap=True)
        table.add_column(f"Δ{format_duration(window_s)}", justify="right", no_wrap=True)
        table.add_column("created", justify="right", no_wrap=True)
        table.add_column("exited", justify="right", no_wrap=True)
        table.add_column("go statement", style="green", overflow="fold")
        for r in rows:
            table.add_row(f"{r.live:,}", signed(r.growth), f"{r.created:,}", f"{r.exited:,}",
                          _frame(r.site))
        return table

    def sites(self, s: LiveSnapshot) -> RenderableType:
        if not s.by_live:
            return Text("no live goroutine seen yet", style="dim")
        return self._site_table("creation sites by live goroutines, then by created", s.by_live,
                                s.growth_window_s)

    def growth(self, s: LiveSnapshot) -> RenderableType:
        return self._site_table(f"growing fastest (created minus exited over the last "
                                f"{format_duration(s.growth_window_s)})", s.by_growth,
                                s.growth_window_s)

    def parked(self, s: LiveSnapshot) -> RenderableType:
        if not s.parked:
            return Text("no goroutine parked now", style="dim")
        table = parked_groups_table("longest parked now")
        for g in s.parked:
            table.add_row(f"{g.count:,}", format_duration(g.longest_s), g.wait_reason,
                          _frame(g.created_at), _frame(g.parked_at))
        return table

    def footer(self, s: LiveSnapshot) -> Text:
        lost = s.counters.lost_events
        t = Text()
        t.append(f"lost {lost:,}", style="bold red" if lost else "")
        if lost:
            t.append(f" · {s.counters.lost.describe()}", style="red")
        for note in s.notes:
            t.append(f"\n{note}", style="yellow")
        return t
