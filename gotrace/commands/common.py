"""What every command shares: finding the target and its binary, Ctrl-C and SIGTERM, the wait
loop that ends at a deadline, a signal or the target's exit, and the banner on stderr.

Commands stay thin (options, wiring, exit codes); anything two of them need lives here.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from rich.console import Console

from gotrace.binary.gobinary import GoBinary
from gotrace.errors import BadInput, CannotTrace
from gotrace.live.process import Target
from gotrace.live.tracer import HOST_ARCH

POLL_S = 0.1  # how often a waiting command looks at the clock, signals and the target


def open_target(pid: int) -> tuple[Target, GoBinary]:
    """The process and its executable (read through /proc/PID/exe): bad input raises exit 2."""
    target = Target.find(pid)
    gb = GoBinary.open(target.exe, display_name=f"PID {pid} ({target.exe_display})")
    if target.gone() is not None:  # the binary read may be another process's (PID reused)
        raise BadInput(f"PID {pid} exited or exec'd another program while gotrace read it")
    if gb.arch != HOST_ARCH:
        raise CannotTrace(f"PID {pid} runs a linux/{gb.arch} program on a linux/{HOST_ARCH} "
                          "machine (emulated?): gotrace traces programs of the machine's own "
                          "architecture")
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
              step: Callable[[float], float], err: Console | None = None) -> str | None:
    """Call step(now) until a signal, the deadline (time.monotonic()) or the target's end.

    step does the command's work and returns how long it may sleep before the next call.
    Returns None when a signal or the deadline ended the loop, else how the target ended:
    "exited" or "exec" (it runs another program now, which gotrace does not follow). Tells
    err once when the target is stopped (SIGSTOP, a debugger) and when it runs again.
    """
    stopped = False
    while stop.received is None:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return None
        gone = target.gone()
        if gone is not None:
            if err is not None:
                err.print(gone_message(target, gone))
            return gone
        if err is not None and target.stopped() != stopped:
            stopped = not stopped
            err.print(f"[yellow]gotrace: PID {target.pid} is stopped (SIGSTOP or a debugger): "
                      "its goroutines cannot run, so park times keep growing[/]" if stopped
                      else f"gotrace: PID {target.pid} runs again")
        pause = step(now)
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        if pause > 0:
            time.sleep(min(pause, POLL_S))
    return None


def gone_message(target: Target, how: str) -> str:
    if how == "exec":
        try:
            now = os.readlink(target.exe)
        except OSError:
            now = "another program"
        return (f"gotrace: PID {target.pid} exec'd {now}; gotrace does not follow it (what it "
                "knew came from the old binary): run gotrace again to trace the new program")
    return f"gotrace: PID {target.pid} exited"


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def banner(err: Console, command: str, target: Target, gb: GoBinary, probes: int,
           what: str) -> None:
    """`gotrace CMD attached to PID (exe, version): N uprobes...; what. Ctrl-C to stop.`"""
    err.print(f"[bold]{command}[/] attached to PID {target.pid} ({target.exe_display}, "
              f"{gb.go_version}): {probes} uprobe{'' if probes == 1 else 's'}{what}")
