"""GoroutineReader: scanning allgs and reading stacks from (fake) process memory."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Callable, Iterator, Mapping
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
    TRIES,
    GoroutineReader,
    StackStats,
    coalesce,
    read_g,
    unwind,
)
from gotrace.live.process import ProcessMemory

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
        self.reader.record_below_sp = 0


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
    assert unwind(mem, 0x401000, lo + 0x80, lo + 0x100, lo, hi) == [0x401000, 0x402000, 0x403000]
    assert reads == [lo + 0x80]


def test_read_g_returns_the_new_fields() -> None:
    mem, _ = memory_with_gs({})
    raw = bytearray(make_g(0xA000, 42, G_WAITING))
    struct.pack_into("<Q", raw, OFF.parent_goid or 0, 7)
    struct.pack_into("<Q", raw, OFF.waitsince or 0, 123456789)
    mem.blobs[0xA000] = bytes(raw)
    g = read_g(mem, OFF, 0xA000)
    assert g is not None
    assert (g.goid, g.parent_goid, g.gopc, g.startpc, g.waitsince, g.gaddr) == \
        (42, 7, 0x402000, 0x403000, 123456789, 0xA000)


def test_min_wait_keeps_goroutines_the_gc_dated_long_enough() -> None:
    now = 1000 * 10**9
    g = read_g(memory_with_gs({0xA000: make_g(0xA000, 9, G_WAITING)})[0], OFF, 0xA000)
    assert g is not None
    dated = g._replace(waitsince=now - 400 * 10**9)  # the GC saw it waiting 400 s ago
    assert selected(dated, "main.worker", now, 300.0, False) == SHOWN
    assert selected(dated, "main.worker", now, 500.0, False) == SHORT
    assert selected(g, "main.worker", now, 300.0, False) == UNKNOWN_WAIT  # no GC since
    assert selected(g, "main.worker", now, None, False) == SHOWN
    assert selected(dated._replace(status=G_RUNNING), "main.worker", now, 1.0, False) == SHORT
    assert selected(dated, "runtime.bgsweep", now, None, False) == SYSTEM
    assert selected(dated, "runtime.bgsweep", now, None, True) == SHOWN
    assert selected(dated, "runtime.main", now, None, False) == SHOWN


# -- batched reads --------------------------------------------------------------------------------


class BatchMemory(FakeMemory):
    """FakeMemory with ProcessMemory's read_batch contract: one buffer, failed indices."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[int, int]]] = []

    def read_batch(self, addrs: list[int], sizes: list[int], into: bytearray | None = None
                   ) -> tuple[bytearray, list[int]]:
        self.batches.append(list(zip(addrs, sizes, strict=True)))
        out, failed = bytearray(), []
        for i, (a, n) in enumerate(zip(addrs, sizes, strict=True)):
            raw = self.read(a, n) if n else b""
            if raw is None:
                failed.append(i)
                raw = bytes(n)
            out += raw
        return out, failed


def batch_reader(gs: Mapping[int, bytes | None]) -> tuple[BatchMemory, GoroutineReader]:
    mem = BatchMemory()
    arr = 0x9000
    mem.blobs[0x8000] = struct.pack("<QQ", len(gs), arr)
    mem.blobs[arr] = b"".join(struct.pack("<Q", a) for a in gs)
    for addr, blob in gs.items():
        if blob is not None:
            mem.blobs[addr] = blob
    return mem, FakeReader(mem, 0x8000, 0x8008).reader


def test_coalesce_joins_neighbours_and_keeps_the_order() -> None:
    assert coalesce([0x1000, 0x1200, 0x1400, 0x9000], 0x100, gap=0x200) == [
        (0x1000, 0x500, [0x1000, 0x1200, 0x1400]), (0x9000, 0x100, [0x9000])]
    # Out of order, zero and a repeat: each its own range, the addresses as given.
    runs = coalesce([0x2000, 0x1000, 0, 0x1000, 0x1100], 0x100, gap=0)
    assert [a for r in runs for a in r[2]] == [0x2000, 0x1000, 0, 0x1000, 0x1100]
    assert runs[2] == (0, 0, [0]) and runs[-1] == (0x1000, 0x200, [0x1000, 0x1100])
    # A range stops growing at run_bytes.
    runs = coalesce(list(range(0x1000, 0x2000, 0x100)), 0x100, run_bytes=0x400)
    assert [len(r[2]) for r in runs] == [4, 4, 4, 4] and all(r[1] == 0x400 for r in runs)
    assert coalesce([], 8) == []


