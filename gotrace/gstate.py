"""A goroutine's state read from outside: its runtime.g and its stack, from /proc/PID/mem.

Used to confirm, at report time, that a suspect is still parked where the probes saw it park,
and to unwind a parked goroutine's stack from `g.sched` through frame pointers (Go keeps
them on amd64). The target keeps running meanwhile, so every read may fail or be stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from gotrace.binary.offsets import GOffsets
from gotrace.process import ProcessMemory

G_WAITING = 4
G_SCAN = 0x1000
STATUS_NAMES = {
    0: "idle", 1: "runnable", 2: "running", 3: "syscall", 4: "waiting", 6: "dead",
    8: "copystack", 9: "preempted", 10: "leaked", 11: "dead",
}
MAX_FRAMES = 64


@dataclass(frozen=True)
class GSnapshot:
    goid: int
    status: int  # without the _Gscan bit
    wait_reason: int
    sched_pc: int
    sched_sp: int
    sched_bp: int
    stack_lo: int
    stack_hi: int

    @property
    def parked(self) -> bool:
        return self.status == G_WAITING


def read_g(mem: ProcessMemory, off: GOffsets, gaddr: int) -> GSnapshot | None:
    size = max(off.goid, off.status, off.waitreason, off.sched_bp, off.stack_hi) + 8
    raw = mem.read(gaddr, size)
    if raw is None:
        return None

    def u64(o: int) -> int:
        return int.from_bytes(raw[o : o + 8], "little")

    return GSnapshot(
        goid=u64(off.goid),
        status=int.from_bytes(raw[off.status : off.status + 4], "little") & ~G_SCAN,
        wait_reason=raw[off.waitreason],
        sched_pc=u64(off.sched_pc),
        sched_sp=u64(off.sched_sp),
        sched_bp=u64(off.sched_bp),
        stack_lo=u64(off.stack_lo),
        stack_hi=u64(off.stack_hi),
    )


def unwind_parked(mem: ProcessMemory, g: GSnapshot) -> list[int]:
    """PCs of a parked goroutine, innermost first: sched.pc, then the frame-pointer chain.

    Only frames whose frame pointer lies inside the goroutine's own stack are followed, so a
    stale or torn read ends the walk instead of wandering through memory.
    """
    if not g.sched_pc:
        return []
    pcs = [g.sched_pc]
    bp = g.sched_bp
    prev = g.sched_sp
    while len(pcs) < MAX_FRAMES and g.stack_lo <= bp < g.stack_hi and bp >= prev:
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
