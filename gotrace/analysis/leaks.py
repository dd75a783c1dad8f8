"""attach's analysis: which goroutines stayed parked, and how they become leak reports.

Three ways to know, one report:
- memory (the default): periodic reads of the target's goroutines tell who stayed parked
  (analysis/parks.py); the only probes are on the go statements, each until it walked its
  creation stack (live/tracer.py LeakTracer), and the reads count creations from the goids;
- memory without BPF (--no-bpf): the same reads, no probe at all; the creation stack is the go
  statement alone;
- exact (--park-times exact): probes on park and exit keep a table of exact park times;
  memory has the last word on whether a suspect still is parked (wake-ups are not probed).
Parked stacks are read from memory, for suspects alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gotrace.analysis.ignore import Ignorer
from gotrace.analysis.parks import ParkTracker
from gotrace.analysis.suspects import Verdict, Verifier, find_suspects
from gotrace.binary.gobinary import GoBinary
from gotrace.errors import GotraceError
from gotrace.frames import Symbols
from gotrace.live.bpfdefs import const
from gotrace.live.goroutines import (
    G_WAITING,
    MAX_FRAMES,
    GoroutineReader,
    GSnapshot,
    Scan,
    no_gc,
)
from gotrace.live.layout import check_layout
from gotrace.live.process import ProcessMemory, Target
from gotrace.live.tracer import LeakTracer
from gotrace.model import Counters, GoroutineRecord, LeakReport, Suspect


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

    def __init__(self, target: Target, gb: GoBinary, tracer: LeakTracer | None, *,
                 threshold_s: float, ignore: Ignorer | None = None) -> None:
        """tracer: None for --no-bpf; with park_probe for exact park times; else creations."""
        self.target = target
        self.gb = gb
        self.tracer = tracer
        self.exact = tracer is not None and tracer.park_probe
        self.parks = ParkTracker()
        self.first_read: set[int] = set()  # goids that existed at attach
        self.first_goid = self.top_goid = 0  # Scan.top_goid at attach, and now
        self.skipped = 0  # goroutines of the last read that could not be read
        self.threshold_s = threshold_s
        self.ignore = ignore
        self.mem = ProcessMemory(target.pid)
        self.bias = target.load_bias(gb.img)
        self.sym = Symbols(gb.pcln, self.bias)
        self.goroutines = GoroutineReader(gb, self.mem, self.bias)
        self.warnings = gb.warnings()
        self.started = time.monotonic()
        # Parked stacks read from memory, kept so a report after the target exits still has them.
        self._stacks: dict[int, tuple[int, ...]] = {}

    def seed(self) -> Seeded:
        """Once the probes are live, the goroutines that already exist: the first read.

        The read first proves the runtime.g offsets right for this very process (a wrong
        layout raises BadInput before anything is reported; gotrace only ever reads).
        """
        now = time.monotonic_ns()
        scan = self._scan(check=True)
        if scan is None:
            return Seeded(0, 0, 0, 0, 0)  # it ended meanwhile: the main loop reports that
        if self.exact:
            return self._seed_table(scan, now)
        self.parks.update(scan.goroutines, now)
        self.first_read = set(self.parks.live)
        self.first_goid = self.top_goid = scan.top_goid
        self.skipped = scan.skipped
        return Seeded(len(scan.goroutines), len(self.parks.parks), 0, 0, scan.skipped)

    def read(self) -> None:
        """One read of every goroutine (memory modes; the command calls it every read
        interval): what the park tracker learns from."""
        if self.exact:
            return
        now = time.monotonic_ns()
        scan = self._scan()
        if scan is None:
            return  # it ended while read: the command's loop says how
        with no_gc():  # one Park per new park, no cycle
            self.parks.update(scan.goroutines, now)
        self.skipped = scan.skipped
        self.top_goid = max(self.top_goid, scan.top_goid)

    def add_tracer(self, tracer: LeakTracer) -> None:
        """Give a memory-only session its go statement probes, attached since (`gotrace agent`
        starts every process without BPF, which needs no compile, and adds the probes to those
        that stay). Park history and the counts from memory go on."""
        if self.tracer is not None or tracer.park_probe:
            raise ValueError("add_tracer: a memory-only session takes go statement probes")
        self.read()
        self.tracer = tracer

    def _scan(self, *, check: bool = False) -> Scan | None:
        """Every goroutine, read now; None when the target ended while read (or what was read
        may belong to another process: a PID reused, or another program after an exec)."""
        try:
            scan = self.goroutines.scan()
            if check:
                check_layout(scan.goroutines, self.gb, self.bias, self.goroutines.reread)
        except GotraceError:
            if self.target.alive():
                raise
            return None
        return scan if self.target.alive() else None

    def _seed_table(self, scan: Scan, attached_ns: int) -> Seeded:
        """Exact park times: the goroutines that already exist enter the probes' table.

        A goroutine whose wait began before the attach counts as parked since the attach, a
        lower bound; its creation stack is just its go statement (gopc). Events seen since
        the attach win (tracer.seed). A goroutine that exited between the read and the
        insert left its exit probe nothing to delete: it is removed here.
        """
        records = [seed_record(g, attached_ns) for g in scan.goroutines]
        assert self.tracer is not None
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

    def verified(self, records: list[GoroutineRecord]) -> Verifier:
        """Exact park times: is each suspect still parked where the probes saw it park? Memory
        has the last word (wake-ups are not probed), read for all suspects in one batch.

        The parked stack is unwound here, for suspects only, rather than captured in BPF at
        every park: same frames (plus the one a probe-side walk misses), no cost on the
        target's hot path (~0.7 µs per park measured with the probe-side capture).
        """
        now = time.monotonic_ns()
        threshold = int(self.threshold_s * 1e9)
        suspects = [r for r in records if r.parked_ns and now - r.parked_ns >= threshold]
        verdicts: dict[int, Verdict] = {}
        unwind: list[tuple[GoroutineRecord, GSnapshot]] = []
        for r, g in zip(suspects, self.goroutines.read_gs([r.gaddr for r in suspects]),
                        strict=True):
            if g is None:
                verdicts[r.goid] = Verdict(None, self._stacks.get(r.goid, ()))
            elif g.goid != r.goid or not g.parked or g.wait_reason != r.wait_reason:
                self._stacks.pop(r.goid, None)
                verdicts[r.goid] = Verdict(False)
            elif r.park_stack:
                verdicts[r.goid] = Verdict(True)
            else:
                unwind.append((r, g))
        for (r, _), st in zip(unwind, self.goroutines.stacks([g for _, g in unwind],
                                                              MAX_FRAMES), strict=True):
            if st is None:  # it moved while read: it ran
                self._stacks.pop(r.goid, None)
                verdicts[r.goid] = Verdict(False)
            else:
                self._stacks[r.goid] = tuple(st.pcs)
                verdicts[r.goid] = Verdict(True, tuple(st.pcs))
        return lambda rec: verdicts.get(rec.goid, Verdict(None))

    def cached(self, rec: GoroutineRecord) -> Verdict:
        """After the target exited: nothing to read, only what the last report saw."""
        return Verdict(None, self._stacks.get(rec.goid, ()))

    def _from_memory(self, target_exited: bool) -> tuple[list[GoroutineRecord], Counters,
                                                          Verifier]:
        """Suspect records from the park tracker; a goroutine created since the attach gets the
        creation stack last walked at its go statement (the probe walks one in N there)."""
        if not target_exited:
            self.read()
        now = time.monotonic_ns()
        sites = self.tracer.site_stacks() if self.tracer else {}
        parks = self.parks.parked_longer_than(int(self.threshold_s * 1e9), now)
        if not target_exited:  # parked stacks, in one batch; one that moved meanwhile ran
            read = self.goroutines.stacks([p.g for p in parks], MAX_FRAMES)
            self._stacks = {}
            kept = []
            for p, st in zip(parks, read, strict=True):
                if st is not None:
                    self._stacks[p.g.goid] = tuple(st.pcs)
                    kept.append(p)
            parks = kept
        verdicts: dict[int, Verdict] = {}
        records = []
        none: list[int] = []  # one empty stack shared by every record that has none
        first, stacks = self.first_read, self._stacks
        for p in parks:
            g = p.g
            goid = g.goid
            before = goid in first
            records.append(GoroutineRecord(
                goid, g.gaddr, 0 if before else p.first_seen_ns, p.since_ns, g.gopc, g.startpc,
                g.parent_goid, g.wait_reason, 0, 0, none if before else sites.get(g.gopc, none),
                none))
            verdicts[goid] = Verdict(True, stacks.get(goid, ()))
        counters = self.tracer.counters() if self.tracer is not None else \
            Counters(parks=None, wakes=None)
        if self.tracer is None or self.tracer.per_go_statement:  # no probe on every creation
            counters.created = self.top_goid - self.first_goid
        counters.exited = max(0, counters.created + len(self.first_read) - len(self.parks.live))
        counters.lost.memory_reads += self.skipped
        return records, counters, lambda r: verdicts[r.goid]

    def leak_report(self, *, final: bool, target_exited: bool = False) -> LeakReport:
        with no_gc():  # ~10 objects per suspect, no cycle: collections would only cost
            return self._leak_report(final, target_exited)

    def _leak_report(self, final: bool, target_exited: bool) -> LeakReport:
        if self.ignore is not None:
            self.ignore.reset()
        if self.exact:
            assert self.tracer is not None
            records = self.tracer.records()
            counters = self.tracer.counters()
            verify: Verifier = self.cached if target_exited else self.verified(records)
            live = len(records)
        else:
            records, counters, verify = self._from_memory(target_exited)
            live = len(self.parks.live)
        now = time.monotonic_ns()
        suspects: list[Suspect] = []
        hidden = gone = unverified = 0
        for test, part in self.partition(records).items():
            out = find_suspects(part, now_ns=now, threshold_ns=int(self.threshold_s * 1e9),
                                sym=self.sym, reason_name=self.gb.wait_reason, verify=verify,
                                ignore=self.ignore)
            for sus in out.suspects:
                sus.test = test
            suspects += out.suspects
            hidden += out.system_hidden
            gone += out.no_longer_parked
            unverified += out.unverified
        suspects.sort(key=lambda x: (-x.count, -x.parked_s_max, x.created_at.file,
                                     x.created_at.line, x.test or ""))
        return LeakReport(
            pid=self.target.pid,
            go_version=self.gb.go_version,
            threshold_s=self.threshold_s,
            elapsed_s=time.monotonic() - self.started,
            live=live,
            counters=counters,
            suspects=suspects,
            final=final,
            system_hidden=hidden,
            no_longer_parked=gone,
            unverified=unverified,
            target_exited=target_exited,
            warnings=self.warnings,
            ignored=dict(self.ignore.counts) if self.ignore else {},
        )

    def partition(self, records: list[GoroutineRecord]
                  ) -> dict[str | None, list[GoroutineRecord]]:
        """Parts whose goroutines are never grouped together, keyed by the test they belong
        to (gotrace run splits by test; attach has one part)."""
        return {None: records}

    def close(self) -> None:
        self.mem.close()
