"""attach's analysis: the goroutine table kept by the probes, checked against the target's
memory, made into leak reports.

The table (live/tracer.py LeakTracer) says when each goroutine parked; memory has the last
word on whether it still is (wake-ups are not probed), and gives the parked stacks of the
suspects alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gotrace.analysis.suspects import Verdict, find_suspects
from gotrace.binary.gobinary import GoBinary
from gotrace.errors import GotraceError
from gotrace.frames import Symbols
from gotrace.live.bpfdefs import const
from gotrace.live.goroutines import G_WAITING, GoroutineReader, GSnapshot, read_g, unwind_parked
from gotrace.live.layout import check_layout
from gotrace.live.process import ProcessMemory, Target
from gotrace.live.tracer import LeakTracer
from gotrace.model import GoroutineRecord, LeakReport


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


class LeakSession:
    """One attachment: the tracer's table, the target's memory, and how both make a report."""

    def __init__(self, target: Target, gb: GoBinary, tracer: LeakTracer, *,
                 threshold_s: float) -> None:
        self.target = target
        self.gb = gb
        self.tracer = tracer
        self.threshold_s = threshold_s
        self.mem = ProcessMemory(target.pid)
        self.bias = target.load_bias(gb.img)
        self.sym = Symbols(gb.pcln, self.bias)
        self.goroutines = GoroutineReader(gb, self.mem, self.bias)
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

    def leak_report(self, *, final: bool, target_exited: bool = False) -> LeakReport:
        records = self.tracer.records()
        counters = self.tracer.counters()
        out = find_suspects(
            records,
            now_ns=time.monotonic_ns(),
            threshold_ns=int(self.threshold_s * 1e9),
            sym=self.sym,
            reason_name=self.gb.wait_reason,
            verify=self.cached if target_exited else self.verify,
        )
        return LeakReport(
            pid=self.target.pid,
            go_version=self.gb.go_version,
            threshold_s=self.threshold_s,
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

    def close(self) -> None:
        self.mem.close()
