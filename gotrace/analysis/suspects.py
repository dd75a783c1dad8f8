"""From the live goroutine table to leak suspects: park-time logic, grouping, stack cleanup.

Pure functions of their inputs (records, the clock, a symbolizer, a verifier), so the logic
is unit tested with synthetic records and no kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from gotrace.analysis.ignore import Ignorer
from gotrace.binary.pclntab import Frame
from gotrace.frames import Symbols, is_system
from gotrace.model import GoroutineRecord, Suspect

MAX_GOIDS = 10


class Verdict(NamedTuple):
    """What the target's memory says about a suspect right now (a tuple: made per suspect)."""

    parked: bool | None  # None: unreadable
    stack: tuple[int, ...] = ()  # parked stack unwound from g.sched (runtime PCs)


Verifier = Callable[[GoroutineRecord], Verdict]


@dataclass
class Outcome:
    suspects: list[Suspect]
    system_hidden: int
    no_longer_parked: int
    unverified: int


def find_suspects(
    records: Iterable[GoroutineRecord],
    *,
    now_ns: int,
    threshold_ns: int,
    sym: Symbols,
    reason_name: Callable[[int], str],
    verify: Verifier | None = None,
    ignore: Ignorer | None = None,
) -> Outcome:
    """Goroutines parked at least threshold_ns, grouped; ignore rules hide (and count) some."""
    groups: dict[tuple[Frame, str, Frame | None],
                 list[tuple[GoroutineRecord, tuple[Frame, ...]]]] = {}
    hidden = gone = unverified = 0
    meta: dict[tuple[Frame, str, Frame | None], tuple[tuple[Frame, ...], str]] = {}
    # Goroutines of one leak share their start function, stacks and wait reason: each is
    # looked up once per distinct value (100k suspects cost one pass, not 100k lookups).
    starts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    for rec in records:
        if not rec.parked_ns or now_ns - rec.parked_ns < threshold_ns:
            continue
        start = starts.get(rec.startpc)
        if start is None:
            start = starts[rec.startpc] = sym.function(rec.startpc)
        if is_system(start):
            hidden += 1
            continue
        verdict = verify(rec) if verify else Verdict(None)
        if verdict.parked is False:
            gone += 1  # woken by a path the probes did not see, or exited unseen
            continue
        if verdict.parked is None and verify is not None:
            unverified += 1
        if rec.park_stack:
            pcs = (rec.park_stack[0], rec.park_caller, *rec.park_stack[1:]) if rec.park_caller \
                else tuple(rec.park_stack)
            parked, site = sym.parked(pcs, False)
        elif verdict.stack:
            parked, site = sym.parked(verdict.stack)
        else:
            parked, site = (), None
        creation = sym.creation_stack(rec.gopc, tuple(rec.create_stack))
        reason = reasons.get(rec.wait_reason)
        if reason is None:
            reason = reasons[rec.wait_reason] = reason_name(rec.wait_reason)
        if ignore is not None and ignore.hidden(
                existed_at_attach=not rec.created_ns, go=creation[0], start=start,
                parked=parked, created=creation, reason=reason):
            continue
        key = (creation[0], reason, site)
        members = groups.get(key)
        if members is None:
            members = groups[key] = []
        members.append((rec, parked))
        if key not in meta or len(creation) > len(meta[key][0]):
            meta[key] = (creation, start)

    suspects = []
    for key, members in groups.items():
        members.sort(key=lambda m: (m[0].parked_ns, m[0].goid))  # longest parked first
        oldest, oldest_stack = members[0]
        creation, start = meta[key]
        suspects.append(Suspect(
            count=len(members),
            wait_reason=key[1],
            parked_s_max=(now_ns - oldest.parked_ns) / 1e9,
            created_at=key[0],
            start_function=start,
            parked_at=key[2],
            creation_stack=list(creation),
            parked_stack=list(oldest_stack),
            goids=sorted(r.goid for r, _ in members)[:MAX_GOIDS],
            before_attach=sum(1 for r, _ in members if not r.created_ns),
        ))
    suspects.sort(key=lambda s: (-s.count, -s.parked_s_max, s.created_at.file, s.created_at.line))
    return Outcome(suspects, hidden, gone, unverified)
