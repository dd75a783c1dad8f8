"""`gotrace agent`: every Go process of the host, traced continuously, in Prometheus."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from rich.console import Console

from gotrace import __version__
from gotrace.analysis.fleet import Fleet, FleetOptions
from gotrace.analysis.ignore import Rule
from gotrace.commands.common import StopSignal
from gotrace.durations import format_duration
from gotrace.errors import BadInput
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.discovery import Discovery
from gotrace.live.environment import require_tracing
from gotrace.render.prometheus import FleetCollector

POLL_S = 1.0  # how often /proc is listed: a new process is traced within about a second
SLEEP_S = 0.2  # longest sleep of the loop, so that a signal ends it promptly


@dataclass
class AgentOptions:
    listen: str = "127.0.0.1:9464"
    match: str | None = None
    threshold_s: float = 600.0
    interval_s: float = 15.0
    max_sites: int = 20
    no_bpf: bool = False
    probe_after_s: float = 10.0
    max_goroutines: int = DEFAULT_MAX_GOROUTINES
    ignore: tuple[Rule, ...] = ()
    baseline: bool = False


def parse_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT or :PORT (every address) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInput(f"--listen {listen!r}: expected HOST:PORT (e.g. 127.0.0.1:9464)")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def log_console() -> Console:
    """stderr through a copy of file descriptor 2: BCC's compile in the probe thread points
    fd 2 (and sys.stderr) elsewhere for a moment, and the agent's lines must not vanish."""
    return Console(file=os.fdopen(os.dup(2), "w", buffering=1), highlight=False,
                   soft_wrap=True)


def run(opts: AgentOptions) -> int:
    host, port = parse_listen(opts.listen)
    try:
        match = re.compile(opts.match) if opts.match is not None else None
    except re.error as e:
        raise BadInput(f"--match {opts.match!r}: {e}") from None
    if not opts.no_bpf:
        require_tracing()  # exit 3 with the fix; --no-bpf needs only memory reads
    err = log_console()

    def log(line: str) -> None:
        err.print(f"gotrace agent: {line}", markup=False)

    fleet = Fleet(FleetOptions(opts.threshold_s, opts.interval_s, opts.max_sites,
                               None if opts.no_bpf else opts.probe_after_s,
                               opts.max_goroutines, opts.ignore, opts.baseline), log)
    registry = CollectorRegistry()
    registry.register(FleetCollector(fleet.snapshot, __version__))
    ProcessCollector(registry=registry)  # the agent's own memory and file descriptors
    try:
        server, thread = start_http_server(port, host, registry)
    except OSError as e:
        fleet.close()
        raise BadInput(f"cannot listen on {opts.listen}: {e.strerror or e}") from None
    discovery = Discovery(match)
    stop = StopSignal()
    try:
        probes = ("memory reads only (--no-bpf)" if opts.no_bpf else
                  f"go statement probes after {format_duration(opts.probe_after_s)}")
        log(f"metrics on http://{opts.listen}/metrics; tracing Go processes"
            f"{f' matching {opts.match!r}' if opts.match else ''}: goroutines read every "
            f"{format_duration(opts.interval_s)}, leak suspects parked ≥ "
            f"{format_duration(opts.threshold_s)}, {probes}. Ctrl-C or SIGTERM to stop.")
        next_poll = 0.0
        while stop.received is None:
            now = time.monotonic()
            if now >= next_poll:
                fleet.sync(discovery.poll(), now)
                next_poll = now + POLL_S
            pause = fleet.step(time.monotonic())
            time.sleep(max(0.0, min(pause, next_poll - time.monotonic(), SLEEP_S)))
    finally:
        traced = len(fleet.traced)
        fleet.close()
        server.shutdown()
        server.server_close()
        thread.join(5)
        stop.restore()
    log(f"stopped; detached from {traced} process{'es' if traced != 1 else ''}")
    return 0
