"""`gotrace attach PID`: a live goroutine table in BPF maps, leak reports every interval."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from gotrace.analysis.ignore import Ignorer
from gotrace.analysis.leaks import LeakSession
from gotrace.commands.common import (
    StopSignal,
    banner,
    open_target,
    run_until,
    stderr_console,
)
from gotrace.durations import format_duration
from gotrace.errors import BadInput, CannotTrace
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.environment import require_tracing
from gotrace.live.tracer import LeakTracer
from gotrace.render.json import JsonLinesRenderer
from gotrace.render.leaks import LeakTableRenderer
from gotrace.render.pprof import write_leaks_profile


@dataclass
class AttachOptions:
    pid: int
    threshold_s: float = 10.0
    interval_s: float = 5.0
    duration_s: float | None = None
    json: bool = False
    stacks: bool = False
    max_goroutines: int = DEFAULT_MAX_GOROUTINES
    bpf_park_stacks: bool = False
    create_stack_every: int | None = None  # None: each go statement's probe until its stack
    exact: bool = False  # --park-times exact: probes on park and exit
    no_bpf: bool = False  # no probe at all: everything from memory
    read_interval_s: float = 1.0  # memory modes: how often goroutines are read
    pprof: str | None = None  # write the final report's suspects there too
    ignore: Ignorer | None = None


# Say why the detach takes a while from this many perf-event uprobes left (~0.1 s each).
SAY_SLOW_DETACH = 20


def run(opts: AttachOptions) -> int:
    target, gb = open_target(opts.pid)  # bad input (exit 2) first, then the machine (exit 3)
    if not opts.no_bpf:
        require_tracing()
    err = stderr_console()
    renderer: JsonLinesRenderer | LeakTableRenderer = (
        JsonLinesRenderer() if opts.json else LeakTableRenderer(stacks=opts.stacks)
    )
    tracer = None if opts.no_bpf else LeakTracer(
        gb, target, max_goroutines=opts.max_goroutines, park_probe=opts.exact,
        park_stacks=opts.bpf_park_stacks,
        create_stack_every=opts.create_stack_every)
    session = LeakSession(target, gb, tracer, threshold_s=opts.threshold_s, ignore=opts.ignore)
    stop = StopSignal()
    try:
        try:
            if tracer is not None:
                tracer.attach()
        except CannotTrace:
            if not target.alive():  # not the machine's fault: the target left meanwhile
                raise BadInput(f"PID {target.pid} exited before gotrace could attach") from None
            raise
        seeded = session.seed()
        session.started = time.monotonic()
        until = f" for {format_duration(opts.duration_s)}" if opts.duration_s else ""
        reads = f"park state read from its memory every {format_duration(opts.read_interval_s)}"
        go_statements = "one per go statement (each comes off once it walked a creation stack)"
        if tracer is None:
            err.print(f"[bold]gotrace[/] attached to PID {target.pid} ({target.exe_display}, "
                      f"{gb.go_version}) without BPF: no probe; {reads}.")
        else:
            if opts.exact and tracer.per_go_statement:
                how = (f": {len(tracer.attached)} on the Go runtime (park times exact) and "
                       f"{go_statements}")
            elif opts.exact:
                how = " on the Go runtime (park times exact)"
            else:
                how = (f", {go_statements}" if tracer.per_go_statement else
                       " on the Go runtime (creations)") + f"; {reads}"
            banner(err, "gotrace", target, gb, len(tracer.attached) + len(tracer.armed),
                   how + ".")
        err.print(f"gotrace: reporting goroutines parked ≥ {format_duration(opts.threshold_s)} "
                  f"every {format_duration(opts.interval_s)}{until}. Ctrl-C to stop.")
        err.print(
            f"gotrace: {seeded.goroutines:,} goroutines existed already ({seeded.parked:,} "
            "parked: their time counts from now or from the GC that last saw them parked, "
            "a lower bound)"
            + (f"; {seeded.table_full:,} did not fit in the table" if seeded.table_full else "")
            + (f"; {seeded.unreadable:,} unreadable" if seeded.unreadable else "")
        )
        for w in session.warnings:
            err.print(f"[yellow]gotrace: warning:[/] {w}")
        deadline = session.started + opts.duration_s if opts.duration_s else None
        next_report = session.started + opts.interval_s
        next_read = float("inf") if opts.exact else session.started + opts.read_interval_s

        def step(now: float) -> float:
            nonlocal next_report, next_read
            if now >= next_report:
                renderer.render(session.leak_report(final=False))  # reads memory too
                next_report += opts.interval_s
                if not opts.exact:
                    next_read = time.monotonic() + opts.read_interval_s
            elif now >= next_read:
                session.read()
                next_read += opts.read_interval_s
            return min(next_report, next_read) - time.monotonic()

        exited = run_until(target, stop, deadline, step, err) is not None
        final = session.leak_report(final=True, target_exited=exited)
        renderer.render(final)
        if opts.pprof:
            write_leaks_profile(final, opts.pprof)
    finally:
        if tracer is not None:
            if (slow := tracer.probes_off_one_by_one) >= SAY_SLOW_DETACH:
                err.print(f"gotrace: taking off {slow} go statement probes, one by one (this "
                          f"kernel has no uprobe_multi links): ~{slow / 10:.0f} s")
            tracer.close()
        session.close()
        stop.restore()
        sys.stdout.flush()
    err.print("gotrace: detached")
    return 0
