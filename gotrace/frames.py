"""Runtime PCs of one process to frames, through the binary's pclntab and the PIE load bias."""

from __future__ import annotations

from functools import lru_cache

from gotrace.binary.pclntab import Frame, Pclntab


class ProcessSymbolizer:
    def __init__(self, pcln: Pclntab, bias: int = 0) -> None:
        self.pcln = pcln
        self.bias = bias
        self.goroot = pcln.goroot()
        self._frames = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, pc: int, is_return_address: bool) -> tuple[Frame, ...]:
        return tuple(self.pcln.frames(pc - self.bias, is_return_address=is_return_address))

    def frames(self, pc: int, *, is_return_address: bool) -> list[Frame]:
        return list(self._frames(pc, is_return_address))

    def function(self, pc: int) -> str:
        f = self.pcln.func_at(pc - self.bias)
        return f.name if f else f"{pc:#x}"
