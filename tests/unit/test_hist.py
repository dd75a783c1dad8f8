"""gotrace hist's model and rendering: log2 buckets, percentiles, the JSON contract."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from gotrace.analysis.histogram import (
    HK_LIFETIME,
    HK_PARK,
    Histograms,
    Log2Hist,
    build,
    slot_bounds_ns,
    slot_of_ns,
)
from gotrace.binary.pclntab import Frame
from gotrace.live.tracer import HistSample
from gotrace.model import Counters
from gotrace.render.hist import HistRenderer, format_ns

MS = 1_000_000


@pytest.mark.parametrize("ns, slot", [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (1023, 9),
                                      (1024, 10), (35 * MS, 25), (140 * MS, 27),
                                      (600 * MS, 29), ((1 << 40) + 5, 40)])
def test_slot_is_floor_log2(ns: int, slot: int) -> None:
    assert slot_of_ns(ns) == slot
    lo, hi = slot_bounds_ns(slot)
    assert lo <= ns < hi or (slot == 0 and ns < 2)


def test_buckets_include_gaps_and_percentiles_use_bucket_means() -> None:
    h = Log2Hist()
    h.add(25, 23, 23 * 35 * MS)
    h.add(27, 11, 11 * 141 * MS)
    assert h.count == 34
    assert [(lo, n) for lo, _, n in h.buckets()] == [(1 << 25, 23), (1 << 26, 0), (1 << 27, 11)]
    assert h.quantile_ns(0.5) == 35 * MS  # the 17th of 34 is in the first bucket
    assert h.quantile_ns(0.99) == 141 * MS
    j = h.to_json()
    assert j["count"] == 34 and j["p50_s"] == 0.035 and j["p99_s"] == 0.141
    assert j["buckets"][1] == {"lo_s": (1 << 26) / 1e9, "hi_s": (1 << 27) / 1e9, "count": 0}


def test_percentile_without_sums_is_bucket_middle() -> None:
    h = Log2Hist({10: 4})
    lo, hi = slot_bounds_ns(10)
    assert h.quantile_ns(0.5) == (lo + hi) / 2
    assert Log2Hist().quantile_ns(0.5) is None
    assert Log2Hist().to_json() == {"count": 0, "mean_s": None, "p50_s": None, "p99_s": None,
                                    "buckets": []}


def samples() -> list[HistSample]:
    return [
        HistSample(HK_LIFETIME, 0x10, 0, 25, 23, 23 * 35 * MS),
        HistSample(HK_PARK, 0x10, 14, 25, 23, 23 * 35 * MS),
        HistSample(HK_LIFETIME, 0x20, 0, 29, 7, 7 * 600 * MS),
        HistSample(HK_PARK, 0x20, 19, 29, 7, 7 * 600 * MS),
        HistSample(HK_PARK, 0x20, 19, 3, 1, 9),
    ]


def frames(pc: int) -> Frame | None:
    return {0x10: Frame("main.spawnShort", "/src/main.go", 59),
            0x20: Frame("main.spawnLong", "/src/main.go", 76)}.get(pc)


def reasons(r: int) -> str:
    return {14: "sleep", 19: "chan receive"}[r]


def test_build_totals_and_sites() -> None:
    totals, sites = build(samples(), reason_name=reasons, site_frame=frames)
    assert totals.lifetime.count == 30
    assert {r: h.count for r, h in totals.park.items()} == {"sleep": 23, "chan receive": 8}
    assert [(s.site.line if s.site else 0, s.total) for s in sites] == [(59, 46), (76, 15)]


def histograms(by: str) -> Histograms:
    totals, sites = build(samples(), reason_name=reasons, site_frame=frames)
    return Histograms(pid=42, go_version="go1.27.3", duration_s=3.0, by=by, totals=totals,
                      sites=sites, counters=Counters(created=31, exited=30, parks=31, wakes=31),
                      alive_at_end=1)


def test_json_contract() -> None:
    j = histograms("reason").to_json()
    assert j["duration_s"] == 3.0 and "sites" not in j
    assert set(j["lifetime"]) == {"count", "mean_s", "p50_s", "p99_s", "buckets"}
    assert sorted(j["park"]) == ["chan receive", "sleep"]
    assert j["lost_events"] == 0 and j["alive_at_end"] == 1
    assert list(j)[-8:] == ["created", "exited", "parks", "wakes", "alive_at_end",
                            "parked_at_end", "lost_events", "lost"] or \
        list(j)[-9:-1] == ["created", "exited", "parks", "wakes", "alive_at_end",
                           "parked_at_end", "lost_events", "lost"]
    s = histograms("site").to_json()
    assert [x["site"]["function"] for x in s["sites"]] == ["main.spawnShort", "main.spawnLong"]
    assert s["sites"][1]["park"]["chan receive"]["count"] == 8


def test_human_rendering_at_fixed_width() -> None:
    out = io.StringIO()
    HistRenderer(Console(file=out, width=100, color_system=None)).render(histograms("site"))
    text = out.getvalue()
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "go statement main.spawnLong main.go:76" in text
    rows = [line.split() for line in text.splitlines()]
    assert ["33.6ms", "67.1ms", "23", "█" * 40] in rows
    assert ["537ms", "1.07s", "7", "█" * 40] in rows
    assert "goroutine lifetime (create → exit) · 30 goroutines · p50 35ms · p99 600ms" in text


@pytest.mark.parametrize("ns, text", [(0, "0ns"), (512, "512ns"), (2048, "2.05µs"),
                                      (1 << 20, "1.05ms"), (1 << 31, "2.15s")])
def test_format_ns(ns: float, text: str) -> None:
    assert format_ns(ns) == text
