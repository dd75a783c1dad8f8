"""What every command shares: finding the target and its binary, Ctrl-C and SIGTERM, the wait
loop that ends at a deadline, a signal or the target's exit, and the banner on stderr.

Commands stay thin (options, wiring, exit codes); anything two of them need lives here.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from types import FrameType

from rich.console import Console

from gotrace.binary.gobinary import GoBinary
from gotrace.live.process import Target

POLL_S = 0.1  # how often a waiting command looks at the clock, signals and the target


def open_target(pid: int) -> tuple[Target, GoBinary]:
    """The process and its executable (read through /proc/PID/exe): bad input raises exit 2."""
    target = Target.find(pid)
    gb = GoBinary.open(target.exe, display_name=f"PID {pid} ({target.exe_display})")
    return target, gb


class StopSignal:
    """Ctrl-C and SIGTERM end the loop at the next step; the final output still comes out."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def run_until(target: Target, stop: StopSignal, deadline: float | None,
              step: Callable[[float], float]) -> bool:
    """Call step(now) until a signal, the deadline (time.monotonic()) or the target's exit.

    step does the command's work and returns how long it may sleep before the next call.
    Returns True when the loop ended because the target exited.
    """
    while stop.received is None:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        if not target.alive():
            return True
        pause = step(now)
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        if pause > 0:
            time.sleep(min(pause, POLL_S))
    return False


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def banner(err: Console, command: str, target: Target, gb: GoBinary, probes: int,
           what: str) -> None:
    """`gotrace CMD attached to PID (exe, version): N uprobes...; what. Ctrl-C to stop.`"""
    err.print(f"[bold]{command}[/] attached to PID {target.pid} ({target.exe_display}, "
              f"{gb.go_version}): {probes} uprobes{what}")
