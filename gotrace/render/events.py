"""`gotrace tail --json`: one JSON object per event per line, written a batch at a time.

Lines are formatted by hand from cached fragments (the JSON of a site is built once per PC):
at hundreds of thousands of events per second, json.dumps per event would be the bottleneck.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from gotrace.binary.pclntab import Frame
from gotrace.frames import UNKNOWN, Symbols
from gotrace.model import Event, Kind, frame_json

CREATE, EXIT, PARK, WAKE = Kind.CREATE, Kind.EXIT, Kind.PARK, Kind.WAKE


def _site(f: Frame | None) -> str:
    return json.dumps(frame_json(f), separators=(",", ":")) if f and f != UNKNOWN else "null"


class EventJsonWriter:
    def __init__(self, out: TextIO, *, start_ns: int, symbols: Symbols,
                 reason_name: Callable[[int], str]) -> None:
        self.out = out
        self.start_ns = start_ns
        self.symbols = symbols
        self.reason_name = reason_name
        self._go: dict[int, str] = {}
        self._park: dict[int, str] = {}
        self._reason: dict[int, str] = {}
        self.written = 0

    def _go_site(self, gopc: int) -> str:
        s = self._go.get(gopc)
        if s is None:
            s = self._go[gopc] = _site(self.symbols.go_statement(gopc))
        return s

    def _park_site(self, pc: int) -> str:
        s = self._park.get(pc)
        if s is None:
            s = self._park[pc] = _site(self.symbols.parked_at_pc(pc))
        return s

    def _reason_json(self, r: int) -> str:
        s = self._reason.get(r)
        if s is None:
            s = self._reason[r] = json.dumps(self.reason_name(r))
        return s

    def line(self, e: Event) -> str:
        t = (e.ts_ns - self.start_ns) / 1e9
        parent = e.parent_goid or "null"
        head = f'"t":{t:.6f},"goid":{e.goid},"parent_goid":{parent}'
        kind = e.kind
        if kind == PARK:
            return (f'{{"type":"park",{head},"wait_reason":{self._reason_json(e.wait_reason)},'
                    f'"site":{self._park_site(e.pc)}}}\n')
        if kind == CREATE:
            return f'{{"type":"create",{head},"site":{self._go_site(e.gopc)}}}\n'
        if kind == WAKE:
            return (f'{{"type":"wake",{head},"parked_s":{e.duration_ns / 1e9:.6f},'
                    f'"wait_reason":{self._reason_json(e.wait_reason)},'
                    f'"site":{self._go_site(e.gopc)}}}\n')
        life = f"{e.duration_ns / 1e9:.6f}" if e.duration_ns else "null"
        return f'{{"type":"exit",{head},"lifetime_s":{life},"site":{self._go_site(e.gopc)}}}\n'

    def write(self, events: Iterable[Event]) -> None:
        lines = [self.line(e) for e in events]
        if lines:
            self.out.write("".join(lines))
            self.out.flush()
            self.written += len(lines)

    def end(self, summary: dict[str, Any]) -> None:
        self.out.write(json.dumps({"type": "end", **summary}, separators=(",", ":")) + "\n")
        self.out.flush()
