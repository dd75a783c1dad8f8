"""The live screen of `gotrace tail`, fed with a recording of real events (no BPF needed).

tests/unit/data/tail_lifetimes.json was recorded by record_lifetimes.py from the lifetimes
scenario (23 goroutines sleeping 35 ms, 11 sleeping 140 ms, 7 parked 600 ms on a channel):
the raw ring-buffer events and the frames of every PC they carry.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from gotrace.analysis.livestats import LiveSnapshot, LiveStats
from gotrace.binary.pclntab import Frame
from gotrace.frames import MAIN_GOROUTINE, Symbols
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.model import Counters, Event, Kind, Lost
from gotrace.render.screen import ScreenRenderer, sparkline
from tests.unit.fakes import FakeCode

DATA = Path(__file__).parent / "data"
WIDTH = 100
TICK_NS = 50_000_000


class Recording:
    """The recorded session, played back in event time, like the ring reader delivers it."""

    def __init__(self, path: Path = DATA / "tail_lifetimes.json") -> None:
        d: dict[str, Any] = json.loads(path.read_text())
        self.pid: int = d["pid"]
        self.go_version: str = d["go_version"]
        self.start_ns: int = d["start_ns"]
        self.events = [Event._make(e) for e in d["events"]]
        frames = {int(pc): [Frame(*f) for f in fr] for pc, fr in d["frames"].items()}
        self.symbols = Symbols(FakeCode(frames, d["goroot"]))
        reasons = {int(r): name for r, name in d["reasons"].items()}
        self.reason: Callable[[int], str] = lambda r: reasons.get(r, f"waitReason({r})")
        self._next = 0

    @property
    def first_ns(self) -> int:
        return self.events[0].ts_ns

    def poll(self, until_ns: int) -> list[Event]:
        """Events up to a moment, as one drain of the ring buffer would return them."""
        i = self._next
        while i < len(self.events) and self.events[i].ts_ns <= until_ns:
            i += 1
        out, self._next = self.events[self._next : i], i
        return out


def replay(rec: Recording, at_ns: int, counters: Counters | None = None,
           max_goroutines: int = DEFAULT_MAX_GOROUTINES) -> LiveSnapshot:
    """Feed the recording tick by tick up to `at_ns` and take the screen's snapshot there."""
    stats = LiveStats(max_goroutines=max_goroutines)
    now = rec.first_ns
    while now < at_ns:
        now = min(now + TICK_NS, at_ns)
        stats.feed(rec.poll(now))
        stats.sample(now)
    return stats.snapshot(now_ns=at_ns, start_ns=rec.start_ns, pid=rec.pid,
                          go_version=rec.go_version, kinds=frozenset(Kind), symbols=rec.symbols,
                          reason_name=rec.reason, counters=counters or Counters())


def render(s: LiveSnapshot, width: int = WIDTH) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, highlight=False,
            legacy_windows=False).print(ScreenRenderer().render(s))
    return out.getvalue()


def test_mid_scenario_figures() -> None:
    """300 ms in: the short and medium goroutines came and went, the long ones are parked."""
    rec = Recording()
    s = replay(rec, rec.first_ns + 300_000_000)
    long_site = next(r for r in s.by_live if r.site and r.site.function == "main.spawnLong"
                     and r.created == 7)
    assert (long_site.live, long_site.exited) == (7, 0)
    short = next(r for r in s.by_live if r.site and r.site.function == "main.spawnShort")
    assert (short.live, short.created, short.exited) == (0, 23, 23)
    medium = next(r for r in s.by_live if r.site and r.site.function == "main.spawnMedium")
    assert (medium.live, medium.created, medium.exited) == (0, 11, 11)
    parked = {(g.wait_reason, g.parked_at.function if g.parked_at else None): g.count
              for g in s.parked}
    assert parked[("chan receive", "main.long")] == 7
    assert s.created == 42
    text = render(s)
    assert "main.spawnLong main.go:76" in text
    assert "main.long main.go:53" in text
    assert text.rstrip().endswith("lost 0")


