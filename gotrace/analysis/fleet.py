"""`gotrace agent`'s analysis: one leak session per Go process of the host, the periodic
report of each, and the figures a scrape shows.

Each process found gets attach's session at once, memory-only (LeakSession with no tracer:
no BPF program to compile, a process is traced within milliseconds of being found). The
go statement probes (a LeakTracer: creation stacks) are compiled only
for processes still running after a grace period, in one worker thread, one compile at a time:
compiling costs 0.5-2 s of CPU, which a host starting 100 short-lived Go programs a minute
would otherwise pay 100 times a minute, and the main loop keeps finding and reading processes
meanwhile. Every interval each session reads its process's goroutines and makes a report;
the figures of the last report are published as one immutable snapshot that the HTTP
thread reads on each scrape. A process that exits is dropped at the next poll and all its file
descriptors (memory, binary, BPF) are closed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gotrace.analysis.ignore import Ignorer, Rule
from gotrace.analysis.leaks import LeakSession
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.pclntab import Frame
from gotrace.errors import CannotTrace, GotraceError
from gotrace.live.bpfdefs import DEFAULT_MAX_GOROUTINES
from gotrace.live.discovery import Container, ExeKey, GoProcess, container_of, exe_name
from gotrace.live.process import Target
from gotrace.live.tracer import LeakTracer
from gotrace.model import LOST_REASONS, LeakReport

K = TypeVar("K")
Site = Frame | None  # a go statement; None: the sites beyond --max-sites, summed ("other")
UNUSED_BINARIES = 16  # binaries kept open after their last process exited (churn reuses them)


def cap_sites(live: Mapping[K, int], suspects: Mapping[tuple[K, str], int],
              max_sites: int) -> tuple[dict[K | None, int], dict[tuple[K | None, str], int]]:
    """Keep the max_sites sites with the most live goroutines (ties: those with more leak
    suspects, then first seen); sum the rest under None, in both maps, so a process adds at
    most max_sites + 1 site labels."""
    parked: dict[K, int] = {}
    for (k, _), n in suspects.items():
        parked[k] = parked.get(k, 0) + n
    kept = {k for k, _ in sorted(live.items(),
                                 key=lambda kv: (-kv[1], -parked.get(kv[0], 0)))[:max_sites]}
    sites: dict[K | None, int] = {}
    for k, n in live.items():
        key = k if k in kept else None
        sites[key] = sites.get(key, 0) + n
    groups: dict[tuple[K | None, str], int] = {}
    for (k, reason), n in suspects.items():
        gkey = (k if k in kept else None, reason)
        groups[gkey] = groups.get(gkey, 0) + n
    return sites, groups


class Monotonic:
    """A Prometheus counter fed from a source that restarts (the probe added to a session
    counts from zero) or wobbles (exited is estimated from live): never goes down."""

    def __init__(self) -> None:
        self.total = 0
        self.last = 0

    def update(self, raw: int) -> int:
        if raw > self.last:
            self.total += raw - self.last
            self.last = raw
        return self.total

    def restart(self) -> None:
        """The source counts from zero again."""
        self.last = 0


@dataclass(frozen=True)
class Labels:
    pid: int
    exe: str
    container_id: str
    pod_uid: str


@dataclass(frozen=True)
class Figures:
    """One process as a scrape shows it: the last report's numbers."""

    labels: Labels
    live: int
    sites: dict[Site, int]  # live goroutines per go statement, capped
    suspects: dict[tuple[Site, str], int]  # (go statement, wait reason) -> parked past threshold
    created: int
    exited: int
    lost: dict[str, int]  # every reason of LOST_REASONS
    ignored: dict[str, int] = field(default_factory=dict)  # ignore rule -> goroutines hidden


@dataclass
class Traced:
    """One process being traced, and where its session stands."""

    found: GoProcess
    target: Target
    gb: GoBinary
    session: LeakSession
    labels: Labels
    since: float  # time.monotonic() when tracing began
    next_report: float
    probe: str = "none"  # none | pending | attached | failed | off
    created: Monotonic = field(default_factory=Monotonic)
    exited: Monotonic = field(default_factory=Monotonic)
    lost: dict[str, Monotonic] = field(
        default_factory=lambda: {k: Monotonic() for k in LOST_REASONS})
    unreadable: int = 0  # goroutines the reads could not read, summed over reads
    figures: Figures | None = None


class Binaries:
    """Open Go binaries shared by the processes that run them (one file descriptor and one
    parse per executable); a few stay open after their last process exits."""

    def __init__(self, unused: int = UNUSED_BINARIES) -> None:
        self.max_unused = unused
        self.used: dict[ExeKey, tuple[GoBinary, int]] = {}
        self.unused: OrderedDict[ExeKey, GoBinary] = OrderedDict()

    def acquire(self, key: ExeKey, target: Target) -> GoBinary:
        if key in self.used:
            gb, n = self.used[key]
        else:
            got = self.unused.pop(key, None)
            gb, n = (got, 0) if got is not None else (GoBinary.open(
                target.exe, display_name=f"PID {target.pid} ({target.exe_display})"), 0)
        self.used[key] = (gb, n + 1)
        return gb

    def release(self, key: ExeKey) -> None:
        gb, n = self.used.pop(key)
        if n > 1:
            self.used[key] = (gb, n - 1)
            return
        self.unused[key] = gb
        while len(self.unused) > self.max_unused:
            _, old = self.unused.popitem(last=False)
            old.img.close()

    def close(self) -> None:
        for gb, _ in self.used.values():
            gb.img.close()
        for gb in self.unused.values():
            gb.img.close()
        self.used.clear()
        self.unused.clear()

    def __len__(self) -> int:
        return len(self.used) + len(self.unused)


