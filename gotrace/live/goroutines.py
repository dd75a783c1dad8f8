"""Goroutines read from outside: each runtime.g, its stack, and every g in `runtime.allgs`,
through process_vm_readv (or /proc/PID/mem), in batches.

The process is never stopped, so the runtime's own rule for racy readers is followed (read
`allglen` before `allgptr`: "New Gs appended during the race can be missed", runtime/proc.go)
and anything read may change under our feet: a g whose fields move while its stack is read is
read again, and after a few tries skipped and counted, never guessed. Stacks are unwound from
`g.sched` (or the syscall save area) through frame pointers, which Go keeps on amd64.

Reading is batched, as 100,000 goroutines and more must cost well under a second: the g
addresses are sorted and neighbours coalesced into one range (gs are allocated from heap
spans, side by side), many ranges go in one process_vm_readv call, and every g is decoded
by one struct unpack over the big buffer. Stack windows are read the same way, many per
call, and unwound in Python over the bytes.
"""

from __future__ import annotations

import gc
import struct
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, islice, repeat
from operator import attrgetter, itemgetter, sub
from typing import Any, NamedTuple, Protocol, cast

from gotrace.binary.allgs import AllgsAddrs, find_allgs
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.offsets import GOffsets
from gotrace.errors import BadInput, CannotTrace
from gotrace.live.process import ProcessMemory


class Memory(Protocol):
    """What the readers need of ProcessMemory (tests give fakes)."""

    failed_reads: int

    def read(self, addr: int, size: int) -> bytes | None: ...

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


class GSnapshot(NamedTuple):
    """One runtime.g as read. A tuple whose fields are in runtime.g's own order (the same in
    every release), so that bulk decoding builds it in one C call from the unpacked fields."""

    stack_lo: int = 0
    stack_hi: int = 0
    sched_sp: int = 0
    sched_pc: int = 0
    sched_g: int = 0  # the g itself, for every g that is not running
    sched_bp: int = 0
    syscallsp: int = 0
    syscallpc: int = 0
    syscallbp: int = 0  # 0 before Go 1.23
    status: int = 0  # without the _Gscan bit
    goid: int = 0
    waitsince: int = 0  # runtime nanotime() set by the GC for waiting gs; 0 = unknown
    wait_reason: int = 0
    tracking_seq: int = 0  # uint8, +1 at every transition out of _Grunning; 0 if absent
    parent_goid: int = 0  # 0 before Go 1.21
    gopc: int = 0
    startpc: int = 0
    gaddr: int = 0  # where it was read (not a field of runtime.g)

    @property
    def parked(self) -> bool:
        return self.status == G_WAITING

    @property
    def dead(self) -> bool:
        return self.status in (G_DEAD, G_DEADEXTRA)


# GSnapshot fields read as u64 at an offset of runtime.g (None: absent in this version).
_U64_FIELDS = ("goid", "sched_pc", "sched_sp", "sched_bp", "stack_lo", "stack_hi", "gopc",
               "startpc", "parent_goid", "sched_g", "syscallsp", "syscallpc", "syscallbp",
               "waitsince")
_DEAD = frozenset((G_DEAD, G_DEADEXTRA))
_ALIVE = [status not in _DEAD for status in range(256)]  # by status byte: filters in C
_STATUS = attrgetter("status")
_GOID = attrgetter("goid")
_UNSAVED = frozenset((G_RUNNING, G_IDLE, G_COPYSTACK, G_SYSCALL))  # g.sched is not where it is

# decode(buffer, [(at, addresses), ...], out): appends to `out` the g at buffer[at + address]
# for every address, span by span.
Decode = Callable[[Any, Iterable[tuple[int, Iterable[int]]], list[Any]], None]


@dataclass(frozen=True)
class GLayout:
    """How to read the fields of runtime.g gotrace uses: `size` bytes from the g's address."""

    size: int
    fmt: str
    decode: Decode


