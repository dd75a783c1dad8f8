"""tail --json: one JSON object per event, sites named as every other output names them."""

from __future__ import annotations

import io
import json

from gotrace.binary.pclntab import Frame
from gotrace.frames import Symbols
from gotrace.model import Event, Kind
from gotrace.render.events import EventJsonWriter
from tests.unit.fakes import FakeCode


def writer(out: io.StringIO) -> EventJsonWriter:
    frames = {0x4010: [Frame("main.spawn", "/src/main.go", 12)],
              0x4020: [Frame("sync.(*Mutex).Lock", "/goroot/src/sync/mutex.go", 90),
                       Frame("main.work", "/src/main.go", 30)]}
    symbols = Symbols(FakeCode(frames, "/goroot"))
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
