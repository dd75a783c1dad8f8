"""`gotrace run -- CMD`: run a command with every Go program it starts traced from its first
instruction, and report at each program's exit the goroutines it leaves parked.

Wiring only: the process tree is live/launcher.py, each program's goroutine table a
LeakTracer with exact park times (as attach --park-times exact), its report LeakSession's,
test and commit attribution analysis/origin.py, the outputs render/.

Exit status: the command's own when non-zero; else 1 when leaks remain after the ignore
rules; else 0 (2 and 3 as every command: bad input, a machine that cannot trace).
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape

from gotrace.analysis.ignore import Ignorer, Rule
from gotrace.analysis.origin import ExitSession, Git
from gotrace.binary.gobinary import GoBinary
from gotrace.commands.common import StopSignal, stderr_console
from gotrace.errors import BadInput, GotraceError
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.environment import require_tracing
from gotrace.live.launcher import Launcher, ProgramInfo, Selector, exit_probe
from gotrace.live.process import Target
from gotrace.live.tracer import LeakTracer, RunTracer
from gotrace.model import ProgramRun
from gotrace.render.annotations import github_annotations
from gotrace.render.json import JsonLinesRenderer
from gotrace.render.junit import junit_xml
from gotrace.render.run import RunRenderer

EXIT_LEAKS = 1


@dataclass
class RunOptions:
    argv: list[str]
    threshold_s: float = 1.0
    match: str | None = None
    rules: list[Rule] = field(default_factory=list)
    junit: str | None = None
    json: bool = False
    annotations: str | None = None  # "github"
    stacks: bool = False
    max_goroutines: int = DEFAULT_MAX_GOROUTINES


@dataclass
class _Traced:
    info: ProgramInfo
    gb: GoBinary
    tracer: LeakTracer
    session: ExitSession


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


class ExitReporter:
    """The launcher's handler: a goroutine table per selected Go program, read at its exit."""

    def __init__(self, opts: RunOptions, err: Console, out: RunRenderer | JsonLinesRenderer,
                 git: Git) -> None:
        self.opts = opts
        self.err = err
        self.out = out
        self.git = git
        self.programs: list[ProgramRun] = []
        self.live: dict[int, _Traced] = {}

    def started(self, pid: int, info: ProgramInfo) -> int | None:
        tracer = None
        try:
            target = Target.find(pid)
            gb = GoBinary.open(target.exe, display_name=f"PID {pid} ({info.exe})")
            addr = exit_probe(gb).addr
            tracer = LeakTracer(gb, target, max_goroutines=self.opts.max_goroutines,
                                park_probe=True)
            tracer.attach()
            session = ExitSession(target, gb, tracer, threshold_s=self.opts.threshold_s,
                                  ignore=Ignorer(list(self.opts.rules)))
        except GotraceError as e:
            if tracer is not None:
                tracer.close()
            why = e.message if _alive(pid) else "it ended before gotrace could attach"
            self._left_out(pid, info, f"not traced: {why}")
            self.err.print(f"[yellow]gotrace run: PID {pid} {escape(info.exe)} is not traced: "
                           f"{escape(why)}[/]")
            return None
        session.started = time.monotonic()
        self.live[pid] = _Traced(info, gb, tracer, session)
        return addr

    def skipped(self, pid: int, info: ProgramInfo) -> None:
        self._left_out(pid, info, "the Go toolchain" if info.toolchain and not self.opts.match
                       else "not selected by --match")

    def _left_out(self, pid: int, info: ProgramInfo, why: str) -> None:
        self.programs.append(ProgramRun(pid, info.exe, info.path, info.go_version or "",
                                        traced=False, note=why))

    def held(self, pid: int, code: int) -> None:
        t = self.live.pop(pid, None)
        if t is None:
            return
        try:
            report = t.session.leak_report(final=True)
            for s in report.suspects:  # each names its test already (ExitSession)
                s.blame = self.git.blame(s.created_at.file, s.created_at.line)
            run = ProgramRun(pid, t.info.exe, t.info.path, t.gb.go_version, traced=True,
                             seen_at_exit=True, exit_code=code, report=report)
        finally:
            t.tracer.close()
            t.session.close()
        self.programs.append(run)
        self.out.render(run)

    def ended(self, pid: int, how: str) -> None:
        t = self.live.pop(pid, None)
        if t is None:
            return
        t.tracer.close()
        t.session.close()
        note = {"exited": "it ended another way: killed by a signal, or exit_group called "
                          "directly",
                "exec": "it exec'd another program",
                "running": "it was still running when the command ended"}.get(how, how)
        run = ProgramRun(pid, t.info.exe, t.info.path, t.gb.go_version, traced=True, note=note)
        self.programs.append(run)
        self.out.render(run)

    def close(self) -> None:
        for t in self.live.values():
            t.tracer.close()
            t.session.close()
        self.live.clear()


