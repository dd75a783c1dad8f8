"""Ring-buffer records to events, as tail reads them from the ring's memory (no kernel)."""

from __future__ import annotations

import struct

from gotrace.live.bpfdefs import const
from gotrace.live.ringbuf import EVENT, parse_records
from gotrace.model import Event, Kind

BUSY, DISCARD = 1 << 31, 1 << 30


def record(e: Event, flags: int = 0) -> bytes:
    body = EVENT.pack(*e)
    pad = (-len(body)) % 8
    return struct.pack("<II", len(body) | flags, 0) + body + b"\0" * pad


def ev(kind: Kind, goid: int, ts: int = 1_000) -> Event:
    return Event(ts, goid, 1, 0x4010, 0x4020, 0, kind, 3)


def test_layout_matches_header() -> None:
    assert EVENT.size == const("EVENT_SIZE") == 56
    assert [k.label for k in Kind] == ["create", "exit", "park", "wake"]


def test_records_until_busy_skipping_discarded() -> None:
    a, b, c, d = (ev(Kind.CREATE, 1), ev(Kind.PARK, 2), ev(Kind.WAKE, 3), ev(Kind.EXIT, 4))
    buf = record(a) + record(b, DISCARD) + record(c) + record(d, BUSY)
    events, used, bad = parse_records(buf, len(buf))
    assert events == [a, c] and bad == 0
    assert used == 3 * 64  # the busy record is left for the next drain


def test_limit_and_truncated_and_malformed() -> None:
    a, b = ev(Kind.CREATE, 1), ev(Kind.EXIT, 1)
    buf = record(a) + record(b)
    assert parse_records(buf, 10) == ([a], 64, 0)  # a record that starts before n completes
    assert parse_records(buf[:100], 128) == ([a], 64, 0)  # half a record: wait for the rest
    odd = struct.pack("<II", 12, 0) + b"x" * 16
    assert parse_records(odd + record(a), 200) == ([a], 24 + 64, 1)


def test_ring_reader_on_a_fake_ring() -> None:
    """The mmap protocol against a memfd laid out like a BPF ring buffer map (no wrap)."""
    import mmap
    import os

    from gotrace.live.ringbuf import RingReader

    page, size = mmap.PAGESIZE, 4 * mmap.PAGESIZE
    fd = os.memfd_create("fake-ring")
    try:
        os.ftruncate(fd, 2 * page + 2 * size)
        a, b, c = ev(Kind.CREATE, 1), ev(Kind.PARK, 1), ev(Kind.WAKE, 1)
        body = record(a) + record(b) + record(c, BUSY)
        os.pwrite(fd, body, 2 * page)
        os.pwrite(fd, struct.pack("<Q", len(body)), page)  # producer position
        reader = RingReader(fd, size)
        try:
            assert reader.pending_bytes() == 3 * 64
            assert reader.drain() == [a, b]
            assert struct.unpack("<Q", os.pread(fd, 8, 0))[0] == 128  # consumer advanced
            assert reader.drain() == []  # the busy record waits
            os.pwrite(fd, struct.pack("<I", 56), 2 * page + 128)  # ... until submitted
            assert reader.drain() == [c] and reader.pending_bytes() == 0
        finally:
            reader.close()
    finally:
        os.close(fd)
