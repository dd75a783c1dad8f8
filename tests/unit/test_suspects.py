"""Park-time logic and grouping, fed with synthetic goroutine records (no kernel)."""

from __future__ import annotations

from gotrace.analysis.suspects import Verdict, find_suspects
from gotrace.binary.pclntab import Frame
from gotrace.frames import Symbols
from gotrace.model import GoroutineRecord
from tests.unit.fakes import FakeCode

S = 1_000_000_000
GOROOT = "/usr/lib/go"

# A fake binary: PC -> (function, file, line).
PCS = {
    0x100: ("runtime.gopark", f"{GOROOT}/src/runtime/proc.go", 400),
    0x110: ("runtime.chanrecv", f"{GOROOT}/src/runtime/chan.go", 583),
    0x120: ("runtime.chanrecv1", f"{GOROOT}/src/runtime/chan.go", 442),
    0x200: ("main.worker", "/src/app/main.go", 20),  # where workers wait
    0x300: ("main.spawn", "/src/app/main.go", 31),  # go statement A
    0x310: ("main.spawn", "/src/app/main.go", 35),  # go statement B
    0x400: ("main.main", "/src/app/main.go", 50),
    0x500: ("runtime.bgsweep", f"{GOROOT}/src/runtime/mgcsweep.go", 270),
    0x600: ("runtime.newproc.func1", f"{GOROOT}/src/runtime/proc.go", 4000),
}


SYM = Symbols(FakeCode({pc: [Frame(*f)] for pc, f in PCS.items()}, GOROOT))


def rec(goid: int, parked_s_ago: float | None, *, gopc: int = 0x300, start: int = 0x200,
        reason: int = 14, created: bool = True, now: int = 100 * S) -> GoroutineRecord:
    return GoroutineRecord(
        goid=goid, gaddr=0xC000000000 + goid * 0x200,
        created_ns=now - 200 * S if created else 0,
        parked_ns=0 if parked_s_ago is None else now - int(parked_s_ago * S),
        gopc=gopc, startpc=start, parent_goid=1, wait_reason=reason,
        park_caller=0x110,
        create_stack=[0x600, gopc, 0x400],
        park_stack=[0x100, 0x120, 0x200],
    )


def reasons(v: int) -> str:
    return {14: "chan receive", 15: "chan send"}.get(v, f"waitReason({v})")


def run(records: list[GoroutineRecord], threshold_s: float = 10, **kw: object):  # type: ignore[no-untyped-def]
    return find_suspects(records, now_ns=100 * S, threshold_ns=int(threshold_s * S),
                         sym=SYM, reason_name=reasons, **kw)  # type: ignore[arg-type]


def test_groups_by_go_statement_reason_and_site_with_exact_counts() -> None:
    records = [rec(i, 30) for i in range(10, 13)] + [rec(i, 20, gopc=0x310) for i in range(20, 25)]
    out = run(records)
    got = {(s.created_at.line, s.wait_reason, s.count) for s in out.suspects}
    assert got == {(31, "chan receive", 3), (35, "chan receive", 5)}
    first = out.suspects[0]
    assert first.count == 5 and first.goids == [20, 21, 22, 23, 24]
    assert first.parked_at == Frame("main.worker", "/src/app/main.go", 20)


def test_threshold_running_and_woken_goroutines_are_not_suspects() -> None:
    out = run([rec(1, 9.9), rec(2, None), rec(3, 10.0)])
    assert [s.goids for s in out.suspects] == [[3]]


def test_longest_park_and_the_oldest_members_stack() -> None:
    out = run([rec(1, 12.5), rec(2, 44.0), rec(3, 11.0)])
    (s,) = out.suspects
    assert abs(s.parked_s_max - 44.0) < 1e-6


def test_parked_stack_puts_back_the_caller_a_frame_pointer_walk_misses() -> None:
    (s,) = run([rec(1, 30)]).suspects
    assert [f.function for f in s.parked_stack] == [
        "runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.worker"]


def test_creation_stack_starts_at_the_go_statement() -> None:
    (s,) = run([rec(1, 30)]).suspects
    assert [(f.function, f.line) for f in s.creation_stack] == [("main.spawn", 31),
                                                                 ("main.main", 50)]


def test_runtime_goroutines_are_hidden_and_counted() -> None:
    out = run([rec(1, 30, start=0x500), rec(2, 30)])
    assert out.system_hidden == 1 and sum(s.count for s in out.suspects) == 1


def test_memory_verdict_drops_woken_goroutines_and_counts_unreadable() -> None:
    verdicts = {1: Verdict(False), 2: Verdict(None), 3: Verdict(True)}
    out = run([rec(1, 30), rec(2, 30), rec(3, 30)], verify=lambda r: verdicts[r.goid])
    assert out.no_longer_parked == 1 and out.unverified == 1
    assert out.suspects[0].goids == [2, 3]


def test_stack_from_memory_when_the_probe_had_none() -> None:
    r = rec(1, 30)
    r.park_stack = []
    out = run([r], verify=lambda _: Verdict(True, (0x100, 0x110, 0x120, 0x200)))
    assert [f.function for f in out.suspects[0].parked_stack] == [
        "runtime.gopark", "runtime.chanrecv", "runtime.chanrecv1", "main.worker"]


def test_goroutines_first_seen_parked_are_flagged_before_attach() -> None:
    out = run([rec(1, 30, created=False), rec(2, 30)])
    assert out.suspects[0].before_attach == 1


def test_goids_are_capped_at_ten() -> None:
    out = run([rec(i, 30) for i in range(100, 150)])
    assert out.suspects[0].count == 50 and out.suspects[0].goids == list(range(100, 110))
