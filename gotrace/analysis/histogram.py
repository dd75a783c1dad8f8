"""Lifecycle histograms of `gotrace hist`: log2 buckets counted in the kernel (-DHIST=1), read
once at the end, and the model the renderers print (counts, buckets, p50/p99).

Slot s of a histogram counts durations d with 2^s <= d < 2^(s+1) nanoseconds, as bcc's
funclatency does; slot 0 also holds d < 1 ns. The kernel also sums the durations of each
bucket, so a percentile is the mean of the bucket that holds its rank: exact when a bucket
holds one mode, and never off by more than the bucket's width.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gotrace.binary.gobinary import GoBinary
from gotrace.binary.pclntab import Frame
from gotrace.live.bpfdefs import const
from gotrace.live.process import Target
from gotrace.live.ringbuf import parent_cflags
from gotrace.live.tracer import Tracer
from gotrace.model import frame_json

HK_LIFETIME = const("HK_LIFETIME")
HK_PARK = const("HK_PARK")
DEFAULT_HIST_ENTRIES = 16384


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

    def merge(self, other: Log2Hist) -> None:
        for s, n in other.slots.items():
            self.add(s, n, other.sums.get(s, 0))

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


class HistSample(NamedTuple):
    """One entry of the BPF map "hist" (struct hist_key -> count)."""

    kind: int  # HK_LIFETIME or HK_PARK
    site: int  # gopc (runtime address) with --by site, else 0
    reason: int  # waitReason value for HK_PARK
    slot: int
    n: int  # samples
    sum_ns: int


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
class HistReport:
    pid: int
    go_version: str
    duration_s: float
    by: str  # "reason" or "site"
    totals: Hists
    sites: list[SiteHists]  # with by == "site": busiest first
    created: int = 0
    exited: int = 0
    parks: int = 0
    wakes: int = 0
    lost_hist: int = 0  # samples dropped: the histogram map was full
    lost_table_full: int = 0
    lost_reads: int = 0
    alive_at_end: int = 0  # created while attached, not exited: no lifetime sample
    parked_at_end: int = 0  # parked, not woken before the end: no park sample
    target_exited: bool = False

    @property
    def lost_events(self) -> int:
        return self.lost_hist + self.lost_table_full + self.lost_reads

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
        out.update({
            "created": self.created, "exited": self.exited, "parks": self.parks,
            "wakes": self.wakes, "alive_at_end": self.alive_at_end,
            "parked_at_end": self.parked_at_end, "lost_events": self.lost_events,
            "lost": {"hist_full": self.lost_hist, "table_full": self.lost_table_full,
                     "memory_reads": self.lost_reads},
            "target_exited": self.target_exited,
        })
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


class HistTracer(Tracer):
    """The tracer built with -DHIST=1: the goroutine table, no stacks, histograms in a map."""

    def __init__(self, gb: GoBinary, target: Target, *, by_site: bool,
                 max_goroutines: int = 131072, entries: int = DEFAULT_HIST_ENTRIES) -> None:
        super().__init__(gb, target, max_goroutines=max_goroutines, park_stacks=False)
        self.by_site = by_site
        self.entries = entries

    def cflags(self) -> list[str]:
        return [*super().cflags(), "-DCREATE_STACKS=0", "-DHIST=1",
                f"-DHIST_BY_SITE={int(self.by_site)}", f"-DHIST_ENTRIES={self.entries}",
                *parent_cflags(self.gb)]

    def samples(self) -> list[HistSample]:
        table = self.bpf["hist"]
        try:
            items = list(table.items_lookup_batch())
        except Exception:  # kernels without batch ops
            items = list(table.items())
        return [HistSample(k.kind, k.site, k.reason, k.slot, v.count, v.sum_ns) for k, v in items]

    def counter(self, name: str) -> int:
        return int(self.bpf["counters"].sum(ctypes.c_int(const(name))).value)

    def still_open(self) -> tuple[int, int]:
        """(created while attached and alive, parked and not woken) in the goroutine table."""
        table = self.bpf["goroutines"]
        try:
            values = [v for _, v in table.items_lookup_batch()]
        except Exception:
            values = list(table.values())
        return (sum(1 for v in values if v.created_ns), sum(1 for v in values if v.parked_ns))
