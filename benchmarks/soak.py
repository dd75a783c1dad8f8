"""A long run with faults: is gotrace trustworthy unattended?

    sudo scripts/soak [--minutes 30] [--output benchmarks/results/soak.json]

Two copies of benchmarks/targets/churn run side by side (~1,400 goroutines/s each, created in
pairs that ping-pong, sleep and exit, plus one batch of 7 goroutines leaked at one known `go`
line every 10 s, a heartbeat with a self-check every second):

* target A ("steady") carries the long-lived tracers: `gotrace attach --json` (default mode) and
  `gotrace tail --json --match main.leakBatch`, whose RSS (VmRSS, VmHWM) and open file
  descriptors are sampled every 5 s. A is restarted at half-time: its tracers are stopped first
  (final reports checked), then A gets SIGTERM.
* target B ("faults") gets everything else, in a loop: `attach` in each of the three modes
  (default, --park-times exact, --no-bpf) runs and detaches; `tail --json` and `hist --json`
  come and go together; a tracer (attach, attach exact, attach no-bpf, tail or hist in turn)
  is killed with SIGKILL while it reports; two tracers (default + exact) run at once; B itself
  is restarted every second round.

What is checked, and how:

* Targets: no crash (a target exits only when the soak sends SIGTERM, with status 0 and its own
  exit check "check=ok": every started worker finished, goroutines = fixed + leaks), no stall
  (the heartbeat counter advances by one each time and never goes quiet for more than 5 s),
  self-check ok in every heartbeat (values exchanged right, no batch of workers older than 5 s).
* Leak counts in every final `attach` report: the goroutines reported at the leak line must be
  the leaks announced ("leaked total=...") before the report's threshold window. A leak
  announced at time a (soak clock, when its line was read) and a tracer that printed "attached"
  at time A and was stopped at time s (SIGINT) and whose final report was read at time r:
  the leak is surely reported if s - max(a, A) >= threshold + read interval + 0.5 s (park times
  read from memory are lower bounds to the read interval), and surely not if r - a + 0.5 s <
  threshold. The soak stops tracers at a moment where no leak falls between the two (at least
  threshold + 2 s after the last announcement), so the expected count is exact; a report is
  "exact" when the two bounds agree and the count equals them, "window" when a late report
  made the bounds differ and the count lies between them, wrong otherwise. Any other suspect at
  a churn line other than the main goroutine is a false positive and counted.
* Tail with --match on the leak site (long-lived, on A): the creations it streamed must be
  exactly the leaks announced while it ran, and for every tail run the event lines read must
  equal the "events" of its end line (nothing dropped between gotrace and its reader).
* Lost events: lost_events and the "lost" reasons of every final report, tail end line and hist
  report are summed per tool; a tracer that ends without its final line is a failure (except
  the ones killed on purpose).
* Probes left behind, after every run on B (the SIGKILLed ones included) and after A's
  tracers stop, once every tracer of that target is gone:
  - the target's view: a uprobe is an int3 (0xcc) the kernel writes into the target's private
    copy of the page of the probed instruction, and removes when the last consumer goes. So the
    target's executable mapping, read from /proc/PID/mem, is compared byte for byte with the
    binary on disk: any difference means a breakpoint is still in place. Positive control:
    while a BPF tracer is attached the same comparison must find the breakpoints (and none
    under --no-bpf). Every new target process is compared too: a uprobe still registered on
    the binary's inode would be written into a new process at exec. "[uprobes]" in
    /proc/PID/maps is NOT evidence either way: it is the out-of-line single-step area the
    kernel maps the first time a probed instruction cannot be emulated, and never unmaps (on
    this kernel gotrace's probes are emulated, so it does not even appear); it is recorded only.
  - the system's view: no line of /sys/kernel/tracing/uprobe_events (nor uprobe_profile)
    names a churn binary (gotrace attaches through perf_event_open, which registers nothing
    there; a tracefs probe would survive its creator), the killed tracer and every process it
    had started are gone, and no process holds an anon_inode:[perf_event] or anon_inode:bpf-*
    descriptor unless it is a live tracer of ours, held one before the soak started, or is
    someone else's gotrace (the machine is shared; counted as foreign).
* Tracer resources: RSS and descriptor counts of the long-lived tracers over time; "flat" =
  after a warm-up (the first quarter of the tracer's life, at least 30 s) RSS grows by less
  than 10 MB and the descriptor count ends where it started (a descriptor open at the moment
  of one sample and closed by the next is counted as a transient, not as growth). The RSS
  slope is reported too (rss_mb_per_hour): the target leaks all along, and a tracer keeps
  state for every goroutine it tracks.

Writes benchmarks/results/soak.json (--output) and prints a summary. Every process it starts is
stopped on exit, Ctrl-C and SIGTERM included. No network.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
CHURN_SRC = ROOT / "benchmarks" / "targets" / "churn"
CHURN_GO = str(CHURN_SRC / "main.go")
GOTRACE = [sys.executable, "-m", "gotrace"]
THRESHOLD_S = 2.0
READ_INTERVAL_S = 1.0
LEAK_EVERY_S = 10.0
LEAK_COUNT = 7
RATE = 1400
STALL_S = 5.0
ANON = ("anon_inode:[perf_event]", "anon_inode:bpf-prog", "anon_inode:bpf-map",
        "anon_inode:bpf_link", "anon_inode:bpf-link")
ATTACH_MODES: dict[str, list[str]] = {
    "memory": [], "exact": ["--park-times", "exact"], "no-bpf": ["--no-bpf"]}
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop the soak, clean up, still write what was measured."""


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL if the soak itself is killed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def marker_lines() -> dict[str, int]:
    out: dict[str, int] = {}
    for n, line in enumerate(Path(CHURN_GO).read_text().splitlines(), 1):
        m = re.search(r"//\s*(leak|busy|idle):(\w+)\s*$", line)
        if m:
            out[f"{m[1]}:{m[2]}"] = n
    return out


