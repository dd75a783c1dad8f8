"""What the live screen of `gotrace tail` shows, computed from the event stream alone.

Pure Python fed with Events and a clock, so a unit test can replay recorded events. Memory is
bounded: one small record per live goroutine (at most max_goroutines, the rest counted as
dropped), one counter per go statement (a binary has finitely many), and fixed-length
histories.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gotrace.binary.pclntab import Frame
from gotrace.frames import UNKNOWN, Symbols
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.model import Counters, Event, Kind

RATE_WINDOW_NS = 2_000_000_000  # rates are averaged over the last 2 s
GROWTH_WINDOW_NS = 10_000_000_000  # growth: created minus exited over the last 10 s
HISTORY = 60  # samples kept for the live-goroutines sparkline


@dataclass
class SiteRow:
    site: Frame | None
    live: int  # created while traced or seen since, not exited
    growth: int  # created minus exited over the growth window (goroutines seen before
    # attach count only when they exit)
    created: int
    exited: int


@dataclass
class ParkedGroup:
    count: int
    longest_s: float
    wait_reason: str
    created_at: Frame | None
    parked_at: Frame | None


@dataclass
class LiveSnapshot:
    """Everything one frame of the live screen prints."""

    pid: int
    go_version: str
    elapsed_s: float
    kinds: frozenset[Kind]
    live: int
    live_history: list[int]
    growth_window_s: float
    created: int
    exited: int
    parks: int
    wakes: int
    rates: dict[Kind, float]  # events per second over the last RATE_WINDOW
    by_live: list[SiteRow]
    by_growth: list[SiteRow]
    parked: list[ParkedGroup]
    counters: Counters
    match: str | None = None
    target_exited: bool = False
    notes: list[str] = field(default_factory=list)


class _G:
    __slots__ = ("gopc", "park_pc", "parked_ns", "reason")

    def __init__(self, gopc: int) -> None:
        self.gopc = gopc
        self.parked_ns = 0
        self.reason = 0
        self.park_pc = 0


GroupKey = tuple[int, int, int]  # (gopc, wait reason, parked-at pc)


class LiveStats:
    def __init__(self, *, max_goroutines: int = DEFAULT_MAX_GOROUTINES) -> None:
        self.max_goroutines = max_goroutines
        self.gs: dict[int, _G] = {}
        self.site_live: dict[int, int] = {}
        self.site_created: dict[int, int] = {}
        self.site_exited: dict[int, int] = {}
        # Parked goroutines per group, oldest park first (dicts keep insertion order).
        self.groups: dict[GroupKey, dict[int, int]] = {}
        self.totals = {k: 0 for k in Kind}
        self.dropped = 0
        self._samples: deque[tuple[int, dict[Kind, int], int]] = deque(maxlen=HISTORY)
        self._site_samples: deque[tuple[int, dict[int, int]]] = deque()

    # -- events -------------------------------------------------------------------------------

    def feed(self, events: Iterable[Event]) -> None:
        for e in events:
            kind = e.kind
            if kind == Kind.CREATE:
                self._create(e)
            elif kind == Kind.PARK:
                self._park(e)
            elif kind == Kind.WAKE:
                self._wake(e)
            elif kind == Kind.EXIT:
                self._exit(e)
            else:
                continue
            self.totals[Kind(kind)] += 1

    def _learn(self, goid: int, gopc: int) -> _G | None:
        if len(self.gs) >= self.max_goroutines:
            self.dropped += 1
            return None
        g = self.gs[goid] = _G(gopc)
        self.site_live[gopc] = self.site_live.get(gopc, 0) + 1
        return g

    def _create(self, e: Event) -> None:
        self.site_created[e.gopc] = self.site_created.get(e.gopc, 0) + 1
        if e.goid not in self.gs:
            self._learn(e.goid, e.gopc)

    def _unpark(self, goid: int, g: _G) -> None:
        if g.parked_ns:
            key = (g.gopc, g.reason, g.park_pc)
            members = self.groups.get(key)
            if members is not None:
                members.pop(goid, None)
                if not members:
                    del self.groups[key]
            g.parked_ns = 0

    def _park(self, e: Event) -> None:
        g = self.gs.get(e.goid)
        if g is None:
            g = self._learn(e.goid, e.gopc)  # created before attach: seen for the first time
            if g is None:
                return
        self._unpark(e.goid, g)
        g.parked_ns = e.ts_ns or 1
        g.reason = e.wait_reason
        g.park_pc = e.pc
        self.groups.setdefault((g.gopc, g.reason, g.park_pc), {})[e.goid] = g.parked_ns

    def _wake(self, e: Event) -> None:
        g = self.gs.get(e.goid)
        if g is not None:
            self._unpark(e.goid, g)

    def _exit(self, e: Event) -> None:
        self.site_exited[e.gopc] = self.site_exited.get(e.gopc, 0) + 1
        g = self.gs.pop(e.goid, None)
        if g is None:
            return
        self._unpark(e.goid, g)
        n = self.site_live.get(g.gopc, 0) - 1
        if n > 0:
            self.site_live[g.gopc] = n
        else:
            self.site_live.pop(g.gopc, None)

    # -- time ---------------------------------------------------------------------------------

    def sample(self, now_ns: int) -> None:
        """Record the figures trends are computed from; call once per screen refresh."""
        self._samples.append((now_ns, dict(self.totals), len(self.gs)))
        self._site_samples.append((now_ns, self._net()))
        while len(self._site_samples) > 1 and \
                self._site_samples[1][0] <= now_ns - GROWTH_WINDOW_NS:
            self._site_samples.popleft()

    def _net(self) -> dict[int, int]:
        net = dict(self.site_created)
        for pc, n in self.site_exited.items():
            net[pc] = net.get(pc, 0) - n
        return net

    def rates(self, now_ns: int) -> dict[Kind, float]:
        if not self._samples:
            return {k: 0.0 for k in Kind}
        base = self._samples[0]
        for s in self._samples:
            if s[0] >= now_ns - RATE_WINDOW_NS:
                break
            base = s
        last = self._samples[-1]
        span = (last[0] - base[0]) / 1e9
        if span <= 0:
            return {k: 0.0 for k in Kind}
        return {k: (last[1][k] - base[1][k]) / span for k in Kind}

    # -- the screen's figures -------------------------------------------------------------------

    def snapshot(self, *, now_ns: int, start_ns: int, pid: int, go_version: str,
                 kinds: frozenset[Kind], symbols: Symbols,
                 reason_name: Callable[[int], str], counters: Counters,
                 match: str | None = None, target_exited: bool = False,
                 top: int = 8) -> LiveSnapshot:
        past_ns, past = self._site_samples[0] if self._site_samples else (start_ns, {})
        window = max(0.0, (now_ns - past_ns) / 1e9)
        net = self._net()

        def row(gopc: int) -> SiteRow:
            return SiteRow(symbols.go_statement(gopc), self.site_live.get(gopc, 0),
                           net.get(gopc, 0) - past.get(gopc, 0),
                           self.site_created.get(gopc, 0), self.site_exited.get(gopc, 0))

        sites = set(self.site_live) | set(self.site_created) | set(self.site_exited)
        rows = [row(pc) for pc in sites]
        # Busiest first: live goroutines, then goroutines created (sites that churn).
        by_live = sorted((r for r in rows if r.live or r.created),
                         key=lambda r: (-r.live, -r.created, _site_key(r.site)))[:top]
        by_growth = sorted((r for r in rows if r.growth > 0),
                           key=lambda r: (-r.growth, -r.live, _site_key(r.site)))[:top]
        return LiveSnapshot(
            pid=pid, go_version=go_version, elapsed_s=(now_ns - start_ns) / 1e9, kinds=kinds,
            live=len(self.gs), live_history=[s[2] for s in self._samples],
            growth_window_s=window,
            created=self.totals[Kind.CREATE], exited=self.totals[Kind.EXIT],
            parks=self.totals[Kind.PARK], wakes=self.totals[Kind.WAKE],
            rates=self.rates(now_ns), by_live=by_live, by_growth=by_growth,
            parked=self._parked_groups(now_ns, symbols, reason_name, top),
            counters=counters,
            match=match, target_exited=target_exited,
        )

    def _parked_groups(self, now_ns: int, symbols: Symbols,
                       reason_name: Callable[[int], str], top: int) -> list[ParkedGroup]:
        merged: dict[tuple[Frame | None, str, Frame | None], ParkedGroup] = {}
        for (gopc, reason, pc), members in self.groups.items():
            oldest = next(iter(members.values()))
            key = (symbols.go_statement(gopc), reason_name(reason), symbols.parked_at_pc(pc))
            longest = max(0.0, (now_ns - oldest) / 1e9)
            g = merged.get(key)
            if g is None:
                merged[key] = ParkedGroup(len(members), longest, key[1], key[0], key[2])
            else:
                g.count += len(members)
                g.longest_s = max(g.longest_s, longest)
        # Longest first; groups parked about as long (to the tenth of a second): biggest first.
        return sorted(merged.values(), key=lambda g: (-round(g.longest_s, 1), -g.count,
                                                      _site_key(g.created_at)))[:top]


def _site_key(f: Frame | None) -> tuple[str, int, str]:
    return (os.path.basename(f.file), f.line, f.function) if f and f != UNKNOWN else ("~", 0, "")
