"""Goroutines read from outside: each runtime.g, its stack, and every g in `runtime.allgs`,
through /proc/PID/mem.

The process is never stopped, so the runtime's own rule for racy readers is followed (read
`allglen` before `allgptr`: "New Gs appended during the race can be missed", runtime/proc.go)
and anything read may change under our feet: a g whose fields move while its stack is read is
read again, and after a few tries skipped and counted, never guessed. Stacks are unwound from
`g.sched` (or the syscall save area) through frame pointers, which Go keeps on amd64.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as fields_of
from functools import lru_cache
from operator import itemgetter

from gotrace.binary.allgs import AllgsAddrs, find_allgs
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.offsets import GOffsets
from gotrace.errors import BadInput, CannotTrace
from gotrace.live.process import ProcessMemory

G_IDLE = 0
G_RUNNABLE = 1
G_RUNNING = 2
G_SYSCALL = 3
G_WAITING = 4
G_DEAD = 6
G_COPYSTACK = 8
G_PREEMPTED = 9
G_LEAKED = 10  # Go 1.26+: a waiting goroutine the GC proved unreachable (experiment)
G_DEADEXTRA = 11  # Go 1.26+: a dead g kept for cgo callbacks
G_SCAN = 0x1000
STATUS_NAMES = {
    0: "idle", 1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 6: "dead",
    8: "copystack", 9: "preempted", 10: "leaked", 11: "dead",
}
MAX_FRAMES = 64
STACK_WINDOW = 64 * 1024  # bytes of stack read at once above sp; deeper frames one by one


@dataclass(frozen=True, slots=True)
class GSnapshot:
    goid: int
    status: int  # without the _Gscan bit
    wait_reason: int
    sched_pc: int
    sched_sp: int
    sched_bp: int
    stack_lo: int
    stack_hi: int
    gaddr: int = 0
    gopc: int = 0
    startpc: int = 0
    parent_goid: int = 0  # 0 before Go 1.21
    m: int = 0  # non-zero while running or in a syscall
    sched_g: int = 0  # the g itself, for every g that is not running
    syscallsp: int = 0
    syscallpc: int = 0
    syscallbp: int = 0  # 0 before Go 1.23
    waitsince: int = 0  # runtime nanotime() set by the GC for waiting gs; 0 = unknown

    @property
    def parked(self) -> bool:
        return self.status == G_WAITING

    @property
    def dead(self) -> bool:
        return self.status in (G_DEAD, G_DEADEXTRA)


# GSnapshot fields read as u64 at an offset of runtime.g (None: absent in this version).
_U64_FIELDS = ("goid", "sched_pc", "sched_sp", "sched_bp", "stack_lo", "stack_hi", "gopc",
               "startpc", "parent_goid", "m", "sched_g", "syscallsp", "syscallpc", "syscallbp",
               "waitsince")


_Layout = tuple[struct.Struct, Callable[[tuple[int, ...]], tuple[int, ...]], int]


@lru_cache(maxsize=16)
def _layout(off: GOffsets) -> _Layout:
    """One struct format for every field of runtime.g gotrace reads, and the getter that puts
    the unpacked values in GSnapshot's field order: one unpack and one constructor call per
    g (a dump of 100k goroutines reads each g twice)."""
    where = {"sched_g": off.sched_sp + 16}  # gobuf: sp, pc, g
    fields: list[tuple[int, str, str]] = [(off.status, "I", "status"),
                                          (off.waitreason, "B", "wait_reason")]
    for name in _U64_FIELDS:
        o = where.get(name, getattr(off, name, None))
        if o is not None:
            fields.append((o, "Q", name))
    fields.sort()
    fmt, pos, names = "<", 0, []
    for o, code, name in fields:
        if o < pos:
            raise BadInput(f"runtime.g offsets from {off.source} overlap at {o} ({name}): "
                           "cannot read goroutines of this binary")
        fmt += f"{o - pos}x{code}" if o > pos else code
        pos = o + struct.calcsize("<" + code)
        names.append(name)
    # The unpacked tuple gets two more values: 0 (for fields this version lacks) and gaddr.
    index = {name: i for i, name in enumerate(names)} | {"gaddr": len(names) + 1}
    order = [index.get(f.name, len(names)) for f in fields_of(GSnapshot)]
    return struct.Struct(fmt), itemgetter(*order), pos


_last: list[tuple[GOffsets, _Layout]] = []


def read_g(mem: ProcessMemory, off: GOffsets, gaddr: int) -> GSnapshot | None:
    if _last and _last[0][0] is off:  # hashing GOffsets costs more than reading a g
        layout, order, size = _last[0][1]
    else:
        _last[:] = [(off, _layout(off))]
        layout, order, size = _last[0][1]
    raw = mem.read(gaddr, size)
    if raw is None:
        return None
    v = order((*layout.unpack_from(raw), 0, gaddr))
    return GSnapshot(v[0], v[1] & ~G_SCAN, *v[2:])


def unwind_parked(mem: ProcessMemory, g: GSnapshot) -> list[int]:
    """PCs of a parked goroutine, innermost first: sched.pc, then the frame-pointer chain.

    Only frames whose frame pointer lies inside the goroutine's own stack are followed, so a
    stale or torn read ends the walk instead of wandering through memory.
    """
    return unwind(mem, g.sched_pc, g.sched_sp, g.sched_bp, g.stack_lo, g.stack_hi)


def unwind(mem: ProcessMemory, pc: int, sp: int, bp: int, lo: int, hi: int,
           max_frames: int = MAX_FRAMES) -> list[int]:
    """PCs from a saved (pc, sp, bp) on the stack [lo, hi), innermost first.

    The stack above sp is read in one piece (one syscall instead of one per frame), then the
    frame-pointer chain is followed in it; frames beyond the window are read one by one.
    """
    if not pc:
        return []
    pcs = [pc]
    window = mem.read(sp, min(hi - sp, STACK_WINDOW)) if lo <= sp < hi else None
    prev = sp
    while len(pcs) < max_frames and lo <= bp < hi and bp >= prev:
        if window is not None and bp + 16 <= sp + len(window):
            frame: bytes | None = window[bp - sp : bp - sp + 16]
        else:
            frame = mem.read(bp, 16)
        if frame is None:
            break
        next_bp = int.from_bytes(frame[:8], "little")
        ret = int.from_bytes(frame[8:], "little")
        if not ret:
            break
        pcs.append(ret)
        prev, bp = bp, next_bp
    return pcs


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
