"""Fuzz instruction decoding for probe placement: entry_probe, call_sites, ret_sites, on x86-64
and on arm64 (the call target doubles as morestack's address for the arm64 entry probe).
Input: [operation u8][start address u64][call target u64][code]; one operation per input
(each decodes the code again: doing all of them would multiply the cost of an execution)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import contract, instrumented, main

with instrumented():
    from gotrace.binary.disasm import (
        call_sites,
        call_sites_arm64,
        entry_probe,
        entry_probe_arm64,
        ret_sites,
        ret_sites_arm64,
    )
    from gotrace.errors import BadInput


_HEAD = struct.Struct("<BQQ")


class Code:
    """Code bytes at an address; reads outside fail as ElfImage.read does."""

    def __init__(self, start: int, code: bytes) -> None:
        self.start = start
        self.code = code

    def read(self, vaddr: int, size: int) -> bytes:
        off = vaddr - self.start
        if off < 0 or size < 0 or off + size > len(self.code):
            raise BadInput(f"address {vaddr:#x} is not in the code")
        return self.code[off : off + size]


@contract
def test_one_input(data: bytes) -> None:
    if len(data) < _HEAD.size:
        return
    op, start, target = _HEAD.unpack_from(data)
    code = Code(start, data[_HEAD.size :])
    end = start + len(code.code)
    op %= 6
    if op == 0:
        entry_probe(code, start, end)
    elif op == 1:
        call_sites(code, start, end, target)
    elif op == 2:
        ret_sites(code, start, end)
    elif op == 3:
        entry_probe_arm64(code, start, end, morestack=frozenset({target}))
    elif op == 4:
        call_sites_arm64(code, start, end, target)
    else:
        ret_sites_arm64(code, start, end)


if __name__ == "__main__":
    main(test_one_input)
