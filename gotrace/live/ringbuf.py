"""The event stream of `gotrace tail`: BPF ring-buffer records (struct event in bpf/gotrace.h),
read straight from the ring's shared memory.

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

from gotrace.errors import CannotTrace
from gotrace.live.bpfdefs import const
from gotrace.model import Event

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
            raise CannotTrace(f"cannot map the BPF ring buffer ({length:,} bytes): "
                              f"{os.strerror(err)} (a smaller --ring-mb may fit)")
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
