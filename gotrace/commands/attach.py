"""`gotrace attach PID`: live goroutine table in BPF maps, leak reports every interval."""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType

from rich.console import Console

from gotrace.analysis.suspects import StackCleaner, Verdict, find_suspects
from gotrace.binary.gobinary import GoBinary
from gotrace.durations import format_duration
from gotrace.errors import BadInput, CannotTrace, GotraceError
from gotrace.frames import ProcessSymbolizer
from gotrace.live.bpfdefs import const
from gotrace.live.environment import require_tracing
from gotrace.live.goroutines import G_WAITING, GoroutineReader, GSnapshot, read_g, unwind_parked
from gotrace.live.layout import check_layout
from gotrace.live.process import ProcessMemory, Target
from gotrace.live.tracer import ATTACH_EVENTS, Tracer
from gotrace.model import GoroutineRecord, Report
from gotrace.render.json import JsonRenderer
from gotrace.render.leaks import TableRenderer


@dataclass
class AttachOptions:
    pid: int
    threshold_s: float = 10.0
    interval_s: float = 5.0
    duration_s: float | None = None
    json: bool = False
    stacks: bool = False
    max_goroutines: int = 131072
    bpf_park_stacks: bool = False
    create_stack_every: int = 64


class StopSignal:
    """Ctrl-C and SIGTERM end the loop at the next tick; the final report still comes out."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def open_target(pid: int) -> tuple[Target, GoBinary]:
    target = Target.find(pid)
    gb = GoBinary.open(target.exe, display_name=f"PID {pid} ({target.exe_display})")
    return target, gb


def load_bias(target: Target, gb: GoBinary) -> int:
    if not gb.img.is_pie:
        return 0
    seg = min(gb.img.segments, key=lambda s: s.vaddr)
    return target.load_bias(seg.vaddr, seg.offset)


@dataclass(frozen=True)
class Seeded:
    """What the scan of runtime.allgs at attach found."""

    goroutines: int
    parked: int
    already_known: int  # a probe saw them first
    table_full: int  # did not fit in the table (counted as lost)
    unreadable: int  # g structs that could not be read


def seed_record(g: GSnapshot, attached_ns: int) -> GoroutineRecord:
    parked = g.status == G_WAITING
    return GoroutineRecord(
        goid=g.goid, gaddr=g.gaddr, created_ns=0, parked_ns=attached_ns if parked else 0,
        gopc=g.gopc, startpc=g.startpc, parent_goid=g.parent_goid,
        wait_reason=g.wait_reason if parked else 0, flags=const("GF_PARKED") if parked else 0)


class Session:
    """One attachment: the tracer, the target's memory, and how to turn both into a Report."""

    def __init__(self, opts: AttachOptions, target: Target, gb: GoBinary) -> None:
        self.opts = opts
        self.target = target
        self.gb = gb
        self.tracer = Tracer(gb, target, max_goroutines=opts.max_goroutines,
                             park_stacks=opts.bpf_park_stacks, events=ATTACH_EVENTS,
                             create_stack_every=opts.create_stack_every)
        self.mem = ProcessMemory(target.pid)
        self.bias = load_bias(target, gb)
        self.sym = ProcessSymbolizer(gb.pcln, self.bias)
        self.goroutines = GoroutineReader(gb, self.mem, self.bias)
        self.cleaner = StackCleaner(self.sym)
        self.warnings = gb.warnings()
        self.started = time.monotonic()
        # Parked stacks read from memory, kept so a report after the target exits still has them.
        self._stacks: dict[int, tuple[int, ...]] = {}

    def seed(self) -> Seeded:
        """Once the probes are live: the goroutines that already exist enter the table.

        The scan first proves the runtime.g offsets right for this very process (a wrong
        layout raises BadInput before anything is reported; the probes only ever read).
        A goroutine whose wait began before the attach counts as parked since the attach, a
        lower bound; its creation stack is just its go statement (gopc). Events seen since
        the attach win (tracer.seed). A goroutine that exited between the read and the
        insert left its exit probe nothing to delete: it is removed here.
        """
        attached_ns = time.monotonic_ns()
        try:
            scan = self.goroutines.scan()
            check_layout(scan.goroutines, self.gb, self.bias, self.goroutines.reread)
        except GotraceError:
            if self.target.alive():
                raise
            return Seeded(0, 0, 0, 0, 0)  # it exited meanwhile: the main loop reports that
        records = [seed_record(g, attached_ns) for g in scan.goroutines]
        result = self.tracer.seed(records)
        gone = []
        for g in scan.goroutines:
            now = self.goroutines.reread(g)
            if now is not None and (now.goid != g.goid or now.dead):
                gone.append(g.goid)
        self.tracer.forget(gone)
        parked = sum(1 for r in records if r.parked_ns)
        return Seeded(len(records), parked, result.already_known, result.table_full,
                      scan.skipped)

    def verify(self, rec: GoroutineRecord) -> Verdict:
        """Is the suspect still parked where the probes saw it park? Memory has the last word.

        The parked stack is unwound here, for suspects only, rather than captured in BPF at
        every park: same frames (plus the one a probe-side walk misses), no cost on the
        target's hot path (~0.7 µs per park measured with the probe-side capture).
        """
        g = read_g(self.mem, self.gb.offsets, rec.gaddr)
        if g is None:
            return Verdict(None, self._stacks.get(rec.goid, ()))
        if g.goid != rec.goid or not g.parked or g.wait_reason != rec.wait_reason:
            self._stacks.pop(rec.goid, None)
            return Verdict(False)
        stack = () if rec.park_stack else tuple(unwind_parked(self.mem, g))
        if stack:
            self._stacks[rec.goid] = stack
        return Verdict(True, stack)

    def cached(self, rec: GoroutineRecord) -> Verdict:
        """After the target exited: nothing to read, only what the last report saw."""
        return Verdict(None, self._stacks.get(rec.goid, ()))

    def report(self, *, final: bool, target_exited: bool = False) -> Report:
        records = self.tracer.records()
        counters = self.tracer.counters()
        out = find_suspects(
            records,
            now_ns=time.monotonic_ns(),
            threshold_ns=int(self.opts.threshold_s * 1e9),
            sym=self.sym,
            reason_name=self.gb.wait_reason,
            verify=self.cached if target_exited else self.verify,
            cleaner=self.cleaner,
        )
        return Report(
            pid=self.target.pid,
            go_version=self.gb.go_version,
            threshold_s=self.opts.threshold_s,
            elapsed_s=time.monotonic() - self.started,
            live=len(records),
            counters=counters,
            suspects=out.suspects,
            final=final,
            system_hidden=out.system_hidden,
            no_longer_parked=out.no_longer_parked,
            unverified=out.unverified,
            target_exited=target_exited,
            warnings=self.warnings,
        )


