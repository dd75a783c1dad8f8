"""`gotrace doctor [PID]`: is this machine ready to trace, and how would we trace this program?

Every line is OK, or says what is wrong and the fix. Given a PID it shows what gotrace reads
from that binary and where from: the Go version, whether it is PIE / cgo / stripped, where
symbols, `runtime.g` offsets and wait reasons come from, each probe with why it sits there,
inlined copies of the probed functions (PGO builds), and whether the target is in a container.
"""

from __future__ import annotations

from rich.console import Console

from gotrace.binary import cache, codemap
from gotrace.commands.common import open_target
from gotrace.errors import EXIT_ENVIRONMENT, GotraceError
from gotrace.live.environment import Check, check_memory_access, tracing_checks

_MARKS = {"ok": "[green]OK  [/]", "fail": "[red]FAIL[/]", "warn": "[yellow]WARN[/]",
          "slow": "[yellow]SLOW[/]"}


class Lines:
    def __init__(self, con: Console) -> None:
        self.con = con

    def __call__(self, mark: str, name: str, detail: str, fix: str = "") -> None:
        self.con.print(f"{_MARKS[mark]} {name:<15} {detail}")
        if fix:
            self.con.print(f"     {'':<15} fix: {fix}")


def run(pid: int | None) -> int:
    con = Console(highlight=False, soft_wrap=True)  # one line per check, whatever the width
    line = Lines(con)
    bpf_problem: Check | None = None
    for c in tracing_checks():
        line("ok" if c.ok else "fail", c.name, c.detail, "" if c.ok else c.fix)
        if not c.ok and c.name != "tracefs":
            bpf_problem = bpf_problem or c
    memory = check_memory_access()
    line("ok" if memory.ok else "fail", memory.name, memory.detail, memory.fix)
    if bpf_problem is None and memory.ok:
        line("ok", "modes", "everything: attach (memory reads + go statement probes), attach "
             "--park-times exact, attach --no-bpf, tail, hist, dump")
    elif memory.ok:
        line("warn", "modes", f"attach --no-bpf and dump only: no BPF here "
             f"({bpf_problem.detail if bpf_problem else ''})",
             bpf_problem.fix if bpf_problem else "")
    elif bpf_problem is None:
        line("warn", "modes", "tail and hist only: attach and dump read the target's memory")
    else:
        line("fail", "modes", "none: gotrace needs BPF or the right to read process memory")
    failed = not memory.ok and bpf_problem is not None
    if pid is not None:
        try:
            target_lines(line, pid)
        except GotraceError as e:
            line("fail", "target", e.message)
            return e.exit_code
    return EXIT_ENVIRONMENT if failed else 0


def target_lines(line: Lines, pid: int) -> None:
    target, gb = open_target(pid)
    img = gb.img
    line("ok", "target", f"PID {pid}: {target.exe_display}")
    ns = target.namespaces()
    if ns.container:
        parts = []
        if ns.own_mount:
            parts.append(f"own mount namespace (binary read through /proc/{pid}/exe)")
        if ns.own_pid:
            inner = f"PID {ns.inner_pid} inside" if ns.inner_pid is not None else "own PIDs"
            parts.append(f"own PID namespace ({inner}; reports say {pid})")
        line("ok", "container", ", ".join(parts))
    elif ns.own_mount is None or ns.own_pid is None:
        line("warn", "container", "cannot read its namespaces", "run as root")
    else:
        line("ok", "container", "no: same mount and PID namespaces as gotrace")
    line("ok", "go version", f"{gb.go_version} (from .go.buildinfo)")

    kind = ["PIE" if img.is_pie else "position-dependent"]
    if gb.cgo:
        kind.append("cgo")
    missing = [n for n, has in ((".symtab", img.has_symtab), ("DWARF", img.has_dwarf)) if not has]
    kind.append(f"stripped (no {' or '.join(missing)})" if len(missing) == 2
                else f"no {missing[0]}" if missing else "symbols and DWARF")
    line("ok", "binary", f"{', '.join(kind)}; load bias {target.load_bias(gb.img):#x}")
    line("ok", "symbols", f"{len(gb.pcln.functions()):,} functions, files, lines and inlined "
         "frames from .gopclntab" + ("" if img.has_symtab else " (no .symtab needed)"))
    o = gb.offsets
    origin = o.source if o.source == "DWARF" else f"{o.source} (no DWARF)"
    line("ok", "g offsets", f"from {origin}: goid {o.goid}, status {o.status}, waitreason "
         f"{o.waitreason}, gopc {o.gopc}, startpc {o.startpc}")
    src = gb.wait_reason_source
    line("ok", "wait reasons", f"{len(gb.wait_reasons)} "
         f"{src if src.startswith('decoded') else 'from ' + src} (their numbering changes "
         "between releases)")
    for h in gb.hooks:
        f = gb.pcln.func_at(h.addr)
        where = f"{f.name}+{h.addr - f.entry:#x}" if f else f"{h.addr:#x}"
        used_by = {"create": " (tail, hist, attach --creation-stacks N or --park-times exact)",
                   "wake": " (tail and hist only)"}.get(
            h.event, " (tail, hist and attach --park-times exact)")
        line("ok" if h.emulated else "slow", f"hook {h.event}", f"{where}: {h.why}{used_by}",
             "" if h.emulated else "none needed, but this probe is single-stepped (~10x the "
             "cost of the others); a build without PGO (-pgo=off) gets the cheap one")
    gopcs = codemap.go_statements(gb.pcln, img, gb.arch)
    line("ok", "go statements", f"{len(gopcs):,} calls of runtime.newproc: attach probes each "
         "until it walked a creation stack")
    warnings = gb.warnings()
    for w in warnings:
        line("warn", "inlining", w,
             "rebuild without profile-guided optimization (go build -pgo=off) to see them")
    if not warnings:
        names = ", ".join(sorted({h.func.removeprefix("runtime.") for h in gb.hooks}))
        line("ok", "inlining", f"no inlined copy of {names} anywhere (inline trees read)")
    path = cache.entry_path(img)
    if path is None:
        line("ok", "cache", "not cached (no build ID in the binary, or GOTRACE_BINARY_CACHE=off)")
    else:
        state = "read from" if gb.from_cache else "stored in" if path.exists() else "not written to"
        line("ok", "cache", f"facts {state} {path}")
