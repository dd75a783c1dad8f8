"""A binary reduced to what gotrace.frames.Symbols asks of it: PC -> frames."""

from __future__ import annotations

from gotrace.binary.pclntab import Frame, Func


class FakeCode:
    """Frames per PC (innermost first, inlined frames expanded), whatever the PC's kind."""

    def __init__(self, frames: dict[int, list[Frame]], goroot: str | None = None) -> None:
        self._frames = frames
        self._goroot = goroot

    def frames(self, pc: int, *, is_return_address: bool) -> list[Frame]:
        return list(self._frames.get(pc, []))

    def func_at(self, pc: int) -> Func | None:
        fr = self._frames.get(pc)
        return Func(fr[-1].function, pc, pc + 1) if fr else None

    def lookup(self, name: str) -> Func | None:
        return None

    def goroot(self) -> str | None:
        return self._goroot