@lru_cache(maxsize=16)
def g_layout(off: GOffsets) -> GLayout:
    """One struct format for every field of runtime.g gotrace reads, and a decoder generated
    for it: one unpack per g straight into a GSnapshot (100k goroutines decode in ~50 ms).

    The status is read as the low byte of atomicstatus: the _Gscan bit (0x1000) is in the
    next byte, and every status is below 256, so no masking is needed.
    """
    where = {"sched_g": off.sched_sp + 16}  # gobuf: sp, pc, g
    fields: list[tuple[int, str, str]] = [(off.status, "B", "status"),
                                          (off.waitreason, "B", "wait_reason")]
    if off.tracking_seq is not None:
        fields.append((off.tracking_seq, "B", "tracking_seq"))
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
    # GSnapshot's fields are runtime.g's in its own order: where this runtime has them all,
    # the unpacked tuple plus the g's address is the snapshot; else one itemgetter picks them
    # (a 0 for fields this runtime lacks).
    if tuple(names) == GSnapshot._fields[:-1]:
        build = "new(GSnapshot, unpack_from(buf, at + a) + (a,))"
        pick: Any = None
    else:
        index = {n: i for i, n in enumerate(names)}
        index["gaddr"] = len(names)
        pick = itemgetter(*(index.get(f, len(names) + 1) for f in GSnapshot._fields))
        build = "new(GSnapshot, pick(unpack_from(buf, at + a) + (a, 0)))"
    src = (
        "def decode(buf, spans, out):\n"
        "    append = out.append\n"
        "    for at, members in spans:\n"
        "        for a in members:\n"
        f"            append({build})\n"
    )
    scope: dict[str, Any] = {"unpack_from": struct.Struct(fmt).unpack_from, "pick": pick,
                             "new": tuple.__new__, "GSnapshot": GSnapshot}
    exec(compile(src, f"<runtime.g decoder for {off.source}>", "exec"), scope)
    return GLayout(pos, fmt, scope["decode"])


