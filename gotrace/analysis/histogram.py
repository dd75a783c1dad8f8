"""Lifecycle histograms of `gotrace hist`: log2 buckets counted in the kernel (-DHIST=1, see
live/tracer.py HistTracer), read once at the end, and what the renderers print (counts,
buckets, p50/p99).

Slot s of a histogram counts durations d with 2^s <= d < 2^(s+1) nanoseconds, as bcc's
funclatency does; slot 0 also holds d < 1 ns. The kernel also sums the durations of each
bucket, so a percentile is the mean of the bucket that holds its rank: exact when a bucket
holds one mode, and never off by more than the bucket's width.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gotrace.binary.pclntab import Frame
from gotrace.live.bpfdefs import const
from gotrace.live.tracer import HistSample
from gotrace.model import Counters, frame_json

HK_LIFETIME = const("HK_LIFETIME")
HK_PARK = const("HK_PARK")


def slot_bounds_ns(slot: int) -> tuple[int, int]:
    return (0 if slot == 0 else 1 << slot), 1 << (slot + 1)


def slot_of_ns(ns: int) -> int:
    """The slot the BPF program puts a duration in (floor of log2, 0 for 0 and 1)."""
    return max(ns, 1).bit_length() - 1


@dataclass
class Log2Hist:
    slots: dict[int, int] = field(default_factory=dict)  # slot -> count
    sums: dict[int, int] = field(default_factory=dict)  # slot -> sum of the durations (ns)

    def add(self, slot: int, n: int = 1, sum_ns: int = 0) -> None:
        self.slots[slot] = self.slots.get(slot, 0) + n
        self.sums[slot] = self.sums.get(slot, 0) + sum_ns

    def mean_ns(self) -> float | None:
        total = self.count
        return sum(self.sums.values()) / total if total else None

    @property
    def count(self) -> int:
        return sum(self.slots.values())

    def buckets(self) -> list[tuple[int, int, int]]:
        """(lo_ns, hi_ns, count) from the lowest to the highest non-empty slot, gaps included."""
        if not self.slots:
            return []
        lo, hi = min(self.slots), max(self.slots)
        return [(*slot_bounds_ns(s), self.slots.get(s, 0)) for s in range(lo, hi + 1)]

    def quantile_ns(self, q: float) -> float | None:
        total = self.count
        if not total:
            return None
        rank = max(1, math.ceil(q * total))  # the rank-th smallest sample, 1-based
        seen = 0
        for slot in sorted(self.slots):
            n = self.slots[slot]
            if n and seen + n >= rank:
                lo, hi = slot_bounds_ns(slot)
                mean = self.sums.get(slot, 0) / n
                # Without sums (or with sums that cannot be right), the bucket's middle.
                return mean if lo <= mean < hi else (lo + hi) / 2
            seen += n
        return None  # unreachable

    def to_json(self) -> dict[str, Any]:
        def sec(ns: float | None) -> float | None:
            return None if ns is None else round(ns / 1e9, 9)

        return {
            "count": self.count,
            "mean_s": sec(self.mean_ns()),
            "p50_s": sec(self.quantile_ns(0.5)),
            "p99_s": sec(self.quantile_ns(0.99)),
            "buckets": [{"lo_s": lo / 1e9, "hi_s": hi / 1e9, "count": n}
                        for lo, hi, n in self.buckets()],
        }


@dataclass
class Hists:
    lifetime: Log2Hist = field(default_factory=Log2Hist)
    park: dict[str, Log2Hist] = field(default_factory=dict)  # wait reason -> histogram

    @property
    def total(self) -> int:
        return self.lifetime.count + sum(h.count for h in self.park.values())

    def to_json(self) -> dict[str, Any]:
        return {"lifetime": self.lifetime.to_json(),
                "park": {r: h.to_json() for r, h in sorted(self.park.items())}}


@dataclass
class SiteHists(Hists):
    site: Frame | None = None  # the go statement; None: unknown
    gopc: int = 0


@dataclass
class Histograms:
    """What `gotrace hist` prints: every histogram of one run and the counters beside them."""

    pid: int
    go_version: str
    duration_s: float
    by: str  # "reason" or "site"
    totals: Hists
    sites: list[SiteHists]  # with by == "site": busiest first
    counters: Counters = field(default_factory=Counters)
    alive_at_end: int = 0  # created while attached, not exited: no lifetime sample
    parked_at_end: int = 0  # parked, not woken before the end: no park sample
    target_exited: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "hist",
            "pid": self.pid,
            "go_version": self.go_version,
            "duration_s": round(self.duration_s, 3),
            "by": self.by,
            **self.totals.to_json(),
        }
        if self.by == "site":
            out["sites"] = [{"site": frame_json(s.site) if s.site else None, **s.to_json()}
                            for s in self.sites]
        c = self.counters.to_json()
        lost = {"lost_events": c.pop("lost_events"), "lost": c.pop("lost")}
        out.update({**c, "alive_at_end": self.alive_at_end, "parked_at_end": self.parked_at_end,
                    **lost, "target_exited": self.target_exited})
        return out


def build(samples: Iterable[HistSample], *, reason_name: Callable[[int], str],
          site_frame: Callable[[int], Frame | None]) -> tuple[Hists, list[SiteHists]]:
    """Totals over everything, and one entry per go statement (when samples carry sites)."""
    totals = Hists()
    sites: dict[int, SiteHists] = {}
    for s in samples:
        per = sites.get(s.site)
        if per is None:
            per = sites[s.site] = SiteHists(site=site_frame(s.site) if s.site else None,
                                            gopc=s.site)
        for h in (totals, per):
            if s.kind == HK_LIFETIME:
                h.lifetime.add(s.slot, s.n, s.sum_ns)
            elif s.kind == HK_PARK:
                h.park.setdefault(reason_name(s.reason), Log2Hist()).add(s.slot, s.n, s.sum_ns)
    ordered = sorted(sites.values(), key=lambda x: (-x.total, x.gopc))
    return totals, ordered
