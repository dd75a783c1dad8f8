"""Which goroutines stayed parked, from periodic reads of the target's memory alone.

No probe sees parks or wake-ups: each read of `runtime.allgs` gives every goroutine's status,
wait reason, resume point (sched.pc, sched.sp), `trackingSeq` and `waitsince`, and a goroutine
counts as parked all along between two reads when none of them changed
(docs/go-runtime.md#proving-a-goroutine-has-not-run):

- `trackingSeq` (uint8) grows by one each time the goroutine leaves _Grunning, so any
  run-then-park cycle in between changes it, unless it went through exactly 256·k cycles;
- `waitsince`, set by the GC for goroutines it finds waiting and cleared every time one runs,
  is non-zero only while the goroutine has not run since that GC: a non-zero value that stays
  the same is proof, and a change (to zero or to a later GC) is proof it ran;
- goid, wait reason and the resume point must be the same too.

A park's start is known to the resolution of the read interval: the first read that saw the
goroutine parked. That makes every park time a lower bound, which waitsince can push back
(also for goroutines parked long before gotrace attached).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gotrace.live.goroutines import G_WAITING, GSnapshot


@dataclass(slots=True)
class Park:
    """One goroutine seen parked, and since when (time.monotonic_ns, the runtime's clock)."""

    g: GSnapshot
    since_ns: int
    first_seen_ns: int  # the read that first saw this park
    reads: int = 1  # reads that saw it parked with the same signature


def signature(g: GSnapshot) -> tuple[int, ...]:
    return (g.goid, g.status, g.wait_reason, g.sched_pc, g.sched_sp, g.tracking_seq)


class ParkTracker:
    """The parked goroutines of one process, updated with each read of allgs."""

    def __init__(self) -> None:
        self.parks: dict[int, Park] = {}  # goid -> its current park
        self.live: dict[int, GSnapshot] = {}  # goid -> last read
        self.reads = 0
        self.last_read_ns = 0

    def update(self, gs: Iterable[GSnapshot], now_ns: int) -> None:
        """Fold in one read of every live goroutine, taken at now_ns."""
        parks: dict[int, Park] = {}
        live: dict[int, GSnapshot] = {}
        for g in gs:
            live[g.goid] = g
            if g.status != G_WAITING:
                continue
            old = self.parks.get(g.goid)
            if old is not None and signature(old.g) == signature(g) and \
                    (old.g.waitsince == 0 or g.waitsince == old.g.waitsince):
                old.g = g
                old.reads += 1
                if g.waitsince and g.waitsince < old.since_ns:
                    old.since_ns = g.waitsince  # the GC saw it parked already then
                parks[g.goid] = old
            else:
                since = min(now_ns, g.waitsince) if g.waitsince else now_ns
                parks[g.goid] = Park(g, since, now_ns)
        self.parks, self.live = parks, live
        self.reads += 1
        self.last_read_ns = now_ns

    def parked_longer_than(self, threshold_ns: int, now_ns: int) -> list[Park]:
        return [p for p in self.parks.values() if now_ns - p.since_ns >= threshold_ns]
