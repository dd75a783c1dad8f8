"""Fuzz allgs discovery (find_allgs): the symbols, else decode_allgadd on the body of
runtime.allgadd (its range is the container's `fuzz:runtime.allgadd`; a stand-in pclntab
names it; the seeds without symbols reach the decoder)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import MemImage, contract, instrumented, main, unpack

with instrumented():
    from gotrace.binary.allgs import find_allgs
    from gotrace.binary.elf import ElfImage
    from gotrace.binary.pclntab import Func, Pclntab


class OneFunc:
    """The one lookup find_allgs makes of a Pclntab."""

    def __init__(self, func: Func | None) -> None:
        self.func = func

    def lookup(self, name: str) -> Func | None:
        return self.func if self.func is not None and name == self.func.name else None


@contract
def test_one_input(data: bytes) -> None:
    img = MemImage(unpack(data))
    sym = img.symbol("fuzz:runtime.allgadd")
    func = None if sym is None else Func("runtime.allgadd", sym[0], sym[0] + sym[1])
    find_allgs(cast(ElfImage, img), cast(Pclntab, OneFunc(func)))


if __name__ == "__main__":
    main(test_one_input)
