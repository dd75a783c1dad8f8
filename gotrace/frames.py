"""Runtime PCs of one process to the frames users read, and which of them are the runtime's.

One home for both questions, so that every command names the same "created at" and "parked
at" frame for the same goroutine: attach's report, dump, tail's screen and its JSON, hist and
the pprof files all ask `Symbols`. Lookups go through the binary's pclntab with the PIE load
bias removed, and are cached per PC and per stack (goroutines of one leak share their stacks).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from gotrace.binary.codemap import RUNTIME, STD, USER, classify
from gotrace.binary.pclntab import Frame, Func

UNKNOWN = Frame("?", "?", 0)
# Goroutine 1 has no go statement: the runtime starts runtime.main from assembly (rt0_go),
# through newproc's ABI wrapper. Every output shows it as this pseudo-frame, as Go's own
# tracebacks print no "created by" for it.
MAIN_GOROUTINE = Frame("(main goroutine)", "", 0)
_MAIN_CREATORS = frozenset({"runtime.rt0_go", "runtime.newproc"})


class CodeTable(Protocol):
    """What Symbols needs of a binary (gotrace.binary.pclntab.Pclntab; fakes in tests)."""

    def frames(self, pc: int, *, is_return_address: bool) -> list[Frame]: ...

    def func_at(self, pc: int) -> Func | None: ...

    def lookup(self, name: str) -> Func | None: ...

    def goroot(self) -> str | None: ...


def code_kind(f: Frame, goroot: str | None) -> int:
    """USER, STD or RUNTIME (gotrace.binary.codemap's rule, the one rule gotrace has)."""
    return classify(f.function, f.file, goroot)


def parked_at(frames: Sequence[Frame], goroot: str | None) -> Frame | None:
    """The frame users care about in a parked stack: the first in their own code, else the
    first standard-library frame outside the runtime, else the outermost (which names a
    runtime goroutine: runtime.bgsweep...)."""
    std = None
    for f in frames:
        kind = code_kind(f, goroot)
        if kind == USER:
            return f
        if kind == STD and std is None:
            std = f
    if std is not None:
        return std
    return frames[-1] if frames else None


def is_system(start_function: str) -> bool:
    """Go's own rule (isSystemGoroutine): runtime goroutines other than main are the runtime's."""
    return start_function.startswith("runtime.") and start_function != "runtime.main"


def is_runtime(f: Frame, goroot: str | None) -> bool:
    return code_kind(f, goroot) == RUNTIME


class Symbols:
    """PCs of one process (runtime addresses) to frames, cached."""

    def __init__(self, pcln: CodeTable, bias: int = 0) -> None:
        self.pcln = pcln
        self.bias = bias
        self.goroot = pcln.goroot()
        preempt = pcln.lookup("runtime.asyncPreempt")
        self._async_preempt = preempt.entry if preempt else None
        self._frames = lru_cache(maxsize=65536)(self._lookup)
        self.stack = lru_cache(maxsize=8192)(self._stack)
        self.creation_stack = lru_cache(maxsize=8192)(self._creation_stack)
        self.parked = lru_cache(maxsize=8192)(self._parked)
        self._go: dict[int, Frame] = {}
        self._park: dict[int, Frame | None] = {}

    def _lookup(self, pc: int, is_return_address: bool) -> tuple[Frame, ...]:
        return tuple(self.pcln.frames(pc - self.bias, is_return_address=is_return_address))

    def frames(self, pc: int, *, is_return_address: bool) -> list[Frame]:
        """Logical frames at pc, innermost first, inlined calls expanded."""
        return list(self._frames(pc, is_return_address))

    def function(self, pc: int) -> str:
        f = self.pcln.func_at(pc - self.bias)
        return f.name if f else f"{pc:#x}"

    def go_statement(self, gopc: int) -> Frame:
        """The `go` statement at gopc (what Go prints under "created by")."""
        got = self._go.get(gopc)
        if got is None:
            fr = self._frames(gopc, True) if gopc else ()
            got = fr[0] if fr else UNKNOWN
            if got.function in _MAIN_CREATORS:
                got = MAIN_GOROUTINE
            self._go[gopc] = got
        return got

    def _stack(self, pcs: tuple[int, ...], leaf_is_return: bool = True) -> tuple[Frame, ...]:
        """Frames of a stack of PCs, innermost first, without runtime.goexit.

        Every PC is a return address except possibly the leaf (a probe's own PC) and the one
        asyncPreempt interrupted: the signal handler pushed it as if called, so it is the exact
        instruction.
        """
        out: list[Frame] = []
        exact = not leaf_is_return
        for pc in pcs:
            out.extend(self._frames(pc, not exact))
            f = self.pcln.func_at(pc - self.bias)
            exact = f is not None and f.entry == self._async_preempt
        return tuple(f for f in out if f.function != "runtime.goexit")

    def _parked(self, pcs: tuple[int, ...], leaf_is_return: bool = True
                ) -> tuple[tuple[Frame, ...], Frame | None]:
        """A parked stack's frames and its parked-at frame (parked_at), once per stack."""
        frames = self._stack(pcs, leaf_is_return)
        return frames, parked_at(frames, self.goroot)

    def _creation_stack(self, gopc: int, pcs: tuple[int, ...]) -> tuple[Frame, ...]:
        """The go statement (its inlined frames expanded), then its callers: a probe's stack is
        cut where it reaches gopc."""
        try:
            rest = pcs[pcs.index(gopc) + 1 :]
        except ValueError:
            rest = ()
        head = self._frames(gopc, True) if gopc else ()
        if not head:
            head = (UNKNOWN,)
        elif head[0].function in _MAIN_CREATORS:
            head = (MAIN_GOROUTINE,)
        return (*head, *self._stack(rest))

    def parked_at_pc(self, pc: int) -> Frame | None:
        """The parked-at frame of a PC that tail's BPF walk already chose (inlined frames
        expanded, then the same rule as every parked stack)."""
        if pc not in self._park:
            self._park[pc] = parked_at(self._frames(pc, True), self.goroot) if pc else None
        return self._park[pc]