def run(opts: AttachOptions) -> int:
    target, gb = open_target(opts.pid)  # bad input (exit 2) first, then the machine (exit 3)
    require_tracing()
    err = Console(stderr=True, highlight=False)
    renderer: JsonRenderer | TableRenderer = (
        JsonRenderer() if opts.json else TableRenderer(stacks=opts.stacks)
    )
    session = Session(opts, target, gb)
    stop = StopSignal()
    try:
        try:
            session.tracer.attach()
        except CannotTrace:
            if not target.alive():  # not the machine's fault: the target left meanwhile
                raise BadInput(f"PID {target.pid} exited before gotrace could attach") from None
            raise
        seeded = session.seed()
        session.started = time.monotonic()
        until = f" for {format_duration(opts.duration_s)}" if opts.duration_s else ""
        err.print(
            f"[bold]gotrace[/] attached to PID {target.pid} ({target.exe_display}, "
            f"{gb.go_version}): {len(session.tracer.attached)} uprobes on the Go runtime. "
            f"Reporting goroutines parked ≥ {format_duration(opts.threshold_s)} every "
            f"{format_duration(opts.interval_s)}{until}. Ctrl-C to stop."
        )
        err.print(
            f"gotrace: {seeded.goroutines:,} goroutines existed already ({seeded.parked:,} "
            "parked: their time counts from now, a lower bound)"
            + (f"; {seeded.table_full:,} did not fit in the table" if seeded.table_full else "")
            + (f"; {seeded.unreadable:,} unreadable" if seeded.unreadable else "")
        )
        for w in session.warnings:
            err.print(f"[yellow]gotrace: warning:[/] {w}")
        deadline = session.started + opts.duration_s if opts.duration_s else None
        next_report = session.started + opts.interval_s
        exited = False
        while stop.received is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if not target.alive():
                exited = True
                err.print(f"gotrace: PID {target.pid} exited")
                break
            if now >= next_report:
                renderer.report(session.report(final=False))
                next_report += opts.interval_s
                continue
            wake = min(next_report, deadline) if deadline is not None else next_report
            time.sleep(max(0.0, min(0.1, wake - now)))
        renderer.report(session.report(final=True, target_exited=exited))
    finally:
        session.tracer.close()
        session.mem.close()
        stop.restore()
        sys.stdout.flush()
    err.print("gotrace: detached")
    return 0
