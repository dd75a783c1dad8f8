"""`gotrace tail PID`: the goroutine lifecycle as it happens, as a live screen or JSON lines."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live

from gotrace.analysis.livestats import LiveStats
from gotrace.binary import codemap
from gotrace.binary.gobinary import GoBinary
from gotrace.commands.common import StopSignal, banner, open_target, run_until, stderr_console
from gotrace.durations import format_duration
from gotrace.errors import BadInput
from gotrace.frames import Symbols
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.environment import require_tracing
from gotrace.live.process import Target
from gotrace.live.ringbuf import RingReader
from gotrace.live.tracer import EventTracer
from gotrace.model import Counters, Event, Kind
from gotrace.render.events import EventJsonWriter
from gotrace.render.screen import ScreenRenderer

POLL_S = 0.05  # the reader wakes up this often (producers never wake it)
REFRESH_S = 0.5  # the live screen, twice a second
BATCH_BYTES = 4 << 20  # drained per step, so the screen and signals stay responsive
LOST_NOTICE_S = 1.0


@dataclass
class TailOptions:
    pid: int
    json: bool = False
    kinds: frozenset[Kind] = field(default_factory=lambda: frozenset(Kind))
    match: str | None = None
    duration_s: float | None = None
    max_goroutines: int = DEFAULT_MAX_GOROUTINES
    ring_mb: int = 32


def parse_kinds(text: str) -> frozenset[Kind]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in {k.label for k in Kind}]
    if bad or not names:
        raise BadInput(f"--events {text!r}: choose among create, exit, park, wake "
                       "(comma-separated)")
    return frozenset(k for k in Kind if k.label in names)


def compile_match(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise BadInput(f"--match {text!r} is not a valid regular expression: {e}") from None


def ring_pages(mb: int) -> int:
    """The ring buffer's size in pages: a power of two, as BPF requires."""
    pages = max(1, (mb << 20) // 4096)
    return 1 << (pages.bit_length() - 1)


class TailSession:
    """The attached tracer as a source of events and counters (what the screen reads)."""

    def __init__(self, opts: TailOptions, target: Target, gb: GoBinary) -> None:
        self.opts = opts
        self.target = target
        self.gb = gb
        self.bias = target.load_bias(gb.img)
        selection = None
        if opts.match is not None:
            selection = codemap.select(gb.pcln, gb.img, compile_match(opts.match), gb.arch)
            if not selection:
                raise BadInput(f"--match {opts.match!r} matches no function and no go statement "
                               f"of PID {target.pid} ({target.exe_display})")
        self.tracer = EventTracer(gb, target, bias=self.bias, kinds=opts.kinds,
                                  selection=selection, ring_pages=ring_pages(opts.ring_mb),
                                  max_goroutines=opts.max_goroutines)
        self.symbols = Symbols(gb.pcln, self.bias)
        self.start_ns = time.monotonic_ns()
        self.received = 0
        self.stats: LiveStats | None = None  # the screen's figures (not with --json)
        self.err = stderr_console()

    @property
    def reader(self) -> RingReader:
        assert self.tracer.reader is not None
        return self.tracer.reader

    def poll(self) -> list[Event]:
        events = self.reader.drain(BATCH_BYTES)
        self.received += len(events)
        return events

    def counters(self) -> Counters:
        """The tracer's counters, plus what the screen's own table had no room for."""
        out = self.tracer.counters()
        if self.stats is not None:
            out.lost.screen_table_full = self.stats.dropped
        return out


def _stdout_gone() -> None:
    """The reader of our stdout went away (`| head`): stop writing, quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run(opts: TailOptions) -> int:
    target, gb = open_target(opts.pid)  # bad input (exit 2) first, then the machine (exit 3)
    if opts.match is not None:
        compile_match(opts.match)
    require_tracing()
    session = TailSession(opts, target, gb)
    err = session.err
    stop = StopSignal()
    try:
        session.tracer.attach()
        session.start_ns = session.tracer.ready_ns
        kinds = ",".join(k.label for k in Kind if k in opts.kinds)
        match = f" of goroutines matching /{opts.match}/" if opts.match else ""
        until = f" for {format_duration(opts.duration_s)}" if opts.duration_s else ""
        banner(err, "gotrace tail", target, gb, len(session.tracer.attached),
               f"; {kinds} events{match}{until}. Ctrl-C to stop.")
        (_run_json if opts.json else _run_screen)(session, stop, err)
        counters = session.counters()
    finally:
        session.tracer.close()
        stop.restore()
    err.print(f"gotrace: {session.received:,} events received, {counters.lost_events:,} lost"
              + (f" ({counters.lost.describe()})" if counters.lost_events else ""),
              style="bold red" if counters.lost_events else None)
    err.print("gotrace: detached")
    return 0


def _loop(session: TailSession, stop: StopSignal, handle: Callable[[list[Event]], None],
          tick: Callable[[int], None], tick_s: float) -> bool:
    """Drain, hand over, tick; True when the loop ended because the target exited."""
    opts = session.opts
    deadline = session.start_ns / 1e9 + opts.duration_s if opts.duration_s else None
    next_tick = time.monotonic()

    def step(now: float) -> float:
        nonlocal next_tick
        events = session.poll()
        handle(events)
        if now >= next_tick:
            tick(time.monotonic_ns())
            next_tick = now + tick_s
        return POLL_S if len(events) * 64 < BATCH_BYTES // 2 else 0.0

    exited = run_until(session.target, stop, deadline, step, session.err) is not None
    # What the probes produced before the end is still in the ring: hand it over.
    while events := session.poll():
        handle(events)
    return exited


def _summary(session: TailSession, exited: bool) -> dict[str, Any]:
    return {
        "t": round((time.monotonic_ns() - session.start_ns) / 1e9, 6),
        "events": session.received, **session.counters().to_json(), "target_exited": exited,
    }


def _run_json(session: TailSession, stop: StopSignal, err: Console) -> bool:
    writer = EventJsonWriter(sys.stdout, start_ns=session.start_ns, symbols=session.symbols,
                             reason_name=session.gb.wait_reason)
    reported_lost = 0
    gone = False

    def handle(events: list[Event]) -> None:
        nonlocal gone
        if gone:
            return
        try:
            writer.write(events)
        except BrokenPipeError:
            gone = True
            _stdout_gone()
            stop.received = -1

    def tick(now: int) -> None:
        nonlocal reported_lost
        c = session.counters()
        if c.lost_events > reported_lost:
            err.print(f"gotrace: {c.lost_events:,} events lost so far ({c.lost.describe()})")
            reported_lost = c.lost_events

    exited = _loop(session, stop, handle, tick, LOST_NOTICE_S)
    if not gone:
        with contextlib.suppress(BrokenPipeError):
            writer.end(_summary(session, exited))
    return exited


def _run_screen(session: TailSession, stop: StopSignal, err: Console) -> bool:
    opts = session.opts
    stats = session.stats = LiveStats(max_goroutines=opts.max_goroutines)
    renderer = ScreenRenderer()
    console = Console(highlight=False)
    exited = False

    def snapshot(now: int, target_exited: bool = False) -> Any:
        snap = stats.snapshot(
            now_ns=now, start_ns=session.start_ns, pid=session.target.pid,
            go_version=session.gb.go_version, kinds=opts.kinds, symbols=session.symbols,
            reason_name=session.gb.wait_reason, counters=session.counters(), match=opts.match,
            target_exited=target_exited)
        return renderer.render(snap)

    live = Live(console=console, screen=True, auto_refresh=False, transient=True) \
        if console.is_terminal else None

    def tick(now: int) -> None:
        stats.sample(now)
        if live is not None:
            live.update(snapshot(now), refresh=True)

    if live is not None:
        with live:
            exited = _loop(session, stop, stats.feed, tick, REFRESH_S)
    else:
        exited = _loop(session, stop, stats.feed, tick, REFRESH_S)
    now = time.monotonic_ns()
    stats.sample(now)
    console.print(snapshot(now, exited))
    return exited
