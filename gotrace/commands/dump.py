"""`gotrace dump PID`: every goroutine of a running Go program, read from outside.

Needs only the right to read the process's memory (no BPF, no signal, no stop): the
goroutines come from `runtime.allgs`, their stacks from `g.sched` (or the syscall save
area) through frame pointers, their symbols from the binary's pclntab.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from gotrace.analysis.suspects import UNKNOWN, is_system
from gotrace.binary.funcinfo import wrapper_functions
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.pclntab import Frame
from gotrace.commands.attach import load_bias, open_target
from gotrace.errors import BadInput, GotraceError
from gotrace.frames import ProcessSymbolizer
from gotrace.live.goroutines import (
    G_LEAKED,
    G_SYSCALL,
    G_WAITING,
    STATUS_NAMES,
    GoroutineReader,
    GoroutineStack,
    GSnapshot,
)
from gotrace.live.layout import check_layout
from gotrace.live.process import ProcessMemory
from gotrace.model import DumpedGoroutine, GoroutineDump
from gotrace.render.dump import DumpJsonRenderer, DumpTextRenderer

MAX_FRAMES = 100  # as Go's tracebacks before 1.21 (later ones print 50 + 50)
# Go's gStatusStrings, where they differ from gotrace's short names.
GO_STATUS = {**STATUS_NAMES, 11: "waiting for cgo callback"}


@dataclass
class DumpOptions:
    pid: int
    json: bool = False
    min_wait_s: float | None = None
    include_system: bool = False


class StackSymbols:
    """Raw PCs to frames once per distinct stack: goroutines of one leak share their stack."""

    def __init__(self, sym: ProcessSymbolizer) -> None:
        self.sym = sym
        self._cache: dict[tuple[int, ...], list[Frame]] = {}
        self._async_preempt = {f.entry for f in (sym.pcln.lookup("runtime.asyncPreempt"),) if f}

    def frames(self, pcs: tuple[int, ...]) -> list[Frame]:
        got = self._cache.get(pcs)
        if got is None:
            got = []
            after_injected_call = False
            for pc in pcs:
                # Every PC is a return address except the one asyncPreempt interrupted: the
                # signal handler pushed it as if called, so it is the exact instruction.
                fr = self.sym.frames(pc, is_return_address=not after_injected_call)
                got.extend(fr)
                f = self.sym.pcln.func_at(pc - self.sym.bias)
                after_injected_call = f is not None and f.entry in self._async_preempt
            got = [f for f in got if f.function != "runtime.goexit"]
            self._cache[pcs] = got
        return got

    def creation(self, gopc: int) -> Frame:
        return (self.sym.frames(gopc, is_return_address=True) or [UNKNOWN])[0]


def take_dump(pid: int, *, min_wait_s: float | None = None,
              include_system: bool = False) -> GoroutineDump:
    target, gb = open_target(pid)
    mem = ProcessMemory(pid)
    try:
        return _dump(pid, gb, mem, load_bias(target, gb), min_wait_s, include_system)
    except GotraceError:
        if target.alive():
            raise
        raise BadInput(f"PID {pid} exited while gotrace was reading it") from None
    finally:
        mem.close()


def _dump(pid: int, gb: GoBinary, mem: ProcessMemory, bias: int, min_wait_s: float | None,
          include_system: bool) -> GoroutineDump:
    started = time.monotonic()
    reader = GoroutineReader(gb, mem, bias)
    scan = reader.scan()
    check_layout(scan.goroutines, gb, bias, reader.reread)
    sym = ProcessSymbolizer(gb.pcln, bias)
    stacks = StackSymbols(sym)
    out = GoroutineDump(pid, gb.go_version, [], skipped=scan.skipped, min_wait_s=min_wait_s)
    has_parent = gb.offsets.parent_goid is not None
    now_ns = time.monotonic_ns()
    for g in scan.goroutines:
        start = sym.function(g.startpc)
        verdict = selected(g, start, now_ns, min_wait_s, include_system)
        if verdict == SYSTEM:
            out.system_hidden += 1
            continue
        if verdict == SHORT:
            out.below_min_wait += 1
            continue
        if verdict == UNKNOWN_WAIT:
            out.wait_unknown += 1
            continue
        st = reader.stack(g, MAX_FRAMES)
        if st is None:
            out.skipped += 1  # changed while read, or exited
            continue
        out.goroutines.append(_goroutine(st, gb, stacks, start, has_parent))
    out.elapsed_s = time.monotonic() - started
    out.wrappers = wrapper_functions(gb.pcln)
    return out


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


def _goroutine(st: GoroutineStack, gb: GoBinary, stacks: StackSymbols, start: str,
               has_parent: bool) -> DumpedGoroutine:
    g = st.g
    waiting = g.status in (G_WAITING, G_LEAKED)
    note = None
    if st.source == "none":
        note = ("goroutine running on other thread; stack unavailable"
                if g.status != G_SYSCALL else "stack unavailable")
    elif st.truncated:
        note = "in a system call; only the innermost frame is known"
    return DumpedGoroutine(
        goid=g.goid,
        parent_goid=g.parent_goid if has_parent else None,
        status=GO_STATUS.get(g.status, f"status {g.status}"),
        wait_reason=gb.wait_reason(g.wait_reason) if waiting else None,
        wait_s=_wait_s(g),
        created_at=stacks.creation(g.gopc),
        start_function=start,
        stack=stacks.frames(tuple(st.pcs)),
        stack_note=note,
    )


def run(opts: DumpOptions) -> int:
    dump = take_dump(opts.pid, min_wait_s=opts.min_wait_s, include_system=opts.include_system)
    if opts.json:
        DumpJsonRenderer().render(dump)
    else:
        DumpTextRenderer(all_frames=opts.include_system).render(dump)
    sys.stdout.flush()
    return 0
