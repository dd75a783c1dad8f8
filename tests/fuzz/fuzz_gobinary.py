"""Fuzz the top level, GoBinary.open (no cache): every reader in the order gotrace runs them,
then what the commands ask of the result (the rest has its own harness, fuzz_allgs...).
Input: a mini Go ELF file (tests/fuzz/seeds.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import ScratchFile, contract, instrumented, main

with instrumented():  # gotrace only: pyelftools is fuzz_elf's, and costly to trace
    import gotrace.binary.dwarf  # noqa: F401 - imported lazily by offsets: instrument it here
    from gotrace.binary.gobinary import GoBinary

_scratch = ScratchFile("gobinary")


@contract
def test_one_input(data: bytes) -> None:
    gb = GoBinary.open(_scratch.write(data), display_name="fuzz-input", use_cache=False)
    try:
        gb.warnings()
        _ = gb.cgo
        for v in (0, 1, 2, 255):
            gb.wait_reason(v)
    finally:
        gb.img.close()


if __name__ == "__main__":
    main(test_one_input)