class ProbeWorker:
    """Compiles and attaches go statement probes in one thread, one at a time, so that the main
    loop keeps finding and reading processes during the 0.5-2 s each compile takes."""

    def __init__(self, max_goroutines: int) -> None:
        self.max_goroutines = max_goroutines
        self.jobs: queue.Queue[tuple[GoBinary, Target] | None] = queue.Queue()
        self.done: queue.Queue[tuple[Target, LeakTracer | None, str | None]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="gotrace-probes", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            gb, target = job
            if not target.alive():
                self.done.put((target, None, "exited"))
                continue
            tracer = LeakTracer(gb, target, max_goroutines=self.max_goroutines)
            try:
                tracer.attach()
            except GotraceError as e:
                tracer.close()
                self.done.put((target, None, e.message))
                continue
            except Exception as e:  # never let one binary stop every later compile
                tracer.close()
                self.done.put((target, None, f"{type(e).__name__}: {e}"))
                continue
            self.done.put((target, tracer, None))

    def submit(self, gb: GoBinary, target: Target) -> None:
        self.jobs.put((gb, target))

    def results(self) -> list[tuple[Target, LeakTracer | None, str | None]]:
        out = []
        while True:
            try:
                out.append(self.done.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout: float = 10.0) -> list[tuple[Target, LeakTracer | None, str | None]]:
        """Drop the jobs not started, wait for the one under way; what is left to close."""
        while True:
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        self.jobs.put(None)
        self.thread.join(timeout)
        return self.results()


@dataclass(frozen=True)
class FleetOptions:
    threshold_s: float = 600.0
    interval_s: float = 15.0
    max_sites: int = 20
    probe_after_s: float | None = 10.0  # None: never compile a probe (--no-bpf)
    max_goroutines: int = DEFAULT_MAX_GOROUTINES
    ignore: tuple[Rule, ...] = ()  # --ignore and --ignore-file, as attach applies them
    baseline: bool = False  # hide what existed when tracing began


class Fleet:
    """Every traced process; the main loop calls sync() each poll and step() in between."""

    def __init__(self, opts: FleetOptions, log: Callable[[str], None]) -> None:
        self.opts = opts
        self.log = log
        self.traced: dict[int, Traced] = {}
        self.binaries = Binaries()
        self.worker = ProbeWorker(opts.max_goroutines) if opts.probe_after_s is not None \
            else None
        self._failed: dict[int, GoProcess] = {}  # not traceable: not tried again while it runs
        self._snapshot: tuple[Figures, ...] = ()

    def snapshot(self) -> tuple[Figures, ...]:
        """What a scrape shows now (any thread: an immutable tuple replaced as a whole)."""
        return self._snapshot

    def _publish(self) -> None:
        self._snapshot = tuple(t.figures for t in self.traced.values() if t.figures is not None)

    def sync(self, found: Mapping[int, GoProcess], now: float) -> None:
        """Drop the processes that exited (or exec'd), trace the new ones."""
        changed = False
        for pid, t in list(self.traced.items()):
            gone = t.target.gone()
            if gone is not None:
                what = "exec'd another program" if gone == "exec" else "exited"
                self.log(f"PID {pid} ({t.labels.exe}) {what}; traced {now - t.since:.1f}s")
                self._drop(pid)
                changed = True
        self._failed = {pid: p for pid, p in self._failed.items() if found.get(pid) == p}
        for pid, proc in found.items():
            if pid in self.traced or self._failed.get(pid) == proc:
                continue
            changed |= self._open(proc, now)
        if changed:
            self._publish()

    def _open(self, proc: GoProcess, now: float) -> bool:
        try:
            target = Target.find(proc.pid)
        except CannotTrace as e:  # /proc/PID/exe not ours to read
            self._failed[proc.pid] = proc
            self.log(f"cannot trace PID {proc.pid}: {e.message}")
            return False
        except GotraceError:
            return False  # gone already
        if target.start_time != proc.start_time:
            return False  # another process has this PID now: the next poll sees it
        display = f"PID {proc.pid} ({exe_name(target.exe_display)})"
        gb = None
        try:
            gb = self.binaries.acquire(proc.exe_key, target)
            session = LeakSession(target, gb, None, threshold_s=self.opts.threshold_s,
                                  ignore=Ignorer(list(self.opts.ignore), self.opts.baseline))
        except GotraceError as e:
            if gb is not None:
                self.binaries.release(proc.exe_key)
            self._fail(proc, target, f"cannot trace {display}: {e.message}")
            return False
        try:
            seeded = session.seed()
        except GotraceError as e:
            session.close()
            self.binaries.release(proc.exe_key)
            self._fail(proc, target, f"cannot trace {display}: {e.message}")
            return False
        box = container_of(proc.pid)
        labels = Labels(proc.pid, exe_name(target.exe_display), box.container_id, box.pod_uid)
        t = Traced(proc, target, gb, session, labels, since=now,
                   next_report=now + self.opts.interval_s,
                   probe="none" if self.worker is not None else "off")
        self.traced[proc.pid] = t
        t.figures = self._figures(t, None)
        self.log(f"tracing PID {proc.pid} ({target.exe_display}, {gb.go_version}"
                 f"{_where(box)}): {seeded.goroutines} goroutines")
        return True

    def _fail(self, proc: GoProcess, target: Target, message: str) -> None:
        self._failed[proc.pid] = proc
        if target.alive():  # a process that just exited is no news
            self.log(message)

    def _drop(self, pid: int) -> None:
        t = self.traced.pop(pid)
        if t.session.tracer is not None:
            t.session.tracer.close()
        t.session.close()
        self.binaries.release(t.found.exe_key)

    def step(self, now: float) -> float:
        """Reports that are due, probes to start or finished; seconds until the next due."""
        changed = self._take_probes()
        after = self.opts.probe_after_s
        for t in self.traced.values():
            if after is not None and self.worker is not None and t.probe == "none" \
                    and now - t.since >= after:
                t.probe = "pending"
                self.worker.submit(t.gb, t.target)
            if now >= t.next_report:
                t.next_report = max(t.next_report + self.opts.interval_s, now + 0.1)
                changed |= self._report(t)
        if changed:
            self._publish()
        due = min((t.next_report for t in self.traced.values()), default=now + 1.0)
        return max(0.0, due - time.monotonic())

    def _report(self, t: Traced) -> bool:
        if not t.target.alive():
            return False  # the next sync drops it
        try:
            report = t.session.leak_report(final=False)
        except GotraceError as e:
            if t.target.alive():
                self.log(f"PID {t.labels.pid} ({t.labels.exe}): {e.message}")
            return False
        t.unreadable += t.session.skipped
        t.figures = self._figures(t, report)
        return True

    def _figures(self, t: Traced, report: LeakReport | None) -> Figures:
        s = t.session
        live = Counter(s.sym.go_statement(g.gopc) for g in s.parks.live.values())
        groups: dict[tuple[Frame, str], int] = {}
        if report is not None:
            for sus in report.suspects:
                key = (sus.created_at, sus.wait_reason)
                groups[key] = groups.get(key, 0) + sus.count
        sites, suspects = cap_sites(live, groups, self.opts.max_sites)
        lost = dict.fromkeys(LOST_REASONS, 0)
        created = exited = 0
        if report is not None:
            c = report.counters
            created = t.created.update(c.created)
            exited = t.exited.update(c.exited)
            raw = c.lost.to_json()
            raw["memory_reads"] = max(0, raw["memory_reads"] - s.skipped)  # kernel's part
            lost = {k: t.lost[k].update(n) for k, n in raw.items()}
            lost["memory_reads"] += t.unreadable
        return Figures(t.labels, len(s.parks.live), sites, suspects, created, exited, lost,
                       dict(report.ignored) if report is not None else {})

    def _take_probes(self) -> bool:
        if self.worker is None:
            return False
        changed = False
        for target, tracer, error in self.worker.results():
            t = self.traced.get(target.pid)
            if t is None or t.target is not target or t.probe != "pending":
                if tracer is not None:
                    tracer.close()  # its process exited meanwhile
                continue
            if tracer is None:
                t.probe = "failed"
                if error != "exited" and t.target.alive():
                    self.log(f"PID {t.labels.pid} ({t.labels.exe}): no go statement probes, memory "
                             f"reads only: {error}")
                continue
            try:
                t.session.add_tracer(tracer)
            except GotraceError as e:
                tracer.close()
                t.probe = "failed"
                self.log(f"PID {t.labels.pid} ({t.labels.exe}): {e.message}")
                continue
            t.probe = "attached"
            for m in t.lost.values():
                m.restart()  # the probes' counters start from zero
            self.log(f"PID {t.labels.pid} ({t.labels.exe}): go statement probes attached "
                     f"({len(tracer.armed)} uprobe{'s' if len(tracer.armed) != 1 else ''})")
            changed = True
        return changed

    def close(self) -> None:
        """Detach from everything: probes (the one being compiled too), memory, binaries."""
        if self.worker is not None:
            for _, tracer, _ in self.worker.stop():
                if tracer is not None:
                    tracer.close()
        for pid in list(self.traced):
            self._drop(pid)
        self.binaries.close()
        self._publish()

    @property
    def probes(self) -> int:
        return sum(1 for t in self.traced.values() if t.probe == "attached")


def _where(box: Container) -> str:
    if not box.container_id:
        return ""
    return f", container {box.container_id[:12]}" + (f", pod {box.pod_uid}" if box.pod_uid
                                                    else "")