def test_end_of_scenario_all_exited() -> None:
    rec = Recording()
    s = replay(rec, rec.events[-1].ts_ns + 1)
    assert (s.created, s.exited, s.parks, s.wakes) == (42, 42, 44, 44)
    mains = [r for r in s.by_live if r.site and r.site.function.startswith("main.spawn")]
    assert sorted((r.site.line, r.created, r.exited, r.live) for r in mains if r.site) == [
        (59, 23, 23, 0), (66, 11, 11, 0), (76, 7, 7, 0), (80, 1, 1, 0)]
    # Only the main goroutine may still be parked, named as every output names it.
    assert all(g.created_at == MAIN_GOROUTINE for g in s.parked)


def test_screen_at_fixed_width_matches_expected() -> None:
    """The whole screen 300 ms into the scenario, 100 columns wide, with a lost-event count."""
    rec = Recording()
    s = replay(rec, rec.first_ns + 300_000_000,
               counters=Counters(created=42, lost=Lost(ring_buffer=3)))
    got = render(s)
    expected = (DATA / "live_screen_100.txt").read_text()
    assert got == expected, "\n" + got
    assert all(len(line) <= WIDTH for line in got.splitlines())
    assert "lost 3 · ring buffer full 3" in got


def test_narrow_screen_folds_never_cuts() -> None:
    rec = Recording()
    text = render(replay(rec, rec.first_ns + 300_000_000), width=72)
    assert all(len(line) <= 72 for line in text.splitlines())
    assert "main.spawnLong" in text and "…" not in text


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([5, 5]) == "▁▁"
    assert sparkline([0, 7]) == "▁█"
    assert len(sparkline(list(range(100)), width=30)) == 30
    assert len(sparkline(list(range(100)))) == 20


def ev(kind: Kind, ts: int, goid: int, gopc: int = 0x100, pc: int = 0, reason: int = 0) -> Event:
    return Event(ts, goid, 1, gopc, pc, 0, kind, reason)


def test_goroutines_seen_before_attach_and_bounded_table() -> None:
    stats = LiveStats(max_goroutines=2)
    stats.feed([
        ev(Kind.PARK, 10, 7, gopc=0x200, pc=0x300, reason=3),  # created before attach
        ev(Kind.CREATE, 11, 8),
        ev(Kind.CREATE, 12, 9),  # no room: dropped, still counted as created
        ev(Kind.EXIT, 13, 42, gopc=0x200),  # never seen: counted, no live change
    ])
    assert len(stats.gs) == 2 and stats.dropped == 1
    assert stats.site_live == {0x200: 1, 0x100: 1}
    assert stats.site_created == {0x100: 2} and stats.site_exited == {0x200: 1}
    assert list(stats.groups) == [(0x200, 3, 0x300)]
    stats.feed([ev(Kind.WAKE, 14, 7), ev(Kind.EXIT, 15, 7, gopc=0x200)])
    assert stats.groups == {} and stats.site_live == {0x100: 1}


def test_repark_moves_group_and_growth_counts_creations() -> None:
    stats = LiveStats()
    stats.sample(0)
    stats.feed([ev(Kind.CREATE, 1, 1), ev(Kind.PARK, 2, 1, pc=0xA, reason=1),
                ev(Kind.PARK, 3, 1, pc=0xB, reason=2)])  # a wake-up lost: parks again
    assert list(stats.groups) == [(0x100, 2, 0xB)]
    stats.sample(4)
    symbols = Symbols(FakeCode({pc: [Frame(f"main.f{pc:x}", "/src/main.go", pc)]
                                for pc in range(1, 200)}))
    s = stats.snapshot(now_ns=1_000_000_003, start_ns=0, pid=1, go_version="go1.27.3",
                       kinds=frozenset(Kind), symbols=symbols, reason_name=str,
                       counters=Counters())
    assert [(r.live, r.growth) for r in s.by_growth] == [(1, 1)]
    assert [(g.count, g.wait_reason, round(g.longest_s, 3)) for g in s.parked] == [(1, "2", 1.0)]
