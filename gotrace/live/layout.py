"""Check the runtime.g offsets gotrace uses against the live process, before trusting them.

Offsets come from DWARF, or, for stripped binaries, from per-version tables: a runtime whose
layout differs from the table (a patched toolchain, a GOEXPERIMENT, a release we have not
seen) would make every figure wrong without any error. Properties that hold for every g of
every Go release are checked on a scan of allgs (docs/go-runtime.md#checks-on-a-live-process):
goroutine 1 runs runtime.main, goids are unique and small, a g that is not running has
`sched.g == g` and `stack.lo < sched.sp <= stack.hi`, entry PCs are in the binary's text, wait
reasons are in range. A mismatch raises BadInput; gotrace never guesses a layout.

The process runs while it is read, so a g that fails is read once more before it counts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gotrace.binary.gobinary import GoBinary
from gotrace.errors import BadInput
from gotrace.live.goroutines import (
    G_COPYSTACK,
    G_IDLE,
    G_LEAKED,
    G_PREEMPTED,
    G_RUNNABLE,
    G_RUNNING,
    G_SYSCALL,
    G_WAITING,
    GSnapshot,
)

MAX_GOID = 1 << 48
MAX_STACK = 1 << 30  # Go's default max stack is 1 GB
KNOWN_STATUS = {G_IDLE, G_RUNNABLE, G_RUNNING, G_SYSCALL, G_WAITING, G_COPYSTACK, G_PREEMPTED,
                G_LEAKED}
SAVED = {G_RUNNABLE, G_WAITING, G_PREEMPTED, G_LEAKED}  # states whose g.sched is the resume point
TOLERATED = 0.01  # gs allowed to fail twice (changing while read) before the layout is doubted


@dataclass(frozen=True)
class LayoutCheck:
    checked: int
    changing: int  # failed twice: taken as changing memory, not as a wrong layout


def problem(g: GSnapshot, gb: GoBinary, in_text: Callable[[int], bool]) -> str | None:
    """What is wrong with this g under the assumed layout, or None."""
    if g.status not in KNOWN_STATUS:
        return f"status {g.status}"
    if not 0 < g.goid < MAX_GOID:
        return f"goid {g.goid}"
    if not (0 < g.stack_lo < g.stack_hi and g.stack_hi - g.stack_lo <= MAX_STACK
            and g.stack_lo % 8 == 0 and g.stack_hi % 8 == 0):
        return f"stack [{g.stack_lo:#x}, {g.stack_hi:#x})"
    if g.status in SAVED:
        if g.sched_g != g.gaddr:
            return f"sched.g {g.sched_g:#x} != g {g.gaddr:#x}"
        if not g.stack_lo < g.sched_sp <= g.stack_hi:
            return f"sched.sp {g.sched_sp:#x} outside its stack"
        if not in_text(g.sched_pc):
            return f"sched.pc {g.sched_pc:#x} outside the text"
    if g.status == G_SYSCALL and gb.offsets.syscallsp is not None and g.syscallsp and \
            not g.stack_lo < g.syscallsp <= g.stack_hi:
        return f"syscallsp {g.syscallsp:#x} outside its stack"
    if g.status == G_WAITING and g.wait_reason >= len(gb.wait_reasons):
        return f"wait reason {g.wait_reason} (this runtime has {len(gb.wait_reasons)})"
    if g.startpc and not in_text(g.startpc):  # 0: a cgo callback's g (oneNewExtraM)
        return f"startpc {g.startpc:#x} outside the text"
    if g.gopc and not in_text(g.gopc):
        return f"gopc {g.gopc:#x} outside the text"
    if g.parent_goid >= MAX_GOID:
        return f"parent goid {g.parent_goid}"
    return None


def check_layout(gs: Sequence[GSnapshot], gb: GoBinary, bias: int,
                 reread: Callable[[GSnapshot], GSnapshot | None]) -> LayoutCheck:
    """Raise BadInput unless the scanned goroutines look right under gb.offsets."""
    o = gb.offsets

    def fail(why: str) -> BadInput:
        return BadInput(
            f"{gb.go_version}: the runtime.g layout is not what gotrace expects (offsets from "
            f"{o.source}: goid {o.goid}, status {o.status}, sched {o.sched_sp}): {why}; "
            "gotrace does not guess layouts, so it cannot read this program's goroutines")

    known: dict[int, bool] = {}  # goroutines share their PCs: look each up once

    def in_text(pc: int) -> bool:
        got = known.get(pc)
        if got is None:
            got = known[pc] = gb.pcln.func_at(pc - bias) is not None
        return got

    if not gs:
        raise fail("no live goroutine found in runtime.allgs")
    changing = 0
    good: list[GSnapshot] = []
    first_problem = ""
    for g in gs:
        why = problem(g, gb, in_text)
        if why is not None:
            again = reread(g)
            if again is not None and not again.dead and problem(again, gb, in_text) is None:
                g, why = again, None
        if why is None:
            good.append(g)
        else:
            changing += 1
            first_problem = first_problem or f"goroutine at {g.gaddr:#x}: {why}"
    if changing > max(1, int(TOLERATED * len(gs))):
        raise fail(f"{changing} of {len(gs)} goroutines fail the checks, first {first_problem}")
    goids = [g.goid for g in good]
    if len(set(goids)) != len(goids):
        raise fail("goids are not unique")
    # Goroutine 1 lives as long as the program (unless main calls runtime.Goexit, which
    # gotrace refuses too): the one g whose identity is known in advance.
    main = [g for g in good if g.goid == 1]
    if not main:
        raise fail("goroutine 1 (runtime.main) not found")
    start = gb.pcln.func_at(main[0].startpc - bias)
    if start is None or start.name != "runtime.main":
        raise fail(f"goroutine 1 starts at {start.name if start else hex(main[0].startpc)}, "
                   "not runtime.main")
    if o.parent_goid is not None and main[0].parent_goid != 0:
        raise fail(f"goroutine 1 has parent goid {main[0].parent_goid}, not 0")
    return LayoutCheck(len(gs), changing)
