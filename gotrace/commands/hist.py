"""`gotrace hist PID --duration D`: goroutine lifetimes and park times, counted in the kernel."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from rich.console import Console

from gotrace.analysis.histogram import HistReport, HistTracer, build
from gotrace.binary.pclntab import Frame
from gotrace.commands.attach import StopSignal, load_bias, open_target
from gotrace.durations import format_duration
from gotrace.frames import ProcessSymbolizer
from gotrace.live.environment import require_tracing
from gotrace.render.hist import HistRenderer
from gotrace.render.json import JsonRenderer


@dataclass
class HistOptions:
    pid: int
    duration_s: float
    by: str = "reason"  # or "site"
    json: bool = False
    max_goroutines: int = 131072


def run(opts: HistOptions) -> int:
    target, gb = open_target(opts.pid)  # bad input (exit 2) first, then the machine (exit 3)
    require_tracing()
    err = Console(stderr=True, highlight=False)
    tracer = HistTracer(gb, target, by_site=opts.by == "site",
                        max_goroutines=opts.max_goroutines)
    sym = ProcessSymbolizer(gb.pcln, load_bias(target, gb))
    stop = StopSignal()
    exited = False
    try:
        tracer.attach()
        started = time.monotonic()
        err.print(f"[bold]gotrace hist[/] attached to PID {target.pid} ({target.exe_display}, "
                  f"{gb.go_version}): {len(tracer.attached)} uprobes; counting goroutine "
                  f"lifetimes and park times by {opts.by} in the kernel for "
                  f"{format_duration(opts.duration_s)}. Ctrl-C to stop early.")
        deadline = started + opts.duration_s
        while stop.received is None and time.monotonic() < deadline:
            if not target.alive():
                exited = True
                break
            time.sleep(max(0.0, min(0.1, deadline - time.monotonic())))
        elapsed = time.monotonic() - started

        def site_frame(gopc: int) -> Frame | None:
            frames = sym.frames(gopc, is_return_address=True)
            return frames[0] if frames else None

        totals, sites = build(tracer.samples(), reason_name=gb.wait_reason,
                              site_frame=site_frame)
        alive, parked = tracer.still_open()
        c = tracer.counters()
        report = HistReport(
            pid=target.pid, go_version=gb.go_version, duration_s=elapsed, by=opts.by,
            totals=totals, sites=sites, created=c.created, exited=c.exited, parks=c.parked,
            wakes=c.woken or 0, lost_hist=tracer.counter("CTR_LOST_HIST"),
            lost_table_full=c.lost_table_full, lost_reads=c.lost_reads, alive_at_end=alive,
            parked_at_end=parked, target_exited=exited)
    finally:
        tracer.close()
        stop.restore()
    if exited:
        err.print(f"gotrace: PID {target.pid} exited; histograms up to its exit")
    if opts.json:
        JsonRenderer().emit(report.to_json())
    else:
        HistRenderer().report(report)
    sys.stdout.flush()
    err.print("gotrace: detached")
    return 0
