"""A goroutine's state read from outside: its runtime.g and its stack, from /proc/PID/mem.

Used to confirm, at report time, that a suspect is still parked where the probes saw it park,
and to unwind a parked goroutine's stack from `g.sched` through frame pointers (Go keeps
them on amd64). The target keeps running meanwhile, so every read may fail or be stale.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as fields_of
from functools import lru_cache
from operator import itemgetter

from gotrace.binary.offsets import GOffsets
from gotrace.errors import BadInput
from gotrace.process import ProcessMemory

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
