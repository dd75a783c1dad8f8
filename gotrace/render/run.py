"""`gotrace run` for people: per Go program, attach's leak table, then who made each leak (the
test, the go statement, the commit that last changed it); programs not seen at their exit."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

from gotrace.model import ProgramRun
from gotrace.render.leaks import LeakTableRenderer


class RunRenderer:
    def __init__(self, console: Console | None = None, *, stacks: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.table = LeakTableRenderer(self.console, stacks=stacks)

    def render(self, p: ProgramRun) -> None:
        con = self.console
        code = "?" if p.exit_code is None else str(p.exit_code)
        if not p.seen_at_exit or p.report is None:
            con.print(f"[yellow]gotrace run: PID {p.pid} {escape(p.path or p.exe)} "
                      f"({p.go_version}) was not seen at its exit path ({escape(p.note)}): its "
                      "goroutines were not read at its end[/]")
            return
        con.print(f"[bold]gotrace run[/] · PID {p.pid} · {escape(p.path or p.exe)} · exit code "
                  f"{code} · read at its exit path")
        self.table.render(p.report)
        for i, s in enumerate(p.report.suspects, 1):
            f = s.created_at
            noun = "goroutine" if s.count == 1 else "goroutines"
            line = (f"  #{i} {s.count} {noun} [cyan]{escape(s.wait_reason)}[/]"
                    f" · test [bold]{escape(s.test) if s.test else '(none)'}[/]"
                    f" · go statement {escape(os.path.basename(f.file))}:{f.line}")
            if s.blame:
                line += (f" · last changed in {s.blame.commit[:12]} by "
                         f"{escape(s.blame.author)}: {escape(s.blame.summary)}")
            con.print(line)
        if p.report.suspects:
            con.print()
