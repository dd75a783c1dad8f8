"""Fuzz the runtime.g decoder and the frame-pointer unwinder against a fake process memory.
Input: a selector u8, 17 u16 offsets of runtime.g (0xffff: absent, for the optional ones),
the g's address u64, then the memory, mapped at 0x1000 (tests/fuzz/seeds.py gdecode_seeds).
Selectors below 0x80 use the built-in offsets of Go 1.(19 + selector % 9), whose decoders are
built once; the others the fuzzed offsets (a decoder is compiled per input: ~1 ms)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import contract, instrumented, main

with instrumented():
    from gotrace.binary.offsets import TABLE, GOffsets, table_offsets
    from gotrace.live.goroutines import read_g, unwind, unwind_parked
    from gotrace.live.process import ProcessMemory

TABLES = [table_offsets(minor) for minor in sorted(TABLE)]
BASE = 0x1000
NONE16 = 0xFFFF
_HEAD = struct.Struct("<B17HQ")


class FakeMemory:
    """ProcessMemory's contract: exactly `size` bytes, or None."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, addr: int, size: int) -> bytes | None:
        off = addr - BASE
        if off < 0 or size < 0 or off + size > len(self.data):
            return None
        return self.data[off : off + size]

    def u64(self, addr: int) -> int | None:
        raw = self.read(addr, 8)
        return None if raw is None else int.from_bytes(raw, "little")


def offsets(v: tuple[int, ...]) -> GOffsets:
    def opt(x: int) -> int | None:
        return None if x == NONE16 else x

    return GOffsets(status=v[0], goid=v[1], waitreason=v[2], gopc=v[3], startpc=v[4],
                    parent_goid=opt(v[5]), sched_sp=v[6], sched_pc=v[7], sched_bp=v[8],
                    stack_lo=v[9], stack_hi=v[10], m=v[11], source="fuzz",
                    syscallsp=opt(v[12]), syscallpc=opt(v[13]), syscallbp=opt(v[14]),
                    waitsince=opt(v[15]), tracking_seq=opt(v[16]))


@contract
def test_one_input(data: bytes) -> None:
    if len(data) < _HEAD.size:
        return
    selector, *offs, gaddr = _HEAD.unpack_from(data)
    mem = cast(ProcessMemory, FakeMemory(data[_HEAD.size :]))
    off = TABLES[selector % len(TABLES)] if selector < 0x80 else offsets(tuple(offs))
    g = read_g(mem, off, gaddr)
    if g is None:
        return
    unwind_parked(mem, g)
    unwind(mem, g.syscallpc, g.syscallsp, g.syscallbp, g.stack_lo, g.stack_hi)


if __name__ == "__main__":
    main(test_one_input)
