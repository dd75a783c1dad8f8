"""Plain data passed between the live tracer, the report builder and the renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gotrace.binary.pclntab import Frame


@dataclass
class GoroutineRecord:
    """One entry of the BPF goroutine table (struct gstate in bpf/gotrace.h), stacks resolved."""

    goid: int
    gaddr: int
    created_ns: int  # 0: created before attach
    parked_ns: int  # 0: not parked
    gopc: int
    startpc: int
    parent_goid: int
    wait_reason: int
    flags: int = 0
    park_caller: int = 0
    create_stack: list[int] = field(default_factory=list)  # runtime PCs, innermost first
    park_stack: list[int] = field(default_factory=list)


@dataclass
class Counters:
    created: int = 0
    exited: int = 0
    parked: int = 0
    woken: int | None = 0  # None: wake-ups not probed (attach relies on the memory check)
    lost_table_full: int = 0
    lost_stacks: int = 0
    lost_reads: int = 0  # probe-side reads of target memory that failed

    @property
    def lost_events(self) -> int:
        return self.lost_table_full + self.lost_stacks + self.lost_reads


def frame_json(f: Frame) -> dict[str, Any]:
    return {"function": f.function, "file": f.file, "line": f.line}


@dataclass
class Suspect:
    """Goroutines parked past the threshold that share a go statement, reason and wait site."""

    count: int
    wait_reason: str
    parked_s_max: float
    created_at: Frame
    start_function: str
    parked_at: Frame | None
    creation_stack: list[Frame]
    parked_stack: list[Frame]
    goids: list[int]
    before_attach: int = 0  # members first seen after attach, already parked or created before

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "wait_reason": self.wait_reason,
            "parked_s_max": round(self.parked_s_max, 3),
            "created_at": frame_json(self.created_at),
            "start_function": self.start_function,
            "parked_at": frame_json(self.parked_at) if self.parked_at else None,
            "creation_stack": [frame_json(f) for f in self.creation_stack],
            "parked_stack": [frame_json(f) for f in self.parked_stack],
            "goids": self.goids,
            "before_attach": self.before_attach,
        }


@dataclass
class Report:
    pid: int
    go_version: str
    threshold_s: float
    elapsed_s: float
    live: int
    counters: Counters
    suspects: list[Suspect]
    final: bool = False
    system_hidden: int = 0  # parked runtime goroutines (GC workers, sweeper...) left out
    no_longer_parked: int = 0  # table said parked; memory said otherwise: dropped
    unverified: int = 0  # memory unreadable: reported on the probes' word alone
    target_exited: bool = False
    warnings: list[str] = field(default_factory=list)  # ways this binary hides events

    def to_json(self) -> dict[str, Any]:
        c = self.counters
        return {
            "type": "report",
            "final": self.final,
            "pid": self.pid,
            "go_version": self.go_version,
            "threshold_s": self.threshold_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "live": self.live,
            "created": c.created,
            "exited": c.exited,
            "parks": c.parked,
            **({"wakes": c.woken} if c.woken is not None else {}),
            "lost_events": c.lost_events,
            "lost": {
                "table_full": c.lost_table_full,
                "stacks": c.lost_stacks,
                "memory_reads": c.lost_reads,
            },
            "system_hidden": self.system_hidden,
            "no_longer_parked": self.no_longer_parked,
            "unverified": self.unverified,
            "target_exited": self.target_exited,
            "warnings": self.warnings,
            "suspects": [s.to_json() for s in self.suspects],
        }


@dataclass
class DumpedGoroutine:
    """One goroutine of `gotrace dump`, read from the target's memory."""

    goid: int
    parent_goid: int | None  # None before Go 1.21 (the runtime does not record it)
    status: str  # Go's own words: waiting, runnable, running, syscall, ...
    wait_reason: str | None  # set while waiting
    wait_s: float | None  # approximate, from g.waitsince (set by the GC); None: unknown
    created_at: Frame  # the go statement, as in attach's reports
    start_function: str
    stack: list[Frame]  # innermost first, runtime frames included
    stack_note: str | None = None  # why the stack is missing or partial

    def to_json(self, *, with_stack: bool = True) -> dict[str, Any]:
        return {
            "goid": self.goid,
            "parent_goid": self.parent_goid,
            "status": self.status,
            "wait_reason": self.wait_reason,
            "wait_s": None if self.wait_s is None else round(self.wait_s, 3),
            "created_at": frame_json(self.created_at),
            "start_function": self.start_function,
            "stack": [frame_json(f) for f in self.stack] if with_stack else None,
            "stack_note": self.stack_note,
        }


@dataclass
class GoroutineDump:
    pid: int
    go_version: str
    goroutines: list[DumpedGoroutine]
    skipped: int = 0  # unreadable or changing while read: left out
    system_hidden: int = 0  # runtime goroutines left out, as Go's runtime.Stack does
    min_wait_s: float | None = None
    below_min_wait: int = 0  # not waiting, or waiting less than min_wait_s
    wait_unknown: int = 0  # waiting, but no GC has dated the wait yet (with --min-wait)
    elapsed_s: float = 0.0  # how long reading took
    wrappers: frozenset[str] = frozenset()  # generated functions Go's tracebacks leave out

    def to_json(self, *, with_goroutines: bool = True) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "go_version": self.go_version,
            "skipped": self.skipped,
            "system_hidden": self.system_hidden,
            "min_wait_s": self.min_wait_s,
            "below_min_wait": self.below_min_wait,
            "wait_unknown": self.wait_unknown,
            "elapsed_s": round(self.elapsed_s, 3),
            "goroutines": [g.to_json() for g in self.goroutines] if with_goroutines else None,
        }


__all__ = ["Counters", "DumpedGoroutine", "Frame", "GoroutineDump", "GoroutineRecord", "Report",
           "Suspect"]
