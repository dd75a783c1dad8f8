"""Every goroutine of a running Go program, read from `runtime.allgs` through /proc/PID/mem.

The process is never stopped, so the runtime's own rule for racy readers is followed (read
`allglen` before `allgptr`: "New Gs appended during the race can be missed", runtime/proc.go)
and anything read may change under our feet: a g whose fields move while its stack is read is
read again, and after a few tries skipped and counted, never guessed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from gotrace.binary.allgs import AllgsAddrs, find_allgs
from gotrace.binary.gobinary import GoBinary
from gotrace.errors import BadInput, CannotTrace
from gotrace.gstate import (
    G_COPYSTACK,
    G_IDLE,
    G_RUNNING,
    G_SYSCALL,
    GSnapshot,
    read_g,
    unwind,
)
from gotrace.process import ProcessMemory

MAX_ALLGLEN = 1 << 26  # 64M goroutines: beyond this the word read is not a length
CHUNK = 1 << 16  # g pointers read per syscall
TRIES = 3  # reads of one g before it counts as changing


@dataclass
class Scan:
    """The live goroutines of one pass over allgs (dead gs are left out, as Go does)."""

    goroutines: list[GSnapshot]
    allglen: int
    skipped: int  # g structs that could not be read
    started_ns: int  # time.monotonic_ns() (CLOCK_MONOTONIC, the runtime's nanotime clock)


@dataclass
class GoroutineStack:
    """A goroutine and its stack, read consistently (the g did not change meanwhile)."""

    g: GSnapshot
    pcs: list[int] = field(default_factory=list)  # innermost first; the leaf is a return PC
    source: str = "sched"  # sched | syscall | none (running: no stack from outside)
    truncated: bool = False  # only the leaf is known (syscall before Go 1.23)


class GoroutineReader:
    """Reads allgs and the goroutines it lists; one per process."""

    def __init__(self, gb: GoBinary, mem: ProcessMemory, bias: int) -> None:
        self.gb = gb
        self.mem = mem
        self.bias = bias
        self.addrs: AllgsAddrs = find_allgs(gb.img, gb.pcln)

    def g_pointers(self) -> tuple[list[int], int]:
        """(addresses of every g in allgs, pointers that could not be read)."""
        n = self.mem.u64(self.addrs.allglen + self.bias)
        arr = self.mem.u64(self.addrs.allgptr + self.bias)
        if n is None or arr is None:
            raise CannotTrace(f"cannot read runtime.allglen/allgptr at "
                              f"{self.addrs.allglen + self.bias:#x} in the target's memory")
        if n > MAX_ALLGLEN or (n and not arr):
            raise BadInput(f"{self.gb.go_version}: runtime.allglen reads {n} (array {arr:#x}): "
                           f"the goroutine list is not where gotrace expects it "
                           f"({self.addrs.source}); cannot read goroutines")
        out: list[int] = []
        lost = 0
        for first in range(0, n, CHUNK):
            count = min(CHUNK, n - first)
            raw = self.mem.read(arr + 8 * first, 8 * count)
            if raw is None:
                lost += count
                continue
            out.extend(int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8))
        return out, lost

    def scan(self) -> Scan:
        """One pass: every g that is not dead, as read now."""
        started = time.monotonic_ns()
        ptrs, lost = self.g_pointers()
        off = self.gb.offsets
        live = []
        skipped = lost
        for gaddr in ptrs:
            g = read_g(self.mem, off, gaddr) if gaddr else None
            if g is None:
                skipped += 1
            elif not g.dead:
                live.append(g)
        return Scan(live, len(ptrs) + lost, skipped, started)

    def reread(self, g: GSnapshot) -> GSnapshot | None:
        return read_g(self.mem, self.gb.offsets, g.gaddr)

    def stacks(self, gs: list[GSnapshot], max_frames: int = 100
               ) -> Iterator[GoroutineStack | GSnapshot]:
        """Each goroutine with its stack; a bare GSnapshot when it kept changing (skip it)."""
        for g in gs:
            yield self.stack(g, max_frames) or g

    def stack(self, g: GSnapshot, max_frames: int = 100) -> GoroutineStack | None:
        """The stack of g, read so that the g is the same before and after; None if it moved."""
        for _ in range(TRIES):
            got = self._stack_once(g, max_frames)
            after = self.reread(g)
            if after is None:
                return None
            if after.goid != g.goid:
                return None  # exited and reused meanwhile: not this goroutine any more
            if _same(g, after):
                return got
            g = after
        return None

    def _stack_once(self, g: GSnapshot, max_frames: int) -> GoroutineStack:
        if g.status in (G_RUNNING, G_IDLE, G_COPYSTACK):
            return GoroutineStack(g, [], "none")
        if g.status == G_SYSCALL:
            if not (g.stack_lo < g.syscallsp <= g.stack_hi) or not g.syscallpc:
                return GoroutineStack(g, [], "none")
            bp = g.syscallbp
            if not bp:  # before Go 1.23: where the prologue saved it, from the frame size
                size = self.gb.pcln.frame_size(g.syscallpc - self.bias)
                if not size:
                    return GoroutineStack(g, [g.syscallpc], "syscall", truncated=True)
                bp = g.syscallsp + size - 8
            pcs = unwind(self.mem, g.syscallpc, g.syscallsp, bp, g.stack_lo, g.stack_hi,
                         max_frames)
            return GoroutineStack(g, pcs, "syscall")
        if not (g.stack_lo < g.sched_sp <= g.stack_hi):
            return GoroutineStack(g, [], "none")
        pcs = unwind(self.mem, g.sched_pc, g.sched_sp, g.sched_bp, g.stack_lo, g.stack_hi,
                     max_frames)
        return GoroutineStack(g, pcs, "sched")


def _same(a: GSnapshot, b: GSnapshot) -> bool:
    """Whether a goroutine is where it was: same state, same resume point, same stack."""
    return (a.goid == b.goid and a.status == b.status and a.wait_reason == b.wait_reason
            and a.sched_sp == b.sched_sp and a.sched_pc == b.sched_pc
            and a.sched_bp == b.sched_bp and a.syscallsp == b.syscallsp
            and a.syscallpc == b.syscallpc and a.stack_lo == b.stack_lo)
