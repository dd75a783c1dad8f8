"""The runtime.g layout check: accepts a sane scan, refuses what a wrong layout produces."""

from __future__ import annotations

import pytest

from gotrace.binary.gobinary import GoBinary
from gotrace.errors import BadInput
from gotrace.live.goroutines import G_RUNNABLE, G_RUNNING, G_SYSCALL, G_WAITING, GSnapshot
from gotrace.live.layout import check_layout
from tests.gobuild import GoBuild


@pytest.fixture(scope="module", params=["1.19", "1.27.3"])
def gb(request: pytest.FixtureRequest, go_build: GoBuild) -> GoBinary:
    return GoBinary.open(str(go_build(request.param, "stripped")))


def entry(gb: GoBinary, name: str) -> int:
    f = gb.pcln.lookup(name)
    assert f is not None
    return f.entry


def goroutines(gb: GoBinary, n: int = 20) -> list[GSnapshot]:
    """What a scan of a healthy program looks like."""
    gopark = entry(gb, "runtime.gopark") + 0x40
    out = []
    for i in range(n):
        goid = 1 if i == 0 else 16 + i
        gaddr = 0xC000001000 + 0x200 * i
        lo = 0xC000100000 + 0x2000 * i
        start = entry(gb, "runtime.main") if goid == 1 else entry(gb, "main.main")
        status = [G_WAITING, G_RUNNABLE, G_RUNNING, G_SYSCALL][i % 4]
        out.append(GSnapshot(
            goid=goid, status=status, wait_reason=1, sched_pc=gopark, sched_sp=lo + 0x1F00,
            sched_bp=lo + 0x1F40, stack_lo=lo, stack_hi=lo + 0x2000, gaddr=gaddr,
            gopc=entry(gb, "main.main") + 8, startpc=start, parent_goid=0 if goid == 1 else 1,
            sched_g=gaddr, syscallsp=lo + 0x1E00 if status == G_SYSCALL else 0))
    return out


def no_reread(g: GSnapshot) -> GSnapshot | None:
    return g


def test_a_healthy_scan_passes(gb: GoBinary) -> None:
    check = check_layout(goroutines(gb), gb, 0, no_reread)
    assert check.checked == 20 and check.changing == 0


def test_goroutine_1_must_start_at_runtime_main(gb: GoBinary) -> None:
    gs = goroutines(gb)
    gs[0] = gs[0]._replace(startpc=entry(gb, "main.main"))
    with pytest.raises(BadInput, match=r"goroutine 1 starts at main\.main, not runtime\.main"):
        check_layout(gs, gb, 0, no_reread)


def test_goids_read_from_the_wrong_place_are_refused(gb: GoBinary) -> None:
    gs = [g._replace(goid=0xC000001000 + i) for i, g in enumerate(goroutines(gb))]
    with pytest.raises(BadInput, match="layout is not what gotrace expects"):
        check_layout(gs, gb, 0, no_reread)
    dup = [g._replace(goid=7) if g.goid != 1 else g for g in goroutines(gb)]
    with pytest.raises(BadInput, match="not unique"):
        check_layout(dup, gb, 0, no_reread)


def test_a_wrong_sched_offset_is_refused(gb: GoBinary) -> None:
    gs = [g._replace(sched_g=0, sched_sp=0x1234) for g in goroutines(gb)]
    with pytest.raises(BadInput, match=r"sched\.g|sched\.sp"):
        check_layout(gs, gb, 0, no_reread)


def test_wait_reasons_beyond_this_runtime_are_refused(gb: GoBinary) -> None:
    gs = [g._replace(wait_reason=200) for g in goroutines(gb)]
    with pytest.raises(BadInput, match="wait reason 200"):
        check_layout(gs, gb, 0, no_reread)


def test_a_goroutine_caught_changing_is_read_again(gb: GoBinary) -> None:
    gs = goroutines(gb)
    torn = gs[5]._replace(sched_g=0xDEAD)
    gs[5] = torn
    assert check_layout(gs, gb, 0, lambda g: g._replace(sched_g=g.gaddr)).changing == 0
    # Still torn when read again: tolerated once, as memory that kept changing.
    assert check_layout(gs, gb, 0, no_reread).changing == 1


def test_empty_or_main_less_scans_are_refused(gb: GoBinary) -> None:
    with pytest.raises(BadInput, match="no live goroutine"):
        check_layout([], gb, 0, no_reread)
    with pytest.raises(BadInput, match="goroutine 1"):
        check_layout(goroutines(gb)[1:2], gb, 0, no_reread)


def test_pie_bias_is_applied(gb: GoBinary) -> None:
    bias = 0x555500000000
    gs = [g._replace(startpc=g.startpc + bias, sched_pc=g.sched_pc + bias, gopc=g.gopc + bias)
          for g in goroutines(gb)]
    check_layout(gs, gb, bias, no_reread)
    with pytest.raises(BadInput):
        check_layout(gs, gb, 0, no_reread)


def test_cgo_callback_goroutines_have_no_start_pc(gb: GoBinary) -> None:
    gs = goroutines(gb)
    gs[3] = gs[3]._replace(startpc=0, gopc=0)  # a C thread calling into Go (oneNewExtraM's g)
    assert check_layout(gs, gb, 0, no_reread).changing == 0
