"""GoroutineReader: scanning allgs and reading stacks from (fake) process memory."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import replace

import pytest

from gotrace.analysis.dump import SHORT, SHOWN, SYSTEM, UNKNOWN_WAIT, selected
from gotrace.binary.allgs import AllgsAddrs
from gotrace.binary.offsets import GOffsets, table_offsets
from gotrace.errors import BadInput
from gotrace.live.goroutines import (
    G_DEAD,
    G_DEADEXTRA,
    G_RUNNING,
    G_SYSCALL,
    G_WAITING,
    GoroutineReader,
    read_g,
    unwind,
)

OFF = table_offsets(27)


# -- reading goroutines from memory -------------------------------------------------------------


class FakeMemory:
    """Byte blobs at addresses; `changes` alter a blob after a number of reads of it."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}
        self.failed_reads = 0
        self.on_read: Callable[[int], None] | None = None

    def read(self, addr: int, size: int) -> bytes | None:
        if self.on_read:
            self.on_read(addr)
        for base, blob in self.blobs.items():
            if base <= addr and addr + size <= base + len(blob):
                return blob[addr - base : addr - base + size]
        self.failed_reads += 1
        return None

    def u64(self, addr: int) -> int | None:
        raw = self.read(addr, 8)
        return None if raw is None else int.from_bytes(raw, "little")


def make_g(gaddr: int, goid: int, status: int, *, off: GOffsets = OFF, lo: int = 0x10000,
           sp_off: int = 0x1F00, reason: int = 19) -> bytes:
    raw = bytearray(512)
    hi = lo + 0x2000
    struct.pack_into("<QQ", raw, off.stack_lo, lo, hi)
    struct.pack_into("<Q", raw, off.goid, goid)
    struct.pack_into("<I", raw, off.status, status)
    raw[off.waitreason] = reason
    struct.pack_into("<QQQ", raw, off.sched_sp, lo + sp_off, 0x401234, gaddr)  # sp, pc, g
    struct.pack_into("<Q", raw, off.sched_bp, lo + sp_off + 0x10)
    struct.pack_into("<Q", raw, off.gopc, 0x402000)
    struct.pack_into("<Q", raw, off.startpc, 0x403000)
    return bytes(raw)


class FakeReader:
    """GoroutineReader over fake memory, without a GoBinary."""

    def __init__(self, mem: FakeMemory, allglen_addr: int, allgptr_addr: int) -> None:
        class GB:
            offsets = OFF
            go_version = "go1.27.3"

        self.reader = GoroutineReader.__new__(GoroutineReader)
        self.reader.gb = GB()  # type: ignore[assignment]
        self.reader.mem = mem  # type: ignore[assignment]
        self.reader.bias = 0
        self.reader.addrs = AllgsAddrs(0, allglen_addr, allgptr_addr, "test")


def memory_with_gs(gs: dict[int, bytes | None]) -> tuple[FakeMemory, FakeReader]:
    mem = FakeMemory()
    arr = 0x9000
    mem.blobs[0x8000] = struct.pack("<QQ", len(gs), arr)  # allglen, allgptr
    mem.blobs[arr] = b"".join(struct.pack("<Q", a) for a in gs)
    for addr, blob in gs.items():
        if blob is not None:
            mem.blobs[addr] = blob
    return mem, FakeReader(mem, 0x8000, 0x8008)


def test_scan_skips_dead_goroutines_and_counts_unreadable_ones() -> None:
    _, fr = memory_with_gs({
        0xA000: make_g(0xA000, 1, G_WAITING),
        0xA400: make_g(0xA400, 7, G_DEAD),
        0xA800: make_g(0xA800, 8, G_DEADEXTRA),
        0xAC00: None,  # unmapped
        0xB000: make_g(0xB000, 9, G_RUNNING | 0x1000),  # _Gscan bit set
    })
    scan = fr.reader.scan()
    assert [(g.goid, g.status) for g in scan.goroutines] == [(1, G_WAITING), (9, G_RUNNING)]
    assert scan.skipped == 1 and scan.allglen == 5
    assert scan.goroutines[0].sched_g == 0xA000 and scan.goroutines[0].gaddr == 0xA000


def test_an_absurd_allglen_is_bad_input_not_a_crash() -> None:
    mem = FakeMemory()
    mem.blobs[0x8000] = struct.pack("<QQ", 1 << 40, 0x9000)
    with pytest.raises(BadInput, match="allglen"):
        FakeReader(mem, 0x8000, 0x8008).reader.g_pointers()


def test_an_unreadable_pointer_array_is_counted() -> None:
    mem = FakeMemory()
    mem.blobs[0x8000] = struct.pack("<QQ", 3, 0xDEAD000)
    ptrs, lost = FakeReader(mem, 0x8000, 0x8008).reader.g_pointers()
    assert ptrs == [] and lost == 3


