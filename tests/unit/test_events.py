"""Ring-buffer records to events, and events to tail's JSON lines (no kernel)."""

from __future__ import annotations

import io
import json
import struct

from gotrace.analysis.livestats import SiteSymbols
from gotrace.binary.pclntab import Frame
from gotrace.live.bpfdefs import const
from gotrace.live.ringbuf import EVENT, Event, Kind, parse_records
from gotrace.render.events import EventJsonWriter

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


def writer(out: io.StringIO) -> EventJsonWriter:
    frames = {0x4010: [Frame("main.spawn", "/src/main.go", 12)],
              0x4020: [Frame("sync.(*Mutex).Lock", "/goroot/src/sync/mutex.go", 90),
                       Frame("main.work", "/src/main.go", 30)]}
    symbols = SiteSymbols(lambda pc: frames.get(pc, []), "/goroot")
    return EventJsonWriter(out, start_ns=0, symbols=symbols, reason_name=lambda r: "chan send")


def test_json_lines_contract() -> None:
    out = io.StringIO()
    w = writer(out)
    w.write([Event(1_500_000_000, 7, 1, 0x4010, 0, 0, Kind.CREATE, 0),
             Event(1_600_000_000, 7, 1, 0x4010, 0x4020, 0, Kind.PARK, 3),
             Event(1_700_000_000, 7, 1, 0x4010, 0, 100_000_000, Kind.WAKE, 3),
             Event(1_800_000_000, 7, 0, 0x4010, 0, 0, Kind.EXIT, 0)])
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert w.written == 4
    create, park, wake, exit_ = lines
    assert create == {"type": "create", "t": 1.5, "goid": 7, "parent_goid": 1,
                      "site": {"function": "main.spawn", "file": "/src/main.go", "line": 12}}
    # The parked-at frame is the first one in user code, inlined frames expanded.
    assert park["site"] == {"function": "main.work", "file": "/src/main.go", "line": 30}
    assert park["wait_reason"] == "chan send"
    assert wake["parked_s"] == 0.1 and wake["site"] == create["site"]
    assert exit_["lifetime_s"] is None and exit_["parent_goid"] is None  # unknown: null
    w.end({"events": 4})
    assert json.loads(out.getvalue().splitlines()[-1]) == {"type": "end", "events": 4}


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