@contextmanager
def no_gc() -> Iterator[None]:
    """Python's cycle collector off while many objects are made: 100k GSnapshots would
    trigger collections that walk every object made so far (no cycles are made here)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_g(mem: Memory, off: GOffsets, gaddr: int) -> GSnapshot | None:
    layout = g_layout(off)
    raw = mem.read(gaddr, layout.size)
    if raw is None:
        return None
    out: list[GSnapshot] = []
    layout.decode(raw, ((-gaddr, (gaddr,)),), out)
    return out[0]


def unwind_parked(mem: Memory, g: GSnapshot) -> list[int]:
    """PCs of a parked goroutine, innermost first: sched.pc, then the frame-pointer chain.

    Only frames whose frame pointer lies inside the goroutine's own stack are followed, so a
    stale or torn read ends the walk instead of wandering through memory.
    """
    return unwind(mem, g.sched_pc, g.sched_sp, g.sched_bp, g.stack_lo, g.stack_hi)


def unwind(mem: Memory, pc: int, sp: int, bp: int, lo: int, hi: int,
           max_frames: int = MAX_FRAMES) -> list[int]:
    """PCs from a saved (pc, sp, bp) on the stack [lo, hi), innermost first.

    The stack above sp is read in one piece (one syscall instead of one per frame), then the
    frame-pointer chain is followed in it; frames beyond the window are read one by one.
    """
    if not pc:
        return []
    window = mem.read(sp, min(hi - sp, STACK_WINDOW)) if lo <= sp < hi else None
    if window is None:
        return walk(mem, b"", 0, 0, pc, sp, bp, lo, hi, max_frames)
    return walk(mem, window, 0, len(window), pc, sp, bp, lo, hi, max_frames)


_FRAME = struct.Struct("<QQ").unpack_from  # saved frame pointer, return address


def walk(mem: Memory, buf: Any, at: int, size: int, pc: int, sp: int, bp: int, lo: int,
         hi: int, max_frames: int) -> list[int]:
    """The frame-pointer walk of `unwind` over a window already read: buf[at : at + size]
    holds the stack from sp up. Frames beyond it are read one by one."""
    pcs = [pc]
    prev = sp
    delta = at - sp  # buffer index of a stack address
    end = sp + size
    while len(pcs) < max_frames and lo <= bp < hi and bp >= prev:
        if bp + 16 <= end:
            next_bp, ret = _FRAME(buf, bp + delta)
        else:
            frame = mem.read(bp, 16)
            if frame is None:
                break
            next_bp, ret = _FRAME(frame)
        if not ret:
            break
        pcs.append(ret)
        prev, bp = bp, next_bp
    return pcs


MAX_ALLGLEN = 1 << 24  # 16M goroutines (32 GB of stacks at least): beyond, not a length
CHUNK = 1 << 16  # g pointers read per range
TRIES = 3  # reads of one g before it counts as changing
GAP = 4096  # gs at most this far apart are read as one range, with what lies between
RUN_BYTES = 1 << 20  # one range at most this long
BATCH_BYTES = 8 << 20  # bytes read per batch (the buffer held at once)
STACK_BATCH = 4096  # stack windows read per batch
FRAME_RECORD_BELOW_SP = {"amd64": 0, "arm64": 8}  # see GoroutineReader.record_below_sp


def read_batch(mem: Memory, addrs: Sequence[int], sizes: Sequence[int],
               into: bytearray | None = None) -> tuple[Any, list[int]]:
    """mem.read_batch where the memory has it (ProcessMemory); else one read per range."""
    batch = getattr(mem, "read_batch", None)
    if batch is not None:
        got: tuple[Any, list[int]] = batch(addrs, sizes, into)
        return got
    parts, failed = [], []
    for i, (a, n) in enumerate(zip(addrs, sizes, strict=True)):
        raw = mem.read(a, n) if n else b""
        if raw is None:
            failed.append(i)
            raw = bytes(n)
        parts.append(raw)
    return b"".join(parts), failed


def coalesce(addrs: Sequence[int], size: int, gap: int = GAP, run_bytes: int = RUN_BYTES
             ) -> list[tuple[int, int, list[int]]]:
    """Addresses of `size`-byte objects as ranges to read, in the given order: (start, length,
    addresses in it), the addresses of all ranges together being `addrs` again. An address
    joins the range before it when it follows that range's last object within `gap` bytes
    (and the range stays within `run_bytes`): sorted addresses of objects allocated side by
    side (gs in heap spans) make few, long ranges. A zero address is a range of length 0."""
    n = len(addrs)
    if not n:
        return []
    lim = size + gap
    # i starts a range unless addrs[i] follows addrs[i - 1] closely enough.
    cuts = [i for i, d in enumerate(map(sub, islice(addrs, 1, None), addrs), 1)
            if not size <= d <= lim]
    cuts.append(n)
    runs: list[tuple[int, int, list[int]]] = []
    i = 0
    for j in cuts:
        start = addrs[i]
        if not start:
            runs.append((0, 0, [0]))
        elif addrs[j - 1] + size - start <= run_bytes:
            runs.append((start, addrs[j - 1] + size - start, list(addrs[i:j])))
        else:  # too long for one range: split
            k = i
            while k < j:
                first = addrs[k]
                m = k + 1
                while m < j and addrs[m] + size - first <= run_bytes:
                    m += 1
                runs.append((first, addrs[m - 1] + size - first, list(addrs[k:m])))
                k = m
        i = j
    return runs


@dataclass
class Scan:
    """The live goroutines of one pass over allgs (dead gs are left out, as Go does)."""

    goroutines: list[GSnapshot]
    allglen: int
    skipped: int  # g structs that could not be read
    started_ns: int  # time.monotonic_ns() (CLOCK_MONOTONIC, the runtime's nanotime clock)
    # The highest goid of any g, dead ones included (a dead g keeps its last goid): goids are
    # never reused, so its growth counts the goroutines created between two reads, to within
    # the batches of 16 each P takes (docs/go-runtime.md#counting-creations-from-memory).
    top_goid: int = 0


@dataclass
class GoroutineStack:
    """A goroutine and its stack, read consistently (the g did not change meanwhile)."""

    g: GSnapshot
    pcs: list[int] = field(default_factory=list)  # innermost first; the leaf is a return PC
    source: str = "sched"  # sched | syscall | none (running: no stack from outside)
    truncated: bool = False  # only the leaf is known (syscall before Go 1.23)


@dataclass
class StackStats:
    """What the last `stacks` call met (for benchmarks and tests)."""

    changed: int = 0  # gs read again because they changed while their stack was read
    gave_up: int = 0  # still changing after TRIES reads: skipped
    gone: int = 0  # unreadable, or exited (goid changed) meanwhile


# Where an unwind starts: (pc, sp, bp, source), or a finished stack (no unwind needed).
_Start = tuple[int, int, int, str] | GoroutineStack


class GoroutineReader:
    """Reads allgs and the goroutines it lists; one per process."""

    def __init__(self, gb: GoBinary, mem: ProcessMemory, bias: int) -> None:
        self.gb = gb
        self.mem = mem
        self.bias = bias
        self.addrs: AllgsAddrs = find_allgs(gb.img, gb.pcln)
        # Where a frame's record (saved frame pointer, return address) lies relative to its SP:
        # at SP on amd64 (the saved RBP is the frame's lowest word once the prologue ran), 8
        # bytes below on arm64 (`MOVD R29, -8(RSP)`; R29 = RSP - 8), where sched.bp points.
        self.record_below_sp = FRAME_RECORD_BELOW_SP[gb.arch]

    def g_pointers(self) -> tuple[list[int], int]:
        """(addresses of every g in allgs, pointers that could not be read)."""
        # The runtime's rule for racy readers: allglen first, then allgptr.
        n = self.mem.u64(self.addrs.allglen + self.bias)
        arr = self.mem.u64(self.addrs.allgptr + self.bias)
        if n is None or arr is None:
            raise CannotTrace(f"cannot read runtime.allglen/allgptr at "
                              f"{self.addrs.allglen + self.bias:#x} in the target's memory")
        if n > MAX_ALLGLEN or (n and not arr):
            raise BadInput(f"{self.gb.go_version}: runtime.allglen reads {n} (array {arr:#x}): "
                           f"the goroutine list is not where gotrace expects it "
                           f"({self.addrs.source}); cannot read goroutines")
        firsts = range(0, n, CHUNK)
        counts = [min(CHUNK, n - first) for first in firsts]
        buf, failed = read_batch(self.mem, [arr + 8 * f for f in firsts], [8 * c for c in counts])
        if not failed:
            return array("Q", buf).tolist(), 0
        bad = set(failed)
        out: list[int] = []
        for i, first in enumerate(firsts):
            if i not in bad:
                out.extend(array("Q", buf[8 * first : 8 * (first + counts[i])]))
        return out, sum(counts[i] for i in bad)

    def read_gs(self, addrs: Sequence[int]) -> list[GSnapshot | None]:
        """The g at each address (dead ones included), None where it could not be read.

        Addresses are sorted and neighbours read as one range, many ranges per call, BATCH_BYTES
        at a time; a range that fails is read again g by g, so one unmapped page costs only the
        gs on it.
        """
        size = g_layout(self.gb.offsets).size
        runs = coalesce(addrs, size)
        if len(runs) * 4 <= len(addrs) or len(addrs) < 64:
            return self._read_runs(runs)  # in order already (allgs nearly is)
        # Scattered: sort them (and drop zeros and repeats), read, put back in order.
        srt = sorted(set(addrs) - {0})
        runs = coalesce(srt, size)
        found = dict(zip(srt, self._read_runs(runs), strict=True))
        return list(map(found.get, addrs))

    def _read_runs(self, runs: list[tuple[int, int, list[int]]]) -> list[GSnapshot | None]:
        """The gs of every range, in order (None: unreadable, or a zero address)."""
        layout = g_layout(self.gb.offsets)
        res: list[GSnapshot | None] = []
        self._read_runs_with(runs, layout.decode, layout.size, res)
        return res

    def _read_runs_with(self, runs: list[tuple[int, int, list[int]]], decode: Decode,
                        size: int, res: list[Any]) -> None:
        """decode() the object at each address of every range into res, in order; None for
        a zero address or an object that cannot be read."""
        scratch = self._scratch
        with no_gc():
            i = 0
            while i < len(runs):
                j, total = i, 0
                while j < len(runs) and (j == i or total + runs[j][1] <= BATCH_BYTES):
                    total += runs[j][1]
                    j += 1
                batch = runs[i:j]
                i = j
                buf, failed = read_batch(self.mem, [r[0] for r in batch], [r[1] for r in batch],
                                         scratch)
                spans: list[tuple[int, list[int]]] = []
                odd = set(failed)
                pos = 0
                for k, (start, length, members) in enumerate(batch):
                    spans.append((pos - start, members))
                    pos += length
                    if not start:
                        odd.add(k)
                done = 0
                for k in sorted(odd):  # rare: decode up to the odd range, read it g by g
                    decode(buf, spans[done:k], res)
                    if batch[k][0]:
                        self._read_one_by_one(batch[k][2], res, decode, size)
                    else:
                        res.append(None)  # a zero address
                    done = k + 1
                decode(buf, spans[done:] if done else spans, res)

    def _read_one_by_one(self, addrs: list[int], res: list[Any], decode: Decode,
                         size: int) -> None:
        """Each object alone (many per call), None where it cannot be read."""
        buf, failed = read_batch(self.mem, addrs, [size] * len(addrs))
        bad = set(failed)
        for k, a in enumerate(addrs):
            if k in bad or not a:
                res.append(None)
            else:
                decode(buf, ((k * size - a, (a,)),), res)

    @property
    def _scratch(self) -> bytearray | None:
        """One buffer reused by every batch of g reads (ProcessMemory only)."""
        if not hasattr(self.mem, "read_batch"):
            return None
        got: bytearray | None = self.__dict__.get("_scratch_buf")
        if got is None:
            got = self.__dict__["_scratch_buf"] = bytearray(BATCH_BYTES)
        return got

    def scan(self) -> Scan:
        """One pass: every g that is not dead, as read now."""
        started = time.monotonic_ns()
        ptrs, lost = self.g_pointers()
        with no_gc():
            gs = self.read_gs(ptrs)
            unreadable = gs.count(None)
            read: list[GSnapshot] = [g for g in gs if g is not None] if unreadable \
                else cast("list[GSnapshot]", gs)
            live = list(compress(read, map(_ALIVE.__getitem__, map(_STATUS, read))))
            top = max(map(_GOID, read), default=0)
        skipped = lost + unreadable
        return Scan(live, len(ptrs) + lost, skipped, started, top)

    def reread(self, g: GSnapshot) -> GSnapshot | None:
        return read_g(self.mem, self.gb.offsets, g.gaddr)

    def stack(self, g: GSnapshot, max_frames: int = 100) -> GoroutineStack | None:
        """The stack of g, read so that the g is the same before and after; None if it moved."""
        return self.stacks([g], max_frames)[0]

    def stacks(self, gs: Sequence[GSnapshot], max_frames: int = 100,
               stats: StackStats | None = None) -> list[GoroutineStack | None]:
        """The stack of each g, read so that the g is the same before and after, in batches.

        A g that changed meanwhile (another resume point, another state) is read again with
        its new snapshot, up to TRIES times, then skipped (None); so is one that cannot be
        read any more or whose goid changed (it exited and the g was reused).
        """
        with no_gc():
            return self._stacks(gs, max_frames, stats if stats is not None else StackStats())

    def _stacks(self, gs: Sequence[GSnapshot], max_frames: int, st: StackStats
                ) -> list[GoroutineStack | None]:
        out: list[GoroutineStack | None] = [None] * len(gs)
        pending = list(enumerate(gs))
        for attempt in range(TRIES):
            if not pending:
                break
            got = self._stacks_once([g for _, g in pending], max_frames)
            after = self._moved([g for _, g in pending])
            again = []
            for (i, g), s, a in zip(pending, got, after, strict=True):
                if a is None or a.goid != g.goid:
                    st.gone += 1  # unreadable, or exited and reused meanwhile
                elif a is g or _same(g, a):
                    out[i] = s
                elif attempt + 1 < TRIES:
                    st.changed += 1
                    again.append((i, a))
                else:
                    st.gave_up += 1
            pending = again
        return out

    def _start(self, g: GSnapshot) -> _Start:
        """Where g's unwind starts, or its stack when there is nothing to unwind."""
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
            return g.syscallpc, g.syscallsp, bp, "syscall"
        if not (g.stack_lo < g.sched_sp <= g.stack_hi):
            return GoroutineStack(g, [], "none")
        return g.sched_pc, g.sched_sp, g.sched_bp, "sched"

    def _stacks_once(self, gs: Sequence[GSnapshot], max_frames: int) -> list[GoroutineStack]:
        """Unwind each g once: their stack windows read in batches, then `walk` over each
        window's bytes."""
        out: list[GoroutineStack] = []
        append = out.append
        mem = self.mem
        unsaved = _UNSAVED
        below = self.record_below_sp
        for first in range(0, len(gs), STACK_BATCH):
            part = gs[first : first + STACK_BATCH]
            starts: list[_Start] = []
            addrs: list[int] = []
            sizes: list[int] = []
            for g in part:
                sp = g.sched_sp
                if g.status not in unsaved and g.stack_lo < sp <= g.stack_hi:
                    s: _Start = (g.sched_pc, sp, g.sched_bp, "sched")
                else:
                    s = self._start(g)
                starts.append(s)
                if s.__class__ is tuple and s[0] and g.stack_lo <= s[1] - below < g.stack_hi:
                    addrs.append(s[1] - below)
                    sizes.append(min(g.stack_hi - s[1] + below, STACK_WINDOW))
            buf, failed = read_batch(mem, addrs, sizes)
            bad = set(failed)
            k = pos = 0
            for g, s in zip(part, starts, strict=True):
                if not isinstance(s, tuple):
                    append(s)
                    continue
                pc, sp, bp, source = s
                if not pc:
                    append(GoroutineStack(g, [], source))
                    continue
                sp -= below  # the lowest address a frame record of this stack may have
                lo, hi = g.stack_lo, g.stack_hi
                at = size = 0  # no window: every frame read one by one
                if lo <= sp < hi:
                    if k not in bad:
                        at, size = pos, sizes[k]
                    pos += sizes[k]
                    k += 1
                pcs = walk(mem, buf, at, size, pc, sp, bp, lo, hi, max_frames)
                append(GoroutineStack(g, pcs, source))
        return out

    def _moved(self, gs: Sequence[GSnapshot]) -> list[GSnapshot | None]:
        """Each g read again: itself where it has not moved (`_same`), else the new snapshot
        (None: unreadable). Compares the few fields `_same` looks at, straight from the bytes;
        only gs that moved are decoded again."""
        key = _key_layout(self.gb.offsets)
        addrs = [g.gaddr for g in gs]
        runs = coalesce(addrs, key.size)
        keys: list[tuple[int, ...] | None] = []
        if len(runs) * 4 <= len(addrs) or len(addrs) < 64:
            self._read_runs_with(runs, key.decode, key.size, keys)
        else:  # scattered: read g by g (still many per call)
            self._read_one_by_one(addrs, keys, key.decode, key.size)
        out: list[GSnapshot | None] = []
        moved: list[int] = []
        of = key.of
        for i, (g, k) in enumerate(zip(gs, keys, strict=True)):
            if k is not None and k == of(g):
                out.append(g)
            else:
                out.append(None)
                if k is not None:
                    moved.append(i)
        if moved:
            for i, again in zip(moved, self.read_gs([addrs[i] for i in moved]), strict=True):
                out[i] = again
        return out