def test_read_gs_reads_neighbours_in_one_range_and_keeps_the_callers_order() -> None:
    stride = 0x200  # g structs side by side, as in a heap span
    gs = {0xA000 + stride * i: make_g(0xA000 + stride * i, 10 + i, G_WAITING)
          for i in range(8)}
    mem, reader = batch_reader(gs)
    span = b"".join(blob.ljust(stride, b"\0") for blob in gs.values() if blob)
    mem.blobs = {k: v for k, v in mem.blobs.items() if k not in gs} | {0xA000: span}
    order = [0xA000 + stride * i for i in (0, 1, 2, 3, 4, 5, 6, 7)]
    got = reader.read_gs(order)
    assert [g.goid for g in got if g] == list(range(10, 18))
    assert len(mem.batches) == 1 and len(mem.batches[0]) == 1  # one range, one call
    got = reader.read_gs([order[5], 0, order[2], order[5]])  # any order, zeros, repeats
    assert [g.goid if g else None for g in got] == [15, None, 12, 15]


def test_an_unreadable_page_inside_a_range_costs_only_its_gs() -> None:
    stride = 0x200
    blobs: dict[int, bytes | None] = {0xA000 + stride * i: make_g(0xA000 + stride * i, i + 1,
                                                                   G_WAITING) for i in range(6)}
    blobs[0xA000 + 2 * stride] = None  # unmapped: the range read fails as a whole
    mem, reader = batch_reader(blobs)
    scan = reader.scan()
    assert sorted(g.goid for g in scan.goroutines) == [1, 2, 4, 5, 6]
    assert scan.skipped == 1 and scan.allglen == 6
    # The coalesced range failed, then its gs were read one by one, still in batches.
    assert [len(b) for b in mem.batches[-2:]] == [1, 6]


def test_many_scattered_gs_are_sorted_for_reading_and_returned_in_order() -> None:
    addrs = [0x100000 + 0x1000 * ((i * 37) % 101) for i in range(101)]
    mem, reader = batch_reader({a: make_g(a, a >> 12, G_WAITING) for a in addrs})
    got = reader.read_gs(addrs)
    assert [g.gaddr if g else 0 for g in got] == addrs
    assert all(len(b) <= 101 for b in mem.batches)


def test_stacks_reads_windows_in_one_batch_and_retries_a_g_that_moves() -> None:
    lo = 0x10000
    gs: dict[int, bytes | None] = {}
    for i in range(5):
        gs[0xA000 + 0x400 * i] = make_g(0xA000 + 0x400 * i, 20 + i, G_WAITING,
                                        lo=lo + 0x2000 * i)
    mem, reader = batch_reader(gs)
    for i in range(5):
        stack = bytearray(0x2000)
        struct.pack_into("<QQ", stack, 0x1F10, 0, 0x404000 + i)
        mem.blobs[lo + 0x2000 * i] = bytes(stack)
    snaps = reader.scan().goroutines
    mem.batches.clear()
    moved = [0]

    def move(addr: int) -> None:  # goroutine 22 moves once, after its stack was read
        if addr == 0xA800 and len(mem.batches) >= 2 and not moved[0]:
            moved[0] = 1
            mem.blobs[0xA800] = make_g(0xA800, 22, G_WAITING, lo=lo + 0x4000, sp_off=0x1E00)
            stack = bytearray(mem.blobs[lo + 0x4000])
            struct.pack_into("<QQ", stack, 0x1E10, 0, 0x505050)
            mem.blobs[lo + 0x4000] = bytes(stack)

    mem.on_read = move
    stats = StackStats()
    got = reader.stacks(snaps, stats=stats)
    assert [st.pcs[-1] if st else None for st in got] == [0x404000, 0x404001, 0x505050,
                                                          0x404003, 0x404004]
    assert mem.batches[0] == [(lo + 0x2000 * i + 0x1F00, 0x100) for i in range(5)]
    assert moved[0] and stats.changed == 1 and stats.gone == 0 and stats.gave_up == 0
    assert got[2] is not None and got[2].g.sched_sp == lo + 0x4000 + 0x1E00


def test_stacks_skips_a_g_that_keeps_moving_or_exits_and_counts_it() -> None:
    lo = 0x10000
    mem, reader = batch_reader({0xA000: make_g(0xA000, 5, G_WAITING),
                                0xB000: make_g(0xB000, 6, G_WAITING)})
    mem.blobs[lo] = bytes(0x2000)
    a, b = reader.scan().goroutines
    flip = [0]

    def churn(addr: int) -> None:
        if addr == 0xA000:  # every read of g 5 sees a new resume point
            flip[0] += 1
            mem.blobs[0xA000] = make_g(0xA000, 5, G_WAITING, sp_off=0x1F00 - 0x10 * flip[0])

    mem.on_read = churn
    mem.blobs[0xB000] = make_g(0xB000, 66, G_WAITING)  # g of goroutine 6 reused by 66
    stats = StackStats()
    assert reader.stacks([a, b], stats=stats) == [None, None]
    assert stats.gave_up == 1 and stats.gone == 1 and stats.changed == TRIES - 1