def run(opts: RunOptions) -> int:
    if not opts.argv:
        raise BadInput("no command to run: gotrace run [OPTIONS] -- CMD [ARGS...]")
    select = Selector(opts.match)
    require_tracing()
    err = stderr_console()
    out: RunRenderer | JsonLinesRenderer = (
        JsonLinesRenderer() if opts.json else RunRenderer(stacks=opts.stacks))
    git = Git()
    reporter = ExitReporter(opts, err, out, git)
    tree = RunTracer()
    tree.attach()
    launcher = Launcher(tree, reporter, select)
    stop = StopSignal()
    try:
        launcher.start(opts.argv, stdout_to_stderr=opts.json)
        err.print(f"[bold]gotrace run[/]: following {escape(shlex.join(opts.argv))} (PID "
                  f"{launcher.root}): every Go program it starts is traced from its first "
                  f"instruction and read at its exit; reporting goroutines parked ≥ "
                  f"{opts.threshold_s:g}s then")

        def forward() -> int | None:
            # SIGTERM (a cancelled CI job) is passed on; Ctrl-C already reached the command,
            # which shares gotrace's terminal process group.
            return stop.received if stop.received == signal.SIGTERM else None

        status = launcher.run(forward)
    finally:
        reporter.close()
        tree.close()
        stop.restore()
    programs = reporter.programs
    traced = [p for p in programs if p.traced]
    leaks = sum(p.leaks for p in traced)
    groups = sum(len(p.report.suspects) for p in traced if p.report)
    code = status if status != 0 else (EXIT_LEAKS if leaks else 0)
    command = shlex.join(opts.argv)
    if opts.junit:
        try:
            with open(opts.junit, "wb") as f:
                f.write(junit_xml(programs, command))
        except OSError as e:
            err.print(f"[red]gotrace run: cannot write --junit {escape(opts.junit)}: "
                      f"{escape(e.strerror or str(e))}[/]")
    if opts.annotations == "github":
        stream = sys.stderr if opts.json else sys.stdout
        for line in github_annotations(traced, git.relative):
            stream.write(line + "\n")
        stream.flush()
    lost_tasks, lost_stops = tree_lost = launcher.lost
    summary = {"type": "run", "command": opts.argv, "command_status": status,
               "exit_code": code, "leaked_goroutines": leaks, "leak_groups": groups,
               "programs": len(traced), "seen_at_exit": sum(1 for p in traced if p.seen_at_exit),
               **launcher.stats.to_json(), "lost": {"forks": lost_tasks, "stops": lost_stops},
               "left_out": [{"pid": p.pid, "exe": p.exe, "path": p.path, "why": p.note}
                            for p in programs if not p.traced]}
    if isinstance(out, JsonLinesRenderer):
        out.render(_Json(summary))
    not_seen = [p for p in traced if not p.seen_at_exit]
    err.print(
        f"gotrace run: {len(traced)} Go program{'s' if len(traced) != 1 else ''} traced "
        f"({launcher.stats.execs} programs started, "
        f"{launcher.stats.go_programs - len(traced)} Go programs left out)"
        + (f", {len(not_seen)} not seen at exit" if not_seen else "")
        + f"; {leaks} goroutine{'s' if leaks != 1 else ''} leaked in {groups} "
          f"group{'s' if groups != 1 else ''}; command exit status {status}; exit {code}"
        + (f"; lost: {lost_tasks} forks, {lost_stops} stops" if any(tree_lost) else ""))
    return code


@dataclass
class _Json:
    data: dict[str, object]

    def to_json(self) -> dict[str, object]:
        return self.data
