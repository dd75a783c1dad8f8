"""`gotrace dump PID`: every goroutine of a running Go program, read from outside."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from gotrace.analysis.dump import take_dump
from gotrace.analysis.ignore import Ignorer
from gotrace.commands.common import open_target
from gotrace.render.dump import DumpJsonRenderer, DumpTextRenderer
from gotrace.render.pprof import write_dump_profile


@dataclass
class DumpOptions:
    pid: int
    json: bool = False
    min_wait_s: float | None = None
    include_system: bool = False
    pprof: str | None = None
    ignore: Ignorer | None = None


def run(opts: DumpOptions) -> int:
    target, gb = open_target(opts.pid)
    dump = take_dump(target, gb, min_wait_s=opts.min_wait_s, include_system=opts.include_system,
                     ignore=opts.ignore)
    if opts.json:
        DumpJsonRenderer().render(dump)
    else:
        DumpTextRenderer(all_frames=opts.include_system).render(dump)
    sys.stdout.flush()
    if opts.pprof:
        write_dump_profile(dump, opts.pprof)
    return 0