LEAK_LINE = marker_lines()["leak:batch"]


def kv(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


# -- processes -------------------------------------------------------------------------------

class Proc:
    """A child process whose stdout/stderr are read by threads."""

    def __init__(self, argv: list[str], keep_stdout: bool = True) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, text=True, bufsize=1, cwd=ROOT,
                                  start_new_session=True, preexec_fn=die_with_parent)
        self.pid = self.p.pid
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.keep_stdout = keep_stdout
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        self.out_lines = 0
        self.out_closed = False
        self.err_closed = False
        assert self.p.stdout is not None and self.p.stderr is not None
        self.threads = [threading.Thread(target=self._pump, args=(self.p.stdout, True),
                                         daemon=True),
                        threading.Thread(target=self._pump, args=(self.p.stderr, False),
                                         daemon=True)]
        for t in self.threads:
            t.start()

    def on_line(self, t: float, line: str) -> None:
        """Called by the stdout thread for every line (subclasses parse)."""

    def _pump(self, pipe: IO[str], is_out: bool) -> None:
        for raw in pipe:
            line = raw.rstrip("\n")
            now = time.monotonic()
            with self.cond:
                if is_out:
                    self.out_lines += 1
                    if self.keep_stdout:
                        self.out.append((now, line))
                    self.on_line(now, line)
                else:
                    self.err.append(line)
                self.cond.notify_all()
        with self.cond:
            if is_out:
                self.out_closed = True
            else:
                self.err_closed = True
            self.cond.notify_all()

    def wait_err(self, pattern: str, timeout: float) -> bool:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                if any(rx.search(x) for x in self.err):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.err_closed:
                    return False
                self.cond.wait(left)

    def wait_out_lines(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.out_lines < n:
                left = deadline - time.monotonic()
                if left <= 0 or self.out_closed:
                    return False
                self.cond.wait(left)
            return True

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit and for both pipes to be read to their end."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            rc = self.p.wait()
        for t in self.threads:
            t.join(timeout=10)
        return rc

    def descendants(self) -> list[int]:
        """Every process below this one (read from /proc/*/task/*/children)."""
        found: list[int] = []
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tasks:
                try:
                    kids = Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                except OSError:
                    continue
                for k in kids:
                    found.append(int(k))
                    todo.append(int(k))
        return found


class Target(Proc):
    """A churn process: heartbeats, leak announcements, its exit line."""

    def __init__(self, name: str, binary: str) -> None:
        self.name = name
        self.binary = binary
        self.leaks: list[tuple[float, int]] = []  # (soak time read, total leaked)
        self.beats = 0
        self.last_beat_n = 0
        self.last_beat_t = time.monotonic()
        self.max_gap = 0.0
        self.stalls = 0
        self.skips = 0
        self.check_fail: list[str] = []
        self.exit_line = ""
        self.stopping = False
        super().__init__([binary, "-rate", str(RATE), "-leak-every", f"{LEAK_EVERY_S:g}s",
                          "-leak-count", str(LEAK_COUNT)], keep_stdout=False)

    def on_line(self, t: float, line: str) -> None:
        if line.startswith("heartbeat "):
            f = kv(line)
            n = int(f["n"])
            gap = t - self.last_beat_t
            self.max_gap = max(self.max_gap, gap)
            if gap > STALL_S:
                self.stalls += 1
            if n != self.last_beat_n + 1:
                self.skips += 1
            self.last_beat_n, self.last_beat_t = n, t
            self.beats += 1
            if f.get("check") != "ok":
                self.check_fail.append(line)
        elif line.startswith("leaked "):
            self.leaks.append((t, int(kv(line)["total"])))
        elif line.startswith("exit "):
            self.exit_line = line

    def last_leak(self) -> float:
        with self.lock:
            return self.leaks[-1][0] if self.leaks else self.started

    def quiet_gap(self) -> float:
        """Time since the last heartbeat (a stall in progress is not yet in max_gap)."""
        with self.lock:
            return time.monotonic() - self.last_beat_t


class Tracer(Proc):
    def __init__(self, kind: str, target: Target, args: list[str],
                 keep_stdout: bool = True) -> None:
        self.kind = kind
        self.target = target
        self.attached_at = 0.0
        self.end: dict[str, Any] | None = None
        self.last_json: dict[str, Any] | None = None
        self.creates = 0
        self.killed = False
        super().__init__([*GOTRACE, *args], keep_stdout=keep_stdout)

    def on_line(self, t: float, line: str) -> None:
        if self.kind == "tail":
            if line.startswith('{"type":"end"'):
                self.end = json.loads(line)
            elif line.startswith('{"type":"create"'):
                self.creates += 1
        elif line.startswith("{"):
            self.last_json = json.loads(line)

    def wait_attached(self, timeout: float = 90.0) -> bool:
        ok = self.wait_err(r"attached", timeout)
        self.attached_at = time.monotonic()
        return ok

    def stderr_tail(self) -> str:
        with self.lock:
            return "\n".join(self.err[-8:])


# -- what the machine and the target show --------------------------------------------------------

def text_diff(pid: int, binary: str) -> tuple[int, int] | None:
    """(bytes differing, of which 0xcc) between the target's executable mappings of `binary`
    in memory and the same bytes of the file; None if the process is gone."""
    diff = int3 = 0
    try:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        with open(binary, "rb") as f, open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            for line in maps:
                parts = line.split()
                if len(parts) < 6 or parts[5] != binary or "x" not in parts[1]:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                f.seek(int(parts[2], 16))
                disk = f.read(hi - lo)
                mem.seek(lo)
                live = mem.read(len(disk))
                if live == disk:
                    continue
                for a, b in zip(live, disk, strict=False):
                    if a != b:
                        diff += 1
                        int3 += a == 0xCC
    except (OSError, ValueError):
        return None
    return diff, int3


def has_uprobes_area(pid: int) -> bool:
    try:
        return "[uprobes]" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def tracefs_lines(binaries: list[str]) -> list[str]:
    out = []
    for f in ("/sys/kernel/tracing/uprobe_events", "/sys/kernel/tracing/uprobe_profile",
              "/sys/kernel/debug/tracing/uprobe_events"):
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        out += [f"{f}: {x}" for x in text.splitlines() if any(b in x for b in binaries)]
    return out


def probe_holders() -> dict[int, int]:
    """pid -> number of perf_event / bpf descriptors it holds, for every process."""
    out: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{d}/fd")
        except OSError:
            continue
        n = 0
        for fd in fds:
            try:
                if os.readlink(f"/proc/{d}/fd/{fd}").startswith(ANON):
                    n += 1
            except OSError:
                continue
        if n:
            out[int(d)] = n
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def proc_status(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    f = {k: int(v) for k, v in re.findall(r"^(VmRSS|VmHWM|Threads):\s+(\d+)", text, re.M)}
    return {"rss_kb": f.get("VmRSS", 0), "hwm_kb": f.get("VmHWM", 0), "fds": fds,
            "threads": f.get("Threads", 0)}


# -- the soak --------------------------------------------------------------------------------------

@dataclass
class Resources:
    """RSS and descriptors of one long-lived tracer over its life."""

    kind: str
    target: str
    pid: int
    started: float
    samples: list[list[float]] = field(default_factory=list)  # [t_s, rss_mb, hwm_mb, fds]

    def summary(self) -> dict[str, Any]:
        s = self.samples
        if not s:
            return {"kind": self.kind, "target": self.target, "samples": 0}
        life = s[-1][0]
        warm = max(30.0, life / 4)
        after = [x for x in s if x[0] >= warm] or s[-1:]
        rss = [x[1] for x in after]
        fds = [int(x[3]) for x in after]
        growth = rss[-1] - rss[0]
        return {"kind": self.kind, "target": self.target, "pid": self.pid,
                "life_s": round(life, 1), "samples": len(s), "warmup_s": round(warm, 1),
                "rss_mb_after_warmup": round(rss[0], 1), "rss_mb_end": round(rss[-1], 1),
                "rss_mb_min": round(min(rss), 1), "rss_mb_max": round(max(rss), 1),
                "rss_growth_mb": round(growth, 1), "hwm_mb_end": round(s[-1][2], 1),
                "fds_after_warmup": fds[0], "fds_end": fds[-1], "fds_min": min(fds),
                "fds_max": max(fds), "fd_transients": sum(1 for x in fds if x != fds[0]),
                "rss_mb_per_hour": round(growth / max(life - after[0][0], 1.0) * 3600, 1),
                "flat": growth < 10.0 and fds[-1] == fds[0],
                "series": [[round(x[0]), round(x[1], 1), int(x[3])] for x in s]}


class Soak:
    def __init__(self, minutes: float, binary: str, workdir: Path) -> None:
        self.minutes = minutes
        self.t0 = time.monotonic()
        self.deadline = self.t0 + minutes * 60
        self.workdir = workdir
        self.bins = {n: str(workdir / f"churn-{n}") for n in ("A", "B")}
        for path in self.bins.values():
            shutil.copy2(binary, path)  # one inode per target: their probes never mix
        self.targets: list[Target] = []  # every target ever started
        self.tracers: list[Tracer] = []  # every tracer ever started
        self.failures: list[str] = []
        self.runs: dict[str, dict[str, int]] = {}
        self.reports: list[dict[str, Any]] = []
        self.lost: dict[str, dict[str, Any]] = {}
        self.kills: list[dict[str, Any]] = []
        self.leftover_checks = 0
        self.leftovers: list[str] = []
        self.positive: dict[str, list[int]] = {}  # mode -> int3 bytes seen while attached
        self.new_process_diff: list[int] = []
        self.uprobes_area: dict[str, int] = {"seen": 0, "checked": 0}
        self.foreign_holders: set[str] = set()
        self.kids: set[int] = set()  # every process a tracer of ours was seen to start
        self.tail_checks: list[dict[str, Any]] = []
        self.resources: list[Resources] = []
        self.res_lock = threading.Lock()
        self.baseline_holders = set(probe_holders())
        self.stop_sampler = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.round = 0
        self.victims = ["attach:memory", "attach:exact", "tail", "hist", "attach:no-bpf"]

    # bookkeeping

    def fail(self, msg: str) -> None:
        self.failures.append(f"[{self.elapsed():.0f}s] {msg}")
        print(f"soak: FAIL {msg}", file=sys.stderr, flush=True)

    def log(self, msg: str) -> None:
        print(f"soak [{self.elapsed():6.0f}s] {msg}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def count(self, kind: str, key: str) -> None:
        d = self.runs.setdefault(kind, {})
        d[key] = d.get(key, 0) + 1

    def add_lost(self, tool: str, doc: dict[str, Any]) -> None:
        d = self.lost.setdefault(tool, {"runs": 0, "lost_events": 0, "reasons": {},
                                        "runs_with_loss": 0})
        d["runs"] += 1
        d["lost_events"] += int(doc.get("lost_events", 0))
        d["runs_with_loss"] += int(doc.get("lost_events", 0) > 0)
        for k, v in (doc.get("lost") or {}).items():
            d["reasons"][k] = d["reasons"].get(k, 0) + int(v)

    def _sample(self) -> None:
        while not self.stop_sampler.wait(5.0):
            with self.res_lock:
                for r in self.resources:
                    st = proc_status(r.pid)
                    if st is not None:
                        r.samples.append([time.monotonic() - r.started, st["rss_kb"] / 1024,
                                          st["hwm_kb"] / 1024, st["fds"]])

    # targets

    def start_target(self, name: str) -> Target:
        t = Target(name, self.bins[name])
        self.targets.append(t)
        deadline = time.monotonic() + 20
        while t.beats == 0 and time.monotonic() < deadline and t.alive():
            time.sleep(0.1)
        if t.beats == 0:
            self.fail(f"target {name} did not start: {cmdline(t.pid)}")
        # A new process of a binary with a uprobe still registered would get its int3 at exec.
        d = text_diff(t.pid, t.binary)
        self.new_process_diff.append(d[0] if d else -1)
        if d is None or d[0] != 0:
            self.fail(f"new target {name} pid {t.pid}: text differs from its binary: {d}")
        self.log(f"target {name} started, pid {t.pid}")
        return t

    def stop_target(self, t: Target) -> None:
        t.stopping = True
        self.check_target_alive(t)
        t.signal(signal.SIGTERM)
        rc = t.finish(30)
        ok = rc == 0 and "check=ok" in t.exit_line
        self.count("target", "restarts_ok" if ok else "restarts_bad")
        if not ok:
            self.fail(f"target {t.name} pid {t.pid} on SIGTERM: status {rc}, "
                      f"exit line {t.exit_line!r}")
        self.log(f"target {t.name} pid {t.pid} stopped: {rc} {t.exit_line}")

    def check_target_alive(self, t: Target) -> None:
        if not t.alive() and not t.stopping:
            self.fail(f"target {t.name} pid {t.pid} died: status {t.p.returncode}")
            t.stopping = True  # reported once
        if t.alive() and t.quiet_gap() > STALL_S:
            self.fail(f"target {t.name} pid {t.pid}: no heartbeat for {t.quiet_gap():.1f}s")

    # tracers

    def tracer(self, kind: str, target: Target, args: list[str],
               keep_stdout: bool = True) -> Tracer | None:
        tr = Tracer(kind, target, [*args], keep_stdout)
        self.tracers.append(tr)
        ok = tr.wait_attached()
        self.kids.update(tr.descendants())
        if not ok:
            tr.signal(signal.SIGKILL)
            tr.finish()
            self.fail(f"{kind} on {target.name} did not attach (status {tr.p.returncode}): "
                      f"{tr.stderr_tail()}")
            self.count(kind, "no_attach")
            return None
        return tr

    def attach(self, mode: str, target: Target, interval: str = "2s") -> Tracer | None:
        return self.tracer(f"attach:{mode}", target,
                           ["attach", str(target.pid), "--json", "--threshold",
                            f"{THRESHOLD_S:g}s", "--interval", interval,
                            "--read-interval", f"{READ_INTERVAL_S:g}s", *ATTACH_MODES[mode]])

    def wait_phase(self, tracers: list[Tracer]) -> None:
        """Until a SIGINT now leaves no leak in the ambiguous window of the final report."""
        t = tracers[0].target
        need = THRESHOLD_S + READ_INTERVAL_S + 1.5
        while True:
            now = time.monotonic()
            since_leak = now - t.last_leak()
            since_attach = min(now - tr.attached_at for tr in tracers)
            if since_leak >= need and since_attach >= need and (
                    since_leak < LEAK_EVERY_S - 1.0):
                return
            self.check_target_alive(t)
            if not t.alive():
                return
            time.sleep(0.2)

    def stop_attach(self, tracers: list[Tracer]) -> None:
        """SIGINT at once, then check each final report."""
        for tr in tracers:
            self.kids.update(tr.descendants())
        sig_at = time.monotonic()
        for tr in tracers:
            tr.signal(signal.SIGINT)
        for tr in tracers:
            rc = tr.finish()
            self.check_final(tr, rc, sig_at)

    def check_final(self, tr: Tracer, rc: int, sig_at: float) -> None:
        with tr.lock:
            lines = [(t, x) for t, x in tr.out if x.startswith("{")]
        final = json.loads(lines[-1][1]) if lines else None
        read_at = lines[-1][0] if lines else time.monotonic()
        stderr = "\n".join(tr.err)
        if rc != 0 or "Traceback" in stderr or final is None or not final.get("final"):
            self.count(tr.kind, "bad_exit")
            self.fail(f"{tr.kind} pid {tr.pid} on {tr.target.name}: status {rc}, final "
                      f"{bool(final and final.get('final'))}: {tr.stderr_tail()}")
            return
        assert final is not None
        self.count(tr.kind, "runs")
        self.add_lost(tr.kind.split(":")[0], final)
        leaks = list(tr.target.leaks)
        attached = tr.attached_at
        sure = THRESHOLD_S + READ_INTERVAL_S + 0.5
        lo = max([n for a, n in leaks if sig_at - max(a, attached) >= sure], default=0)
        hi = max([n for a, n in leaks if read_at - a + 0.5 >= THRESHOLD_S], default=0)
        got = sum(s["count"] for s in final["suspects"]
                  if s["created_at"]["file"] == CHURN_GO and s["created_at"]["line"] == LEAK_LINE)
        others = [f'{s["created_at"]["function"]} {s["created_at"]["line"]} '
                  f'({s["start_function"]}) x{s["count"]}'
                  for s in final["suspects"]
                  if not (s["created_at"]["file"] == CHURN_GO
                          and s["created_at"]["line"] == LEAK_LINE)
                  and s["start_function"] != "runtime.main"]
        verdict = ("exact" if lo == hi == got else "window" if lo <= got <= hi
                   else "wrong")
        rec = {"t_s": round(sig_at - self.t0, 1), "tool": tr.kind, "target": tr.target.name,
               "pid": tr.target.pid, "reported": got, "expected_lo": lo, "expected_hi": hi,
               "verdict": verdict, "false_positives": others,
               "lost_events": final.get("lost_events", 0), "lost": final.get("lost", {}),
               "live": final.get("live"), "created": final.get("created")}
        self.reports.append(rec)
        self.count(tr.kind, verdict)
        if verdict == "wrong":
            self.fail(f"{tr.kind} on {tr.target.name}: {got} leaks at main.go:{LEAK_LINE}, "
                      f"expected {lo}..{hi}")
        if others:
            self.fail(f"{tr.kind} on {tr.target.name}: unexpected suspects {others}")

    def leftover_check(self, target: Target, why: str, victim: Tracer | None = None,
                       victim_kids: list[int] | None = None) -> None:
        """No tracer of ours is on `target` any more: nothing may be left of their probes."""
        self.leftover_checks += 1
        problems: list[str] = []
        # The kernel releases the killed tracer's perf events and programs when its last
        # descriptor closes; give an RCU-deferred free a moment before calling it a leak.
        for _ in range(20):
            problems = []
            if victim is not None:
                gone = [p for p in [victim.pid, *(victim_kids or [])]
                        if Path(f"/proc/{p}").exists()]
                if gone:
                    problems.append(f"killed tracer or its children still exist: {gone}")
            d = text_diff(target.pid, target.binary) if target.alive() else (0, 0)
            if d is None:
                d = (0, 0)
            if d[0]:
                problems.append(f"target {target.name} pid {target.pid}: {d[0]} bytes of its "
                                f"text differ from the binary ({d[1]} int3)")
            ft = tracefs_lines(list(self.bins.values()))
            if ft:
                problems.append(f"tracefs: {ft}")
            live = {tr.pid for tr in self.tracers if tr.alive()}
            for pid in probe_holders():
                if pid in live or pid in self.baseline_holders:
                    continue
                cl = cmdline(pid)
                if not self.ours(pid):
                    # Someone else's process on this shared machine (its probes cannot be on
                    # our private binary copies): recorded, not counted.
                    self.foreign_holders.add(f"{pid} {cl[:100]}")
                    continue
                problems.append(f"pid {pid} ({cl[:80]}) holds perf_event/bpf descriptors")
            if not problems:
                break
            time.sleep(0.25)
        if target.alive():
            self.uprobes_area["checked"] += 1
            self.uprobes_area["seen"] += has_uprobes_area(target.pid)
        if problems:
            self.leftovers.append(f"after {why}: {problems}")
            self.fail(f"probes left after {why}: {problems}")

    def ours(self, pid: int) -> bool:
        """Started by the soak: below it in the process tree, a tracer of ours, or a process
        one of our tracers had started (an orphan is re-parented away from us)."""
        if pid in self.kids or any(pid == tr.pid for tr in self.tracers):
            return True
        me = os.getpid()
        for _ in range(64):
            try:
                st = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return False
            pid = int(st[st.rfind(")") + 2:].split()[1])
            if pid == me:
                return True
            if pid <= 1:
                return False
        return False

    def positive_control(self, mode: str, tr: Tracer) -> None:
        d = text_diff(tr.target.pid, tr.target.binary)
        if d is not None:
            self.positive.setdefault(mode, []).append(d[1])

    # steps on B

    def step_attach(self, b: Target, mode: str) -> None:
        tr = self.attach(mode, b)
        if tr is None:
            return
        self.positive_control(mode, tr)
        self.wait_phase([tr])
        self.stop_attach([tr])
        self.leftover_check(b, f"attach {mode}")

    def step_pair(self, b: Target) -> None:
        t1 = self.attach("memory", b)
        t2 = self.attach("exact", b)
        got = [t for t in (t1, t2) if t is not None]
        if got:
            self.wait_phase(got)
            self.stop_attach(got)
        self.count("pair", "runs")
        self.leftover_check(b, "two tracers at once")

    def step_tail_hist(self, b: Target) -> None:
        hist = self.tracer("hist", b, ["hist", str(b.pid), "--json", "--duration", "8s"])
        tail = self.tracer("tail", b, ["tail", str(b.pid), "--json", "--duration", "5s"],
                           keep_stdout=False)
        if tail is not None:
            rc = tail.finish()
            self.check_tail(tail, rc)
        if hist is not None:
            rc = hist.finish()
            doc = hist.last_json
            if rc != 0 or doc is None or "Traceback" in "\n".join(hist.err):
                self.count("hist", "bad_exit")
                self.fail(f"hist on {b.name}: status {rc}: {hist.stderr_tail()}")
            else:
                self.count("hist", "runs")
                self.add_lost("hist", doc)
        self.leftover_check(b, "tail + hist")

    def check_tail(self, tail: Tracer, rc: int, leaks_expected: int | None = None) -> None:
        end = tail.end
        if rc != 0 or end is None or "Traceback" in "\n".join(tail.err):
            self.count("tail", "bad_exit")
            self.fail(f"tail on {tail.target.name}: status {rc}, end line {end is not None}: "
                      f"{tail.stderr_tail()}")
            return
        self.count("tail", "runs")
        self.add_lost("tail", end)
        lines = tail.out_lines - 1
        rec: dict[str, Any] = {"t_s": round(tail.started - self.t0, 1),
                               "target": tail.target.name, "lines": lines,
                               "events": end.get("events"), "lost_events": end.get("lost_events"),
                               "consistent": lines == end.get("events")}
        if leaks_expected is not None:
            rec.update(leak_creates=tail.creates, leaks_announced=leaks_expected)
        self.tail_checks.append(rec)
        if not rec["consistent"]:
            self.fail(f"tail on {tail.target.name}: {lines} event lines read, end line says "
                      f"{end.get('events')}")
        if leaks_expected is not None and tail.creates != leaks_expected:
            self.fail(f"tail --match on {tail.target.name}: {tail.creates} leak creations "
                      f"streamed, {leaks_expected} announced")

    def step_kill(self, b: Target) -> None:
        victim = self.victims[len(self.kills) % len(self.victims)]
        if victim.startswith("attach:"):
            tr = self.attach(victim.split(":")[1], b, interval="1s")
            if tr is None:
                return
            # Mid-report: after the first report, somewhere inside the next one.
            tr.wait_out_lines(1, 30)
            time.sleep(random.uniform(0.5, 1.0))
        elif victim == "tail":
            tr = self.tracer("tail", b, ["tail", str(b.pid), "--json"], keep_stdout=False)
            if tr is None:
                return
            tr.wait_out_lines(20000, 30)  # streaming hard
        else:
            tr = self.tracer("hist", b, ["hist", str(b.pid), "--json", "--duration", "1h"])
            if tr is None:
                return
            time.sleep(random.uniform(1.0, 3.0))  # counting in the kernel
        kids = tr.descendants()
        self.kids.update(kids)
        alive_before = tr.alive()
        tr.killed = True
        tr.signal(signal.SIGKILL)
        rc = tr.finish(30)
        self.kills.append({"t_s": round(self.elapsed(), 1), "victim": victim,
                           "alive_when_killed": alive_before, "status": rc,
                           "children": len(kids), "out_lines": tr.out_lines})
        if not alive_before:
            self.fail(f"{victim} had exited before the kill: {tr.stderr_tail()}")
        self.leftover_check(b, f"SIGKILL of {victim}", tr, kids)

    # A: the long-lived tracers

    def start_a(self) -> tuple[Target, Tracer | None, Tracer | None]:
        a = self.start_target("A")
        at = self.attach("memory", a, interval="10s")
        tl = self.tracer("tail", a, ["tail", str(a.pid), "--json", "--match", r"main\.leakBatch"])
        with self.res_lock:
            for tr in (at, tl):
                if tr is not None:
                    self.resources.append(Resources(tr.kind, f"A pid {a.pid}", tr.pid,
                                                    time.monotonic()))
        return a, at, tl

    def stop_a(self, a: Target, at: Tracer | None, tl: Tracer | None) -> None:
        if at is not None:
            self.wait_phase([at])
            if tl is not None:
                tl.signal(signal.SIGINT)
            self.stop_attach([at])
        if tl is not None:
            tl.signal(signal.SIGINT)
            rc = tl.finish()
            with a.lock:
                # leaks announced after tail attached (the first batch is 10 s after start)
                before = max([n for t, n in a.leaks if t < tl.attached_at], default=0)
                total = a.leaks[-1][1] if a.leaks else 0
            self.check_tail(tl, rc, total - before)
        self.leftover_check(a, "the long-lived tracers of A")
        self.stop_target(a)

    def run(self) -> None:
        self.sampler.start()
        a, at, tl = self.start_a()
        a_restarted = self.minutes < 2
        b = self.start_target("B")
        steps = ["attach:memory", "attach:exact", "attach:no-bpf", "tail+hist", "kill", "pair"]
        while True:
            for step in steps:
                if self.time_left() <= 0:
                    break
                self.check_target_alive(b)
                self.check_target_alive(a)
                if step.startswith("attach:"):
                    self.step_attach(b, step.split(":")[1])
                elif step == "tail+hist":
                    self.step_tail_hist(b)
                elif step == "kill":
                    self.step_kill(b)
                else:
                    self.step_pair(b)
                if not a_restarted and self.elapsed() >= self.minutes * 30:
                    self.log("restarting A (half-time)")
                    self.stop_a(a, at, tl)
                    a, at, tl = self.start_a()
                    a_restarted = True
            if self.time_left() <= 0:
                break
            self.round += 1
            self.log(f"round {self.round} done: {len(self.reports)} final reports, "
                     f"{len(self.kills)} kills, {len(self.failures)} failures")
            if self.round % 2 == 0 and self.time_left() > 60:
                self.stop_target(b)
                b = self.start_target("B")
        self.log("time is up: stopping")
        self.stop_a(a, at, tl)
        self.stop_target(b)
        self.stop_sampler.set()

    def cleanup(self) -> None:
        """Whatever is still running (Ctrl-C, an error): tracers first, then targets."""
        self.stop_sampler.set()
        for tr in self.tracers:
            tr.signal(signal.SIGINT)
        for t in self.targets:
            t.stopping = True
            t.signal(signal.SIGTERM)
        for p in [*self.tracers, *self.targets]:
            if p.alive():
                try:
                    p.p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.signal(signal.SIGKILL)
                    p.p.wait()

    # results

    def results(self, go_version: str, interrupted: bool) -> dict[str, Any]:
        tg = self.targets
        verdicts = {k: sum(r["verdict"] == k for r in self.reports)
                    for k in ("exact", "window", "wrong")}
        res = [r.summary() for r in self.resources]
        kills_by: dict[str, int] = {}
        for k in self.kills:
            kills_by[k["victim"]] = kills_by.get(k["victim"], 0) + 1
        return {
            "what": "scripts/soak: churn targets under gotrace with faults (benchmarks/soak.py)",
            "pass": not self.failures and not interrupted,
            "interrupted": interrupted,
            "minutes": self.minutes,
            "elapsed_s": round(self.elapsed(), 1),
            "machine": {"kernel": platform.release(), "cpus": os.cpu_count(),
                        "go": go_version, "python": platform.python_version()},
            "config": {"rate_goroutines_per_s": RATE, "leak_every_s": LEAK_EVERY_S,
                       "leak_count": LEAK_COUNT, "leak_site": f"main.leakBatch main.go:{LEAK_LINE}",
                       "threshold_s": THRESHOLD_S, "read_interval_s": READ_INTERVAL_S},
            "targets": {
                "started": len(tg),
                "crashes": sum(1 for t in tg if t.p.returncode not in (None, 0)
                               or (t.p.returncode is not None and "check=ok" not in t.exit_line)),
                "stalls": sum(t.stalls for t in tg),
                "heartbeat_skips": sum(t.skips for t in tg),
                "selfcheck_failures": sum(len(t.check_fail) for t in tg),
                "heartbeats": sum(t.beats for t in tg),
                "max_heartbeat_gap_s": round(max((t.max_gap for t in tg), default=0), 2),
                "restarts": self.runs.get("target", {}),
                "goroutines_created": sum(int(kv(t.exit_line).get("started", 0)) for t in tg),
                "leaked": sum(int(kv(t.exit_line).get("leaked", 0)) for t in tg),
            },
            "runs": self.runs,
            "final_reports": {"count": len(self.reports), **verdicts,
                              "false_positives": sum(len(r["false_positives"])
                                                     for r in self.reports)},
            "kills": {"count": len(self.kills), "by_victim": kills_by,
                      "killed_mid_output": sum(1 for k in self.kills if k["out_lines"] > 0
                                               or k["victim"] == "hist")},
            "probes_left": {
                "checks": self.leftover_checks, "after_kills": len(self.kills),
                "leftovers": len(self.leftovers), "details": self.leftovers,
                "new_process_text_diff_bytes": sum(max(0, d) for d in self.new_process_diff),
                "positive_control_int3_while_attached": {
                    m: {"samples": len(v), "min": min(v), "max": max(v)}
                    for m, v in self.positive.items()},
                "uprobes_area_in_target_maps": self.uprobes_area,
                "foreign_gotrace_holders_ignored": sorted(self.foreign_holders),
            },
            "lost": self.lost,
            "tail_checks": {"runs": len(self.tail_checks),
                            "consistent": sum(1 for r in self.tail_checks if r["consistent"]),
                            "leak_match": [r for r in self.tail_checks if "leak_creates" in r]},
            "tracer_resources": res,
            "failures": self.failures,
            "reports": self.reports,
            "kill_log": self.kills,
        }


def summary(r: dict[str, Any]) -> str:
    t = r["targets"]
    f = r["final_reports"]
    p = r["probes_left"]
    lost = ", ".join(f'{k} {v["lost_events"]} in {v["runs"]} runs'
                     + (f' ({v["reasons"]})' if v["lost_events"] else "")
                     for k, v in r["lost"].items())
    rows = [
        f"soak: {'PASS' if r['pass'] else 'FAIL'} · {r['elapsed_s'] / 60:.1f} min · "
        f"{r['machine']['go']} · {r['machine']['cpus']} CPUs",
        f"targets: {t['started']} started, {t['goroutines_created']:,} goroutines created, "
        f"{t['leaked']} leaked; crashes {t['crashes']}, stalls {t['stalls']} (max heartbeat "
        f"gap {t['max_heartbeat_gap_s']}s), self-check failures {t['selfcheck_failures']}",
        f"final reports: {f['count']} ({f['exact']} exact, {f['window']} in window, "
        f"{f['wrong']} wrong, {f['false_positives']} false positives)",
        f"kills: {r['kills']['count']} {r['kills']['by_victim']}; probes left: "
        f"{p['leftovers']} in {p['checks']} checks (positive control: "
        + ", ".join(f"{m} {v['min']}-{v['max']} int3"
                    for m, v in p["positive_control_int3_while_attached"].items()) + ")",
        f"lost events: {lost}",
        f"tail: {r['tail_checks']['consistent']}/{r['tail_checks']['runs']} runs with every "
        "event line accounted for; leak creations streamed vs announced: "
        + ", ".join(f"{x['leak_creates']}/{x['leaks_announced']}"
                    for x in r["tail_checks"]["leak_match"]),
    ]
    for x in r["tracer_resources"]:
        if x.get("samples"):
            rows.append(f"{x['kind']} on {x['target']}: {x['life_s']:.0f}s, RSS "
                        f"{x['rss_mb_after_warmup']}→{x['rss_mb_end']} MB after warm-up "
                        f"(+{x['rss_mb_per_hour']} MB/h, HWM {x['hwm_mb_end']}), fds "
                        f"{x['fds_after_warmup']}→{x['fds_end']} ({x['fd_transients']} "
                        f"transient): {'flat' if x['flat'] else 'NOT flat'}")
    rows += [f"  {x}" for x in r["failures"][:20]]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    ap.add_argument("--go", default=None, help="Go version of the churn target (default: newest)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("soak: must run as root", file=sys.stderr)
        return 3
    sys.path.insert(0, str(ROOT))
    from tests.gobuild import GO_VERSIONS, build_go, version_key

    go = args.go or max(GO_VERSIONS, key=version_key)
    binary = str(build_go(go, CHURN_SRC, "plain"))

    def on_signal(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="gotrace-soak-"))
    soak = Soak(args.minutes, binary, workdir)
    interrupted = False
    try:
        soak.run()
    except Stop as e:
        interrupted = True
        soak.fail(f"interrupted by {e}")
    except Exception as e:  # report what was measured, then fail
        interrupted = True
        soak.fail(f"soak error: {type(e).__name__}: {e}")
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.cleanup()
        res = soak.results(f"go{go}", interrupted)
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
        print(summary(res))
        print(f"soak: figures in {out}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