def test_a_goroutine_that_keeps_moving_is_skipped() -> None:
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 5, G_WAITING)})
    lo = 0x10000
    mem.blobs[lo] = bytes(0x2000)  # its stack: zeros (the walk stops at once)
    g = fr.reader.scan().goroutines[0]
    flip = [0]

    def move(addr: int) -> None:
        if addr == 0xA000:  # each read of the g sees a new resume point
            flip[0] += 1
            mem.blobs[0xA000] = make_g(0xA000, 5, G_WAITING, sp_off=0x1F00 - 0x10 * flip[0])

    mem.on_read = move
    assert fr.reader.stack(g) is None


def test_a_goroutine_that_exited_meanwhile_is_skipped_and_a_stable_one_read() -> None:
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 5, G_WAITING)})
    lo = 0x10000
    stack = bytearray(0x2000)
    struct.pack_into("<QQ", stack, 0x1F10, 0, 0x404040)  # frame: next bp 0, return PC
    mem.blobs[lo] = bytes(stack)
    g = fr.reader.scan().goroutines[0]
    st = fr.reader.stack(g)
    assert st is not None and st.pcs == [0x401234, 0x404040] and st.source == "sched"
    mem.blobs[0xA000] = make_g(0xA000, 6, G_WAITING)  # g reused by goroutine 6
    assert fr.reader.stack(g) is None


def test_running_goroutines_get_no_stack_and_syscalls_use_the_syscall_frame() -> None:
    gsys = bytearray(make_g(0xB000, 3, G_SYSCALL))
    lo = 0x10000
    struct.pack_into("<QQQ", gsys, OFF.syscallsp or 0, lo + 0x1E00, 0x405000, lo + 0x1E40)
    mem, fr = memory_with_gs({0xA000: make_g(0xA000, 2, G_RUNNING), 0xB000: bytes(gsys)})
    stack = bytearray(0x2000)
    struct.pack_into("<QQ", stack, 0x1E40, 0, 0x406000)
    mem.blobs[lo] = bytes(stack)
    running, syscall = fr.reader.scan().goroutines
    st = fr.reader.stack(running)
    assert st is not None and st.pcs == [] and st.source == "none"
    st = fr.reader.stack(syscall)
    assert st is not None and st.pcs == [0x405000, 0x406000] and st.source == "syscall"


def test_unwind_reads_the_stack_window_once() -> None:
    mem = FakeMemory()
    lo, hi = 0x10000, 0x12000
    stack = bytearray(hi - lo)
    struct.pack_into("<QQ", stack, 0x100, lo + 0x200, 0x402000)
    struct.pack_into("<QQ", stack, 0x200, 0, 0x403000)
    mem.blobs[lo] = bytes(stack)
    reads: list[int] = []
    mem.on_read = reads.append
    assert unwind(mem, 0x401000, lo + 0x80, lo + 0x100, lo, hi) == [0x401000, 0x402000, 0x403000]  # type: ignore[arg-type]
    assert reads == [lo + 0x80]


def test_read_g_returns_the_new_fields() -> None:
    mem, _ = memory_with_gs({})
    raw = bytearray(make_g(0xA000, 42, G_WAITING))
    struct.pack_into("<Q", raw, OFF.parent_goid or 0, 7)
    struct.pack_into("<Q", raw, OFF.waitsince or 0, 123456789)
    mem.blobs[0xA000] = bytes(raw)
    g = read_g(mem, OFF, 0xA000)  # type: ignore[arg-type]
    assert g is not None
    assert (g.goid, g.parent_goid, g.gopc, g.startpc, g.waitsince, g.gaddr) == \
        (42, 7, 0x402000, 0x403000, 123456789, 0xA000)


def test_min_wait_keeps_goroutines_the_gc_dated_long_enough() -> None:
    now = 1000 * 10**9
    g = read_g(memory_with_gs({0xA000: make_g(0xA000, 9, G_WAITING)})[0], OFF, 0xA000)  # type: ignore[arg-type]
    assert g is not None
    dated = replace(g, waitsince=now - 400 * 10**9)  # the GC saw it waiting 400 s ago
    assert selected(dated, "main.worker", now, 300.0, False) == SHOWN
    assert selected(dated, "main.worker", now, 500.0, False) == SHORT
    assert selected(g, "main.worker", now, 300.0, False) == UNKNOWN_WAIT  # no GC since
    assert selected(g, "main.worker", now, None, False) == SHOWN
    assert selected(replace(dated, status=G_RUNNING), "main.worker", now, 1.0, False) == SHORT
    assert selected(dated, "runtime.bgsweep", now, None, False) == SYSTEM
    assert selected(dated, "runtime.bgsweep", now, None, True) == SHOWN
    assert selected(dated, "runtime.main", now, None, False) == SHOWN
