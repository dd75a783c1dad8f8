"""People's output of `gotrace hist`: log2 histograms with bars, like bcc's funclatency."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from gotrace.analysis.histogram import Histograms, Hists, Log2Hist
from gotrace.render.leaks import site

BAR_WIDTH = 40
MAX_SITES = 10


def format_ns(ns: float) -> str:
    """Three significant digits in the unit that fits: 512ns, 2.05µs, 1.05ms, 2.15s."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.0f}ns"


def bar(n: int, top: int) -> str:
    if not n or not top:
        return ""
    return "█" * max(1, round(BAR_WIDTH * n / top))


class HistRenderer:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)

    def histogram(self, title: str, noun: str, h: Log2Hist) -> RenderableType:
        head = Text()
        head.append(title, style="bold")
        head.append(f" · {h.count:,} {noun}{'' if h.count == 1 else 's'}")
        p50, p99 = h.quantile_ns(0.5), h.quantile_ns(0.99)
        if p50 is not None and p99 is not None:
            head.append(f" · p50 {format_ns(p50)} · p99 {format_ns(p99)}")
        buckets = h.buckets()
        if not buckets:
            return Group(head, Text("  (none)", style="dim"))
        top = max(n for _, _, n in buckets)
        table = Table(box=None, pad_edge=False, show_edge=False, padding=(0, 1))
        table.add_column("from", justify="right", no_wrap=True)
        table.add_column("to", justify="right", no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True)
        table.add_column("distribution", style="cyan", no_wrap=True)
        for lo, hi, n in buckets:
            table.add_row(format_ns(lo), format_ns(hi), f"{n:,}", bar(n, top),
                          style="" if n else "dim")
        return Group(head, table, Text(""))

    def hists(self, h: Hists, indent: str = "", *,
              skip_empty: bool = False) -> list[RenderableType]:
        out: list[RenderableType] = []
        if h.lifetime.count or not skip_empty:
            out.append(self.histogram(f"{indent}goroutine lifetime (create → exit)", "goroutine",
                                      h.lifetime))
        for reason, ph in sorted(h.park.items(), key=lambda kv: (-kv[1].count, kv[0])):
            out.append(self.histogram(f"{indent}park time · {reason}", "park", ph))
        return out

    def render(self, r: Histograms) -> None:
        con = self.console
        c = r.counters
        t = Text()
        t.append("gotrace hist", style="bold")
        t.append(f" · pid {r.pid} · {r.go_version} · {r.duration_s:.1f}s · by {r.by}"
                 f" · created {c.created:,} · exited {c.exited:,} · parks {c.parks:,}"
                 f" · wakes {c.wakes or 0:,}")
        t.append(f" · lost {c.lost_events:,}", style="bold red" if c.lost_events else "")
        con.print(t)
        if r.target_exited:
            con.print("[yellow]the target exited; histograms up to its exit[/]")
        con.print()
        if r.by == "site":
            for s in r.sites[:MAX_SITES]:
                con.print(Text(f"go statement {site(s.site) if s.site else '? (unknown)'}",
                               style="bold green"))
                for part in self.hists(s, "  ", skip_empty=True):
                    con.print(part)
            if len(r.sites) > MAX_SITES:
                con.print(f"[dim]… {len(r.sites) - MAX_SITES} more go statements "
                          "(all of them with --json)[/]\n")
            con.print(Text("all go statements", style="bold green"))
        for part in self.hists(r.totals):
            con.print(part)
        con.print(f"[dim]not in the histograms: {r.alive_at_end:,} goroutines created while "
                  f"traced and still alive, {r.parked_at_end:,} parked and not woken at the "
                  "end[/]")
        if c.lost_events:
            con.print(f"[yellow]lost: {c.lost.describe()}[/]")
