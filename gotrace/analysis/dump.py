"""A goroutine dump taken from outside: every goroutine of a running Go program with its stack.

Needs only the right to read the process's memory (no BPF, no signal, no stop): the
goroutines come from `runtime.allgs`, their stacks from `g.sched` (or the syscall save
area) through frame pointers, their symbols from the binary's pclntab.
"""

from __future__ import annotations

import time

from gotrace.analysis.ignore import Ignorer
from gotrace.binary.funcinfo import wrapper_functions
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.pclntab import Frame
from gotrace.errors import BadInput, GotraceError
from gotrace.frames import MAIN_GOROUTINE, Symbols, is_system
from gotrace.live.goroutines import (
    G_LEAKED,
    G_SYSCALL,
    G_WAITING,
    STATUS_NAMES,
    GoroutineReader,
    GoroutineStack,
    GSnapshot,
    no_gc,
)
from gotrace.live.layout import check_layout
from gotrace.live.process import ProcessMemory, Target
from gotrace.model import DumpedGoroutine, GoroutineDump

MAX_FRAMES = 100  # as Go's tracebacks before 1.21 (later ones print 50 + 50)
# Go's gStatusStrings, where they differ from gotrace's short names.
GO_STATUS = {**STATUS_NAMES, 11: "waiting for cgo callback"}


def take_dump(target: Target, gb: GoBinary, *, min_wait_s: float | None = None,
              include_system: bool = False, ignore: Ignorer | None = None) -> GoroutineDump:
    mem = ProcessMemory(target.pid)
    try:
        out = _dump(target.pid, gb, mem, target.load_bias(gb.img), min_wait_s, include_system)
        if ignore is not None:
            hide(out, ignore)
        return out
    except GotraceError:
        if target.alive():
            raise
        raise BadInput(f"PID {target.pid} exited while gotrace was reading it") from None
    finally:
        mem.close()


def _dump(pid: int, gb: GoBinary, mem: ProcessMemory, bias: int, min_wait_s: float | None,
          include_system: bool) -> GoroutineDump:
    """Every goroutine in a few batched reads: allgs and every g (one scan), then the stack
    windows of those shown, then their gs again (each must not have moved meanwhile)."""
    started = time.monotonic()
    reader = GoroutineReader(gb, mem, bias)
    with no_gc():  # ~10 objects per goroutine and no cycle: collections would only cost
        scan = reader.scan()
        check_layout(scan.goroutines, gb, bias, reader.reread)
        sym = Symbols(gb.pcln, bias)
        out = GoroutineDump(pid, gb.go_version, [], skipped=scan.skipped, min_wait_s=min_wait_s)
        has_parent = gb.offsets.parent_goid is not None
        now_ns = time.monotonic_ns()
        starts: dict[int, str] = {}  # startpc -> function: goroutines share a few
        chosen: list[GSnapshot] = []
        names: list[str] = []
        for g in scan.goroutines:
            start = starts.get(g.startpc)
            if start is None:
                start = starts[g.startpc] = sym.function(g.startpc)
            verdict = selected(g, start, now_ns, min_wait_s, include_system)
            if verdict == SHOWN:
                chosen.append(g)
                names.append(start)
            elif verdict == SYSTEM:
                out.system_hidden += 1
            elif verdict == SHORT:
                out.below_min_wait += 1
            else:
                out.wait_unknown += 1
        make = _Maker(gb, sym, has_parent)
        for st, start in zip(reader.stacks(chosen, MAX_FRAMES), names, strict=True):
            if st is None:
                out.skipped += 1  # changed while read, or exited
            else:
                out.goroutines.append(make(st, start))
        out.elapsed_s = time.monotonic() - started
    out.wrappers = wrapper_functions(gb.pcln)
    return out


def hide(dump: GoroutineDump, ignore: Ignorer) -> None:
    """Leave out the goroutines an ignore rule hides, counted per rule (the go statement
    alone stands for the creation stack: a dump has no other)."""
    ignore.reset()
    dump.goroutines = [g for g in dump.goroutines if not ignore.hidden(
        existed_at_attach=False, go=g.created_at, start=g.start_function, parked=g.stack,
        created=(g.created_at,), reason=g.wait_reason or g.status)]
    dump.ignored = dict(ignore.counts)


SHOWN, SYSTEM, SHORT, UNKNOWN_WAIT = "shown", "system", "short", "unknown wait"


def selected(g: GSnapshot, start: str, now_ns: int, min_wait_s: float | None,
             include_system: bool) -> str:
    """Whether a goroutine is shown, and if not, under which count it is left out."""
    if not include_system and is_system(start):
        return SYSTEM
    if min_wait_s is None:
        return SHOWN
    if g.status not in (G_WAITING, G_SYSCALL, G_LEAKED):
        return SHORT
    wait_s = _wait_s(g, now_ns)
    if wait_s is None:
        return UNKNOWN_WAIT
    return SHOWN if wait_s >= min_wait_s else SHORT


def _wait_s(g: GSnapshot, now_ns: int | None = None) -> float | None:
    """How long g has waited, from g.waitsince: the runtime's nanotime() (CLOCK_MONOTONIC).

    The GC sets it to its cycle's start time for goroutines it finds waiting, so it is
    approximate, and unknown (0) until a GC has run since the goroutine parked. The runtime
    forces a GC every 2 minutes (forcegcperiod) unless GOGC=off, so a wait still unknown is
    most likely shorter than that.
    """
    if g.status not in (G_WAITING, G_SYSCALL, G_LEAKED) or not g.waitsince:
        return None
    now = time.monotonic_ns() if now_ns is None else now_ns
    return max(0.0, (now - g.waitsince) / 1e9)


class _Maker:
    """GoroutineStack -> DumpedGoroutine. Goroutines of one leak share their stack: one list
    of frames per distinct stack (renderers encode it once), one lookup per distinct PC."""

    def __init__(self, gb: GoBinary, sym: Symbols, has_parent: bool) -> None:
        self.gb = gb
        self.sym = sym
        self.has_parent = has_parent
        self.stacks: dict[tuple[int, ...], list[Frame]] = {}
        self.reasons: dict[int, str] = {}
        self.now_ns = time.monotonic_ns()

    def __call__(self, st: GoroutineStack, start: str) -> DumpedGoroutine:
        g = st.g
        waiting = g.status in (G_WAITING, G_LEAKED)
        note = None
        if st.source == "none":
            note = ("goroutine running on other thread; stack unavailable"
                    if g.status != G_SYSCALL else "stack unavailable")
        elif st.truncated:
            note = "in a system call; only the innermost frame is known"
        key = tuple(st.pcs)
        frames = self.stacks.get(key)
        if frames is None:
            frames = self.stacks[key] = list(self.sym.stack(key))
        reason = None
        if waiting:
            reason = self.reasons.get(g.wait_reason)
            if reason is None:
                reason = self.reasons[g.wait_reason] = self.gb.wait_reason(g.wait_reason)
        return DumpedGoroutine(
            goid=g.goid,
            parent_goid=g.parent_goid if self.has_parent else None,
            status=GO_STATUS.get(g.status, f"status {g.status}"),
            wait_reason=reason,
            wait_s=_wait_s(g, self.now_ns) if g.waitsince else None,
            created_at=MAIN_GOROUTINE if g.goid == 1 else self.sym.go_statement(g.gopc),
            start_function=start,
            stack=frames,
            stack_note=note,
        )