@dataclass(frozen=True)
class _KeyLayout:
    size: int
    decode: Decode  # appends the key tuple read from memory
    of: Callable[[GSnapshot], tuple[int, ...]]  # the same key from a snapshot


_SAME = ("goid", "status", "wait_reason", "sched_sp", "sched_pc", "sched_bp", "syscallsp",
         "syscallpc", "stack_lo")


@lru_cache(maxsize=16)
def _key_layout(off: GOffsets) -> _KeyLayout:
    """The fields `_same` compares, in one unpack."""
    o = {"goid": off.goid, "status": off.status, "wait_reason": off.waitreason,
         "sched_sp": off.sched_sp, "sched_pc": off.sched_pc, "sched_bp": off.sched_bp,
         "syscallsp": off.syscallsp, "syscallpc": off.syscallpc, "stack_lo": off.stack_lo}
    fields = sorted((at, "B" if name in ("status", "wait_reason") else "Q", name)
                    for name, at in o.items() if at is not None)
    fmt, pos = "<", 0
    for at, code, _ in fields:
        fmt += f"{at - pos}x{code}" if at > pos else code
        pos = at + struct.calcsize("<" + code)
    unpack_from = struct.Struct(fmt).unpack_from

    def decode(buf: Any, spans: Iterable[tuple[int, Iterable[int]]], out: list[Any]) -> None:
        for at, members in spans:
            out.extend(map(unpack_from, repeat(buf), map(at.__add__, members)))

    return _KeyLayout(pos, decode, attrgetter(*(name for _, _, name in fields)))


def _same(a: GSnapshot, b: GSnapshot) -> bool:
    """Whether a goroutine is where it was: same state, same resume point, same stack."""
    return (a.goid == b.goid and a.status == b.status and a.wait_reason == b.wait_reason
            and a.sched_sp == b.sched_sp and a.sched_pc == b.sched_pc
            and a.sched_bp == b.sched_bp and a.syscallsp == b.syscallsp
            and a.syscallpc == b.syscallpc and a.stack_lo == b.stack_lo)
