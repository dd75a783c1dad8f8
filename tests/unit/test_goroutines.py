"""Reading a g and unwinding a parked goroutine from (fake) process memory."""

from __future__ import annotations

import struct

from gotrace.binary.offsets import table_offsets
from gotrace.live.goroutines import G_WAITING, GSnapshot, read_g, unwind_parked

LO, HI = 0xC000100000, 0xC000108000


class FakeMemory:
    def __init__(self, words: dict[int, int], blobs: dict[int, bytes] | None = None) -> None:
        self.words = words
        self.blobs = blobs or {}

    def read(self, addr: int, size: int) -> bytes | None:
        for base, blob in self.blobs.items():
            if base <= addr and addr + size <= base + len(blob):
                return blob[addr - base : addr - base + size]
        out = b""
        for a in range(addr, addr + size, 8):
            if a not in self.words:
                return None
            out += struct.pack("<Q", self.words[a])
        return out


def snapshot(bp: int, sp: int = LO + 0x100) -> GSnapshot:
    return GSnapshot(goid=7, status=G_WAITING, wait_reason=14, sched_pc=0x401000, sched_sp=sp,
                     sched_bp=bp, stack_lo=LO, stack_hi=HI)


def test_frame_pointer_chain_is_followed_inside_the_stack() -> None:
    f1, f2, f3 = LO + 0x200, LO + 0x300, LO + 0x400
    mem = FakeMemory({f1: f2, f1 + 8: 0x402000, f2: f3, f2 + 8: 0x403000, f3: 0, f3 + 8: 0x404000})
    assert unwind_parked(mem, snapshot(f1)) == [0x401000, 0x402000, 0x403000, 0x404000]  # type: ignore[arg-type]


def test_walk_stops_at_a_pointer_leaving_the_stack_or_going_down() -> None:
    f1 = LO + 0x200
    out_of_stack = FakeMemory({f1: 0xDEAD0000, f1 + 8: 0x402000})
    assert unwind_parked(out_of_stack, snapshot(f1)) == [0x401000, 0x402000]  # type: ignore[arg-type]
    loop = FakeMemory({f1: f1 - 0x10, f1 + 8: 0x402000})
    assert unwind_parked(loop, snapshot(f1)) == [0x401000, 0x402000]  # type: ignore[arg-type]


def test_unreadable_memory_ends_the_walk_quietly() -> None:
    assert unwind_parked(FakeMemory({}), snapshot(LO + 0x200)) == [0x401000]  # type: ignore[arg-type]


def test_read_g_masks_the_scan_bit_and_reads_go127_offsets() -> None:
    off = table_offsets(27)
    raw = bytearray(512)
    struct.pack_into("<QQ", raw, off.stack_lo, LO, HI)
    struct.pack_into("<Q", raw, off.goid, 4242)
    struct.pack_into("<I", raw, off.status, 0x1000 | G_WAITING)
    raw[off.waitreason] = 19
    struct.pack_into("<QQ", raw, off.sched_sp, LO + 0x100, 0x401000)
    struct.pack_into("<Q", raw, off.sched_bp, LO + 0x200)
    g = read_g(FakeMemory({}, {0xC000002000: bytes(raw)}), off, 0xC000002000)  # type: ignore[arg-type]
    assert g is not None and g.parked
    assert (g.goid, g.wait_reason, g.sched_pc, g.stack_hi) == (4242, 19, 0x401000, HI)
    assert read_g(FakeMemory({}), off, 0x1000) is None  # type: ignore[arg-type]