def test_read_g_reads_tracking_seq_and_ignores_the_scan_bit() -> None:
    raw = bytearray(make_g(0xA000, 42, G_WAITING | 0x1000))
    raw[OFF.tracking_seq or 0] = 200
    mem, _ = memory_with_gs({})
    mem.blobs[0xA000] = bytes(raw)
    g = read_g(mem, OFF, 0xA000)
    assert g is not None and g.tracking_seq == 200 and g.status == G_WAITING
    g = read_g(mem, replace(OFF, tracking_seq=None), 0xA000)
    assert g is not None and g.tracking_seq == 0


# -- ProcessMemory.read_batch on this very process ----------------------------------------------


PAGE = mmap.PAGESIZE


@pytest.fixture
def pages() -> Iterator[int]:
    """Three pages of this process, the middle one unmapped: address of the first."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    base = libc.mmap(None, 3 * PAGE, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    ctypes.memset(base, 0x11, PAGE)
    ctypes.memset(base + 2 * PAGE, 0x33, PAGE)
    libc.munmap(base + PAGE, PAGE)
    yield base
    libc.munmap(base, 3 * PAGE)


@pytest.mark.parametrize("how", ["process_vm_readv", "pread", "not permitted"])
def test_read_batch_marks_unreadable_ranges_and_reads_the_rest(pages: int, how: str) -> None:
    mem = ProcessMemory(os.getpid())
    if how == "pread":
        mem.vm_readv = None
    elif how == "not permitted":
        def refuse(*_: int) -> int:
            ctypes.set_errno(errno.EPERM)
            return -1
        mem.vm_readv = refuse
    ranges = [(pages, 16), (pages + PAGE - 8, 16), (pages + PAGE, 8), (pages + 2 * PAGE, 8),
              (pages + 8, 0), (pages + 2 * PAGE + 8, 24)]
    buf, failed = mem.read_batch([a for a, _ in ranges], [n for _, n in ranges])
    assert failed == [1, 2]  # across into the hole, and inside it
    assert bytes(buf[:16]) == b"\x11" * 16 and bytes(buf[40:48]) == b"\x33" * 8
    assert bytes(buf[48:72]) == b"\x33" * 24 and mem.failed_reads == 2
    assert mem.read_many([(pages, 4), (pages + PAGE, 4)]) == [b"\x11" * 4, None]
    if how == "not permitted":
        assert mem.vm_readv is None  # fell back to /proc/PID/mem for good
    mem.close()


def test_read_batch_goes_on_after_a_partial_call(pages: int) -> None:
    """A call may stop short (the kernel copies what it can up to a fault): the ranges before
    are kept, the one it stopped in is tried alone, the rest read by the next call."""
    mem = ProcessMemory(os.getpid())
    real = mem.vm_readv
    assert real is not None
    calls: list[int] = []

    def short(pid: int, local: int, n: int, remote: int, rn: int, flags: int) -> int:
        calls.append(n)
        if n > 1:  # copy the first range and half of the second, as after a fault
            got = real(pid, local, 1, remote, 1, flags)
            return got + 4
        return real(pid, local, n, remote, rn, flags)

    mem.vm_readv = short
    addrs = [pages + 16 * i for i in range(6)]
    buf, failed = mem.read_batch(addrs, [16] * 6)
    assert failed == [] and bytes(buf) == b"\x11" * 96
    assert calls == [6, 1, 4, 1, 2, 1]  # each short call: the stopped range again, alone
    big = list(range(pages, pages + 2048 * 2, 2))  # more ranges than one call takes
    buf, failed = ProcessMemory(os.getpid()).read_batch(big, [2] * len(big))
    assert failed == [] and len(buf) == 4096 and set(buf) == {0x11}
    mem.close()


def test_arm64_stacks_start_from_the_frame_record_below_sp() -> None:
    """On arm64 sched.bp is RSP - 8 (`MOVD R29, -8(RSP)`): the walk starts 8 bytes below the
    saved SP, where amd64's would stop at once."""
    lo = 0x10000
    g = bytearray(make_g(0xA000, 30, G_WAITING, lo=lo))
    struct.pack_into("<Q", g, OFF.sched_bp, lo + 0x1F00 - 8)
    mem, reader = batch_reader({0xA000: bytes(g)})
    stack = bytearray(0x2000)
    struct.pack_into("<QQ", stack, 0x1F00 - 8, lo + 0x1F40, 0x404000)  # [saved fp, saved lr]
    struct.pack_into("<QQ", stack, 0x1F40, 0, 0x405000)
    mem.blobs[lo] = bytes(stack)
    (snap,) = reader.scan().goroutines
    (amd64,) = reader.stacks([snap])
    assert amd64 is not None and amd64.pcs == [0x401234]
    reader.record_below_sp = 8
    (arm64,) = reader.stacks([snap])
    assert arm64 is not None and arm64.pcs == [0x401234, 0x404000, 0x405000]
