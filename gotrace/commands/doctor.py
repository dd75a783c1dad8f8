"""`gotrace doctor [PID]`: is this machine ready to trace, and how would we trace this program?"""

from __future__ import annotations

from rich.console import Console

from gotrace.environment import tracing_checks
from gotrace.errors import EXIT_ENVIRONMENT, GotraceError


def run(pid: int | None) -> int:
    con = Console(highlight=False)
    failed = False
    for c in tracing_checks():
        mark = "[green]OK  [/]" if c.ok else "[red]FAIL[/]"
        con.print(f"{mark} {c.name:<15} {c.detail}")
        if not c.ok:
            failed = failed or c.name != "tracefs"
            con.print(f"     {'':<15} fix: {c.fix}")
    if pid is not None:
        from gotrace.commands.attach import load_bias, open_target

        try:
            target, gb = open_target(pid)
        except GotraceError as e:
            con.print(f"[red]FAIL[/] {'target':<15} {e.message}")
            return e.exit_code
        o = gb.offsets
        con.print(f"[green]OK  [/] {'target':<15} PID {pid}: {target.exe_display}")
        con.print(f"[green]OK  [/] {'go version':<15} {gb.go_version} (from .go.buildinfo)")
        img = gb.img
        kind = ", ".join(k for k, on in (("PIE", img.is_pie), ("symbols", img.has_symtab),
                                         ("DWARF", img.has_dwarf)) if on) or "stripped"
        con.print(f"[green]OK  [/] {'binary':<15} {kind}; load bias {load_bias(target, gb):#x}; "
                  f"{len(gb.pcln.functions()):,} functions in .gopclntab")
        con.print(f"[green]OK  [/] {'g offsets':<15} from {o.source}: goid {o.goid}, status "
                  f"{o.status}, waitreason {o.waitreason}, gopc {o.gopc}, startpc {o.startpc}")
        con.print(f"[green]OK  [/] {'wait reasons':<15} {len(gb.wait_reasons)} from "
                  f"{gb.wait_reason_source}")
        for h in gb.hooks:
            f = gb.pcln.func_at(h.addr)
            where = f"{f.name}+{h.addr - f.entry:#x}" if f else f"{h.addr:#x}"
            mark = "[green]OK  [/]" if h.emulated else "[yellow]SLOW[/]"
            con.print(f"{mark} {'hook ' + h.event:<15} {where}: {h.why}")
    return EXIT_ENVIRONMENT if failed else 0
