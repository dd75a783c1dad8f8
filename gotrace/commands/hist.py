"""`gotrace hist PID --duration D`: goroutine lifetimes and park times, counted in the kernel."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from gotrace.analysis.histogram import Histograms, build
from gotrace.binary.pclntab import Frame
from gotrace.commands.common import (
    StopSignal,
    banner,
    open_target,
    run_until,
    stderr_console,
)
from gotrace.durations import format_duration
from gotrace.frames import UNKNOWN, Symbols
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.environment import require_tracing
from gotrace.live.tracer import HistTracer
from gotrace.render.hist import HistRenderer
from gotrace.render.json import JsonLinesRenderer


@dataclass
class HistOptions:
    pid: int
    duration_s: float
    by: str = "reason"  # or "site"
    json: bool = False
    max_goroutines: int = DEFAULT_MAX_GOROUTINES


def run(opts: HistOptions) -> int:
    target, gb = open_target(opts.pid)  # bad input (exit 2) first, then the machine (exit 3)
    require_tracing()
    err = stderr_console()
    tracer = HistTracer(gb, target, by_site=opts.by == "site",
                        max_goroutines=opts.max_goroutines)
    sym = Symbols(gb.pcln, target.load_bias(gb.img))
    stop = StopSignal()
    try:
        tracer.attach()
        started = time.monotonic()
        banner(err, "gotrace hist", target, gb, len(tracer.attached),
               f"; counting goroutine lifetimes and park times by {opts.by} in the kernel for "
               f"{format_duration(opts.duration_s)}. Ctrl-C to stop early.")
        exited = run_until(target, stop, started + opts.duration_s, lambda now: 0.1,
                           err) is not None
        elapsed = time.monotonic() - started

        def site_frame(gopc: int) -> Frame | None:
            f = sym.go_statement(gopc)
            return None if f == UNKNOWN else f

        totals, sites = build(tracer.samples(), reason_name=gb.wait_reason,
                              site_frame=site_frame)
        alive, parked = tracer.still_open()
        histograms = Histograms(
            pid=target.pid, go_version=gb.go_version, duration_s=elapsed, by=opts.by,
            totals=totals, sites=sites, counters=tracer.counters(), alive_at_end=alive,
            parked_at_end=parked, target_exited=exited)
    finally:
        tracer.close()
        stop.restore()
    if exited:
        err.print("gotrace: histograms up to the end of the program")
    if opts.json:
        JsonLinesRenderer().render(histograms)
    else:
        HistRenderer().render(histograms)
    sys.stdout.flush()
    err.print("gotrace: detached")
    return 0
