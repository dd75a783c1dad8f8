"""Plain data passed between the live tracer, the report builder and the renderers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, NamedTuple

from gotrace.binary.pclntab import Frame
from gotrace.live.bpfdefs import const


@dataclass(slots=True)
class GoroutineRecord:
    """A goroutine as the analysis sees it: an entry of the BPF goroutine table (struct
    goroutine_record in bpf/gotrace.h, stacks resolved), or what memory reads know of it."""

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


LOST_REASONS = {
    "table_full": "goroutine table full",  # goroutine records not stored (also at attach)
    "stacks": "stacks",  # stacks not captured: the stack map was full
    "memory_reads": "memory reads",  # probe-side reads of target memory that failed
    "ring_buffer": "ring buffer full",  # tail: events the ring buffer had no room for
    "hist_full": "histogram map full",  # hist: samples not counted
    "unreadable_records": "unreadable records",  # tail: ring records of an unexpected size
    "screen_table_full": "screen table full",  # tail's screen: goroutines it had no room for
}


@dataclass
class Lost:
    """What was dropped, by reason. "lost" means their sum, on every screen and in every JSON
    document; nothing is dropped without being counted here."""

    table_full: int = 0
    stacks: int = 0
    memory_reads: int = 0
    ring_buffer: int = 0
    hist_full: int = 0
    unreadable_records: int = 0
    screen_table_full: int = 0

    @property
    def total(self) -> int:
        return sum(self.to_json().values())

    def to_json(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in LOST_REASONS}

    def describe(self) -> str:
        """The breakdown for people: the reasons that dropped something, or "nothing"."""
        parts = [f"{LOST_REASONS[k]} {n:,}" for k, n in self.to_json().items() if n]
        return ", ".join(parts) or "nothing"


@dataclass
class Counters:
    """The kernel's counts of one tracer (per-CPU sums), the same type for every command."""

    created: int = 0
    exited: int = 0
    parks: int | None = 0  # None: parks not probed (attach reads park state from memory)
    wakes: int | None = 0  # None: wake-ups not probed (attach relies on memory instead)
    lost: Lost = field(default_factory=Lost)
    # attach's default: hits of the go statements' own probes (each removed after its stack)
    go_statement_hits: int | None = None

    @property
    def lost_events(self) -> int:
        return self.lost.total

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "exited": self.exited,
            **({"parks": self.parks} if self.parks is not None else {}),
            **({"wakes": self.wakes} if self.wakes is not None else {}),
            **({"go_statement_hits": self.go_statement_hits}
               if self.go_statement_hits is not None else {}),
            "lost_events": self.lost_events,
            "lost": self.lost.to_json(),
        }


class Kind(IntEnum):
    """Goroutine lifecycle events, as the BPF program numbers them (EV_* in bpf/gotrace.h)."""

    CREATE = const("EV_CREATE")
    EXIT = const("EV_EXIT")
    PARK = const("EV_PARK")
    WAKE = const("EV_WAKE")

    @property
    def label(self) -> str:
        return self.name.lower()


class Event(NamedTuple):
    """One lifecycle event from tail's ring buffer; field order is struct event's."""

    ts_ns: int
    goid: int
    parent_goid: int
    gopc: int  # the go statement (runtime address); 0: unknown
    pc: int  # park: return address in the parked-at frame
    duration_ns: int  # wake: time parked; exit: lifetime; 0: unknown
    kind: int  # Kind
    wait_reason: int


def frame_json(f: Frame) -> dict[str, Any]:
    return {"function": f.function, "file": f.file, "line": f.line}


@dataclass(frozen=True)
class Blame:
    """The commit that last changed a line (`git blame`), as gotrace run names it."""

    commit: str
    author: str
    summary: str

    def to_json(self) -> dict[str, str]:
        return {"commit": self.commit, "author": self.author, "summary": self.summary}


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
    test: str | None = None  # gotrace run: the TestXxx that made them (None: not under tRunner)
    blame: Blame | None = None  # gotrace run: the commit that last changed the go statement

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
            "test": self.test,
            "blame": self.blame.to_json() if self.blame else None,
        }


@dataclass
class LeakReport:
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
    ignored: dict[str, int] = field(default_factory=dict)  # ignore rule -> goroutines it hid

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
            **c.to_json(),
            "system_hidden": self.system_hidden,
            "no_longer_parked": self.no_longer_parked,
            "unverified": self.unverified,
            "target_exited": self.target_exited,
            "warnings": self.warnings,
            "ignored": self.ignored,
            "suspects": [s.to_json() for s in self.suspects],
        }


@dataclass
class ProgramRun:
    """One Go program `gotrace run` saw start, and what it knew at that program's end."""

    pid: int
    exe: str  # the executable's path, as the program saw it
    path: str  # main package path from the build info (`go version -m`)
    go_version: str
    traced: bool  # False: left out (the toolchain, --match, or it could not be traced)
    seen_at_exit: bool = False  # held at runtime.exit and read there
    exit_code: int | None = None  # the code passed to runtime.exit
    report: LeakReport | None = None  # read at the exit path
    note: str = ""  # why it was not traced, or how it ended when not at its exit path

    @property
    def leaks(self) -> int:
        return sum(s.count for s in self.report.suspects) if self.report else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "program",
            "pid": self.pid,
            "exe": self.exe,
            "path": self.path,
            "go_version": self.go_version,
            "traced": self.traced,
            "seen_at_exit": self.seen_at_exit,
            "exit_code": self.exit_code,
            "leaks": self.leaks,
            "note": self.note,
            "report": self.report.to_json() if self.report else None,
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
    ignored: dict[str, int] = field(default_factory=dict)  # ignore rule -> goroutines hidden
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
            "ignored": self.ignored,
            "goroutines": [g.to_json() for g in self.goroutines] if with_goroutines else None,
        }



