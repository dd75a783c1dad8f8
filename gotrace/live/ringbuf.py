"""The event stream of `gotrace tail`: BPF ring-buffer records (struct event in bpf/gotrace.h),
read straight from the ring's shared memory, and the tracer build that produces them.

The reader maps the ring like libbpf does (consumer page read-write, producer page and the
twice-mapped data read-only) and drains it in one copy per poll, so Python pays a slice and a
struct unpack per event, not a ctypes callback. Producers never wake the reader (the records
are submitted with BPF_RB_NO_WAKEUP): it polls on a timer, and the target never pays for a
wake-up.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from gotrace.binary import codemap
from gotrace.binary.gobinary import GoBinary
from gotrace.live.bpfdefs import const
from gotrace.live.process import Target
from gotrace.live.tracer import Tracer


class Kind(IntEnum):
    CREATE = const("EV_CREATE")
    EXIT = const("EV_EXIT")
    PARK = const("EV_PARK")
    WAKE = const("EV_WAKE")

    @property
    def label(self) -> str:
        return self.name.lower()


KINDS = {k.label: k for k in Kind}


class Event(NamedTuple):
    """One record; field order is struct event's."""

    ts_ns: int
    goid: int
    parent_goid: int
    gopc: int  # the go statement (runtime address); 0: unknown
    pc: int  # park: return address in the parked-at frame
    duration_ns: int  # wake: time parked; exit: lifetime; 0: unknown
    kind: int  # Kind
    wait_reason: int


EVENT = struct.Struct("<QQQQQQII")
assert EVENT.size == const("EVENT_SIZE"), "struct event changed: update EVENT"

_HDR = struct.Struct("<II")
_BUSY = 1 << 31
_DISCARD = 1 << 30
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PROT_READ, _PROT_WRITE, _MAP_SHARED = mmap.PROT_READ, mmap.PROT_WRITE, mmap.MAP_SHARED
_MAP_FAILED = ctypes.c_void_p(-1).value
_RECORD = struct.Struct("<II" + EVENT.format[1:])  # header + event: one whole record
assert _RECORD.size == (EVENT.size + 8 + 7) & ~7, "records of struct event carry padding"


def decode(records: Iterable[bytes]) -> list[Event]:
    return [Event._make(EVENT.unpack(r)) for r in records]


def parse_records(buf: bytes, n: int) -> tuple[list[Event], int, int]:
    """Ring-buffer records from the start of buf: (events, bytes consumed, malformed).

    Stops at the first record still busy (reserved, not yet submitted) or at n bytes; a record
    may end past n if buf holds it. Discarded records are skipped. Runs of ordinary records
    (the only kind our program writes) are unpacked in one C loop.
    """
    out: list[Event] = []
    append = out.append
    new = tuple.__new__
    size = EVENT.size
    rec = _RECORD.size
    end = len(buf)
    view = memoryview(buf)
    malformed = off = 0
    while off < n and off + 8 <= end:
        k = (min(n, end) - off) // rec
        if k:
            done = 0
            for t in _RECORD.iter_unpack(view[off : off + k * rec]):
                if t[0] != size:
                    break
                append(new(Event, t[2:]))
                done += 1
            off += done * rec
            if done == k:
                continue
        # One record the fast path did not take: busy, discarded, odd-sized, or straddling n.
        length = _HDR.unpack_from(buf, off)[0]
        if length & _BUSY:
            break
        body = length & ~(_BUSY | _DISCARD)
        step = (body + 8 + 7) & ~7
        if off + step > end:
            break
        if not length & _DISCARD:
            if body == size:
                append(Event._make(EVENT.unpack_from(buf, off + 8)))
            else:
                malformed += 1
        off += step
    return out, off, malformed


class RingReader:
    """Consumer side of a BPF ring buffer map, through mmap (the protocol libbpf implements).

    Layout: page 0 = consumer position (ours to write); page 1 = producer position; then the
    data area, mapped twice in a row so a record that wraps reads as one slice. Each record
    has an 8-byte header: length with a busy bit (reserved, not yet submitted) and a discard
    bit.

    Both positions are read and written as single aligned 8-byte accesses (ctypes on the
    mapping, as libbpf's smp_load_acquire/smp_store_release do on x86-64): Python's struct
    module copies byte by byte, and a torn consumer position, seen by a producer between two
    bytes, made it drop events with the ring nearly empty; a torn producer position would
    make us read stale records.
    """

    def __init__(self, map_fd: int, size: int) -> None:
        if size & (size - 1):
            raise ValueError("ring buffer size must be a power of two")
        page = mmap.PAGESIZE
        self.size = size
        self.mask = size - 1
        self._maps: list[tuple[int, int]] = []
        cons = self._map(map_fd, page, _PROT_READ | _PROT_WRITE, 0)
        prod = self._map(map_fd, page + 2 * size, _PROT_READ, page)
        self._cons = ctypes.c_uint64.from_address(cons)
        self._prod = ctypes.c_uint64.from_address(prod)
        self._data = prod + page
        self.malformed = 0  # records of an unexpected size (never produced by our program)

    def _map(self, fd: int, length: int, prot: int, offset: int) -> int:
        addr = _libc.mmap(None, length, prot, _MAP_SHARED, fd, offset)
        if addr is None or addr == _MAP_FAILED:
            err = ctypes.get_errno()
            self.close()
            raise OSError(err, f"cannot map the ring buffer: {os.strerror(err)}")
        self._maps.append((addr, length))
        return int(addr)

    def pending_bytes(self) -> int:
        return int(self._prod.value - self._cons.value)

    def drain(self, limit: int = 1 << 22) -> list[Event]:
        """Every submitted record up to the first one still being written (at most ~limit bytes)."""
        cons = self._cons.value
        avail = self._prod.value - cons
        if avail <= 0:
            return []
        n = min(avail, limit)
        # A few bytes past the limit let the record that straddles it complete.
        buf = ctypes.string_at(self._data + (cons & self.mask), min(avail, n + 256))
        out, used, malformed = parse_records(buf, n)
        self.malformed += malformed
        if used:
            self._cons.value = cons + used
        return out

    def close(self) -> None:
        while self._maps:
            addr, length = self._maps.pop()
            _libc.munmap(ctypes.c_void_p(addr), length)


