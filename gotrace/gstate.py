"""A goroutine's state read from outside: its runtime.g and its stack, from /proc/PID/mem.

Used to confirm, at report time, that a suspect is still parked where the probes saw it park,
and to unwind a parked goroutine's stack from `g.sched` through frame pointers (Go keeps
them on amd64). The target keeps running meanwhile, so every read may fail or be stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from gotrace.binary.offsets import GOffsets
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


def read_g(mem: ProcessMemory, off: GOffsets, gaddr: int) -> GSnapshot | None:
    extra = [o for o in (off.syscallsp, off.syscallpc, off.syscallbp, off.waitsince,
                         off.parent_goid) if o is not None]
    size = max(off.goid, off.status, off.waitreason, off.sched_bp, off.stack_hi, off.gopc,
               off.startpc, off.m, *extra) + 8
    raw = mem.read(gaddr, size)
    if raw is None:
        return None

    def u64(o: int | None) -> int:
        return 0 if o is None else int.from_bytes(raw[o : o + 8], "little")

    return GSnapshot(
        goid=u64(off.goid),
        status=int.from_bytes(raw[off.status : off.status + 4], "little") & ~G_SCAN,
        wait_reason=raw[off.waitreason],
        sched_pc=u64(off.sched_pc),
        sched_sp=u64(off.sched_sp),
        sched_bp=u64(off.sched_bp),
        stack_lo=u64(off.stack_lo),
        stack_hi=u64(off.stack_hi),
        gaddr=gaddr,
        gopc=u64(off.gopc),
        startpc=u64(off.startpc),
        parent_goid=u64(off.parent_goid),
        m=u64(off.m),
        sched_g=u64(off.sched_sp + 16),  # gobuf: sp, pc, g
        syscallsp=u64(off.syscallsp),
        syscallpc=u64(off.syscallpc),
        syscallbp=u64(off.syscallbp),
        waitsince=u64(off.waitsince),
    )


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