@dataclass
class StreamCounters:
    """Kernel-side counters of a tail session (per-CPU sums)."""

    created: int = 0
    exited: int = 0
    parked: int = 0
    woken: int = 0
    emitted: int = 0
    lost_ringbuf: int = 0  # events the ring buffer had no room for
    lost_table_full: int = 0
    lost_reads: int = 0

    @property
    def lost_events(self) -> int:
        return self.lost_ringbuf + self.lost_table_full + self.lost_reads


PARENT_FROM_M_CURG = 192  # runtime.m.curg, Go 1.19-1.24 (parentGoid exists from 1.21)


def parent_cflags(gb: GoBinary) -> list[str]:
    """Before Go 1.21 the creator's goid comes from g0.m.curg at the create hook."""
    if gb.offsets.parent_goid is not None:
        return []
    return [f"-DG_M_OFF={gb.offsets.m}", f"-DM_CURG_OFF={PARENT_FROM_M_CURG}"]


class EventTracer(Tracer):
    """The tracer built with -DEMIT_EVENTS=1: the goroutine table plus a stream of events.

    No stacks are captured in BPF; parks carry only their parked-at frame (a walk of at most
    PARK_WALK frame pointers over runtime and standard-library code).
    """

    def __init__(self, gb: GoBinary, target: Target, *, bias: int, kinds: Iterable[Kind],
                 selection: codemap.Selection | None = None, ring_pages: int = 4096,
                 max_goroutines: int = 131072, park_walk: int = 12) -> None:
        super().__init__(gb, target, max_goroutines=max_goroutines, park_stacks=False)
        self.bias = bias
        self.kinds = frozenset(kinds)
        self.selection = selection
        self.ring_pages = ring_pages
        self.park_walk = park_walk
        self.ranges = codemap.code_ranges(gb.pcln)
        self.reader: RingReader | None = None
        self.ready_ns = 0

    def cflags(self) -> list[str]:
        lo, hi = codemap.text_range(self.gb.pcln)
        mask = sum(1 << k for k in self.kinds)
        sel = self.selection
        entries = max(len(sel.gopcs), len(sel.starts), 1) if sel is not None else 1
        return [
            *super().cflags(),
            "-DCREATE_STACKS=0",
            "-DEMIT_EVENTS=1",
            f"-DRINGBUF_PAGES={self.ring_pages}",
            f"-DEVENT_MASK={mask}",
            f"-DMATCH={int(sel is not None)}",
            f"-DMATCH_ENTRIES={entries}",
            f"-DNR_STD_RANGES={len(self.ranges)}",
            f"-DTEXT_LO={lo + self.bias:#x}ULL",
            f"-DTEXT_HI={hi + self.bias:#x}ULL",
            f"-DPARK_WALK={self.park_walk}",
            *parent_cflags(self.gb),
        ]

    def configure(self) -> None:
        self.ready_ns = time.monotonic_ns()  # "attach" time: loaded, probes about to fire
        bpf = self.bpf
        if self.ranges:
            table = bpf["std_ranges"]
            for i, r in enumerate(self.ranges):
                table[ctypes.c_uint32(i)] = table.Leaf(r.lo + self.bias, r.hi + self.bias, r.kind)
        if self.selection is not None:
            for name, pcs in (("match_gopc", self.selection.gopcs),
                              ("match_start", self.selection.starts)):
                table = bpf[name]
                for pc in pcs:
                    table[table.Key(pc + self.bias)] = table.Leaf(1)
        events = bpf["events"]
        self.reader = RingReader(events.map_fd, self.ring_pages * mmap.PAGESIZE)

    def stream_counters(self) -> StreamCounters:
        table = self.bpf["counters"]

        def total(name: str) -> int:
            return int(table.sum(ctypes.c_int(const(name))).value)

        return StreamCounters(
            created=total("CTR_CREATED"), exited=total("CTR_EXITED"),
            parked=total("CTR_PARKED"), woken=total("CTR_RUN"), emitted=total("CTR_EMITTED"),
            lost_ringbuf=total("CTR_LOST_RINGBUF"), lost_table_full=total("CTR_LOST_TABLE_FULL"),
            lost_reads=total("CTR_LOST_READ"),
        )

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        super().close()
