"""What `gotrace tail` and `gotrace hist` cost, and how many events tail keeps up with.

    sudo .venv/bin/python -m benchmarks.tail_hist [--reps 3] [--seconds 3]

Three measurements on tests/targets/lifetimes (Go 1.27.3), every configuration run in turn
within each repetition so machine noise spreads over all of them; medians are reported.

1. Probe cost per operation and per probe hit, against a baseline in the same run:
   churn (goroutine create + exit) and ping-pong (2 parks + 2 wake-ups per round trip), with
   attach, hist, and tail --json to /dev/null.
2. Tail's capacity: ping-pong paced at fixed event rates; events received and lost (exact
   counts from tail's own summary).
3. BPF run time per probe hit of each build (attach, hist, tail, tail without the parked-at
   walk), from the kernel's own accounting (kernel.bpf_stats_enabled, on for the run only):
   immune to the scheduling noise that end-to-end figures suffer on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOTRACE = [sys.executable, "-m", "gotrace"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Probe hits per operation: which hooks fire (attach no longer probes execute).
HITS = {
    ("churn", "attach"): 2, ("churn", "hist"): 3, ("churn", "tail"): 3,
    ("pingpong", "attach"): 2, ("pingpong", "hist"): 4, ("pingpong", "tail"): 4,
}
EVENTS_PER_OP = {"churn": 2, "pingpong": 4}  # tail events: create+exit / 2 parks + 2 wakes
FUNCS = ("on_create_rbx", "on_wake", "on_park", "on_exit")


def binary() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.gobuild import build_go

    return str(build_go("1.27.3", ROOT / "tests" / "targets" / "lifetimes", "plain"))


def cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = stat[stat.rfind(")") + 2 :].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


class Target:
    def __init__(self, exe: str, mode: str, seconds: float, rate: float = 0) -> None:
        self.p = subprocess.Popen([exe, "-mode", mode, "-duration", f"{seconds}s", "-rate",
                                   str(rate)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        assert self.p.stdout is not None
        self.pid = int(self.p.stdout.readline().split("=")[1])
        self.p.stdout.readline()  # waiting

    def run(self) -> dict[str, Any]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()
        res = json.loads(self.p.stdout.readline())
        self.p.wait(timeout=60)
        return dict(res)


def tracer(config: str, pid: int) -> subprocess.Popen[str] | None:
    if config == "baseline":
        return None
    args = {
        "attach": ["attach", str(pid), "--json", "--interval", "1h", "--threshold", "1h"],
        "hist": ["hist", str(pid), "--json", "--duration", "1h"],
        "tail": ["tail", str(pid), "--json"],
    }[config]
    p = subprocess.Popen([*GOTRACE, *args], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stderr is not None
    for line in p.stderr:
        if "attached" in line:
            return p
    raise RuntimeError(f"{config} did not attach")


def finish(p: subprocess.Popen[str]) -> tuple[str, float]:
    """Stop the tracer; its stderr and its whole CPU time (catching up after SIGINT included)."""
    assert p.stderr is not None
    p.send_signal(signal.SIGINT)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return err, usage.ru_utime + usage.ru_stime


def tail_counts(err: str) -> tuple[int, int]:
    m = re.search(r"([\d,]+) events received, ([\d,]+) lost", err)
    if not m:
        raise RuntimeError(f"no summary from tail: {err[-500:]}")
    return int(m[1].replace(",", "")), int(m[2].replace(",", ""))


def one(exe: str, workload: str, config: str, seconds: float, rate: float = 0) -> dict[str, Any]:
    t = Target(exe, workload, seconds, rate)
    p = tracer(config, t.pid)
    time.sleep(0.3)
    cpu0 = cpu_s(p.pid) if p else 0.0
    res = t.run()
    row: dict[str, Any] = {"workload": workload, "config": config, "rate": rate,
                           "ns_per_op": res["ns_per_op"], "ops": res["ops"],
                           "seconds": res["seconds"]}
    if p:
        err, cpu1 = finish(p)
        row["tracer_cpu_s"] = cpu1 - cpu0
        row["tracer_cpu_pct"] = 100 * (cpu1 - cpu0) / res["seconds"]
        if config == "tail":
            row["events"], row["lost"] = tail_counts(err)
            row["tail_cpu_us_per_event"] = 1e6 * (cpu1 - cpu0) / max(row["events"], 1)
    return row


def probe_costs(exe: str, reps: int, seconds: float) -> list[dict[str, Any]]:
    """ns per operation against the baseline of the same repetition, every config in turn."""
    rows = []
    for rep in range(reps):
        for workload in ("churn", "pingpong"):
            for config in ("baseline", "attach", "hist", "tail"):
                r = one(exe, workload, config, seconds)
                print(f"  rep {rep + 1} {workload:8} {config:8} {r['ns_per_op']:9.1f} ns/op"
                      + (f"  events {r['events']:,} lost {r['lost']:,}" if "events" in r
                         else ""), file=sys.stderr)
                rows.append(r)
    out = []
    for workload in ("churn", "pingpong"):
        base = statistics.median(r["ns_per_op"] for r in rows
                                 if r["workload"] == workload and r["config"] == "baseline")
        for config in ("attach", "hist", "tail"):
            rs = [r for r in rows if r["workload"] == workload and r["config"] == config]
            ns = statistics.median(r["ns_per_op"] for r in rs)
            hits = HITS[(workload, config)]
            out.append({"workload": workload, "config": config, "baseline_ns_per_op": base,
                        "ns_per_op": ns, "added_ns_per_op": ns - base, "probe_hits_per_op": hits,
                        "added_ns_per_hit": (ns - base) / hits,
                        "tracer_cpu_pct": statistics.median(r["tracer_cpu_pct"] for r in rs),
                        "lost_events_max": max(r.get("lost", 0) for r in rs)})
    return out


def capacity(exe: str, reps: int, seconds: float, rates: list[int]) -> list[dict[str, Any]]:
    """ping-pong paced to `rate` tail events per second (4 per round trip)."""
    out = []
    for rate in rates:
        rs = [one(exe, "pingpong", "tail", seconds, rate / EVENTS_PER_OP["pingpong"])
              for _ in range(reps)]
        for r in rs:
            print(f"  target {rate:>9,} ev/s: received {r['events']:,}, lost {r['lost']:,}, "
                  f"tail CPU {r['tail_cpu_us_per_event']:.2f} µs/event", file=sys.stderr)
        out.append({
            "target_events_per_s": rate,
            "achieved_events_per_s": statistics.median(
                r["ops"] * EVENTS_PER_OP["pingpong"] / r["seconds"] for r in rs),
            "received_events_per_s": statistics.median(r["events"] / r["seconds"] for r in rs),
            "lost": [r["lost"] for r in rs],
            "tail_cpu_pct": statistics.median(r["tracer_cpu_pct"] for r in rs),
            "tail_cpu_us_per_event": statistics.median(r["tail_cpu_us_per_event"] for r in rs),
        })
    return out


def bpf_stats(tracer: Any) -> dict[str, tuple[int, float]]:
    """{BPF function: (runs, mean ns per run)} from the kernel's own accounting (fdinfo)."""
    out = {}
    for name, fn in tracer.bpf.funcs.items():
        info = {}
        for line in Path(f"/proc/self/fdinfo/{fn.fd}").read_text().splitlines():
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
        runs = int(info.get("run_cnt", 0))
        key = name.decode() if isinstance(name, bytes) else str(name)
        out[key] = (runs, int(info.get("run_time_ns", 0)) / runs if runs else 0.0)
    return out


def bpf_runtime(exe: str, seconds: float) -> list[dict[str, Any]]:
    """Mean BPF run time per probe hit of every build, measured by the kernel (bpf_stats).

    This is the part of a probe hit that gotrace's C decides; the uprobe trap around it costs
    the same for every build. Needs kernel.bpf_stats_enabled, switched on for the run only.
    """
    sys.path.insert(0, str(ROOT))
    from gotrace.commands.common import open_target
    from gotrace.live.tracer import EventTracer, HistTracer, LeakTracer
    from gotrace.model import Kind

    builds: dict[str, Any] = {
        # a create probe on every creation (attach's default has none: go statement probes)
        "attach --creation-stacks 64": lambda gb, tg, bias: LeakTracer(
            gb, tg, create_stack_every=64),
        "attach --park-times exact --creation-stacks 64": lambda gb, tg, bias: LeakTracer(
            gb, tg, park_probe=True, create_stack_every=64),
        "hist": lambda gb, tg, bias: HistTracer(gb, tg, by_site=False),
        "hist --by site": lambda gb, tg, bias: HistTracer(gb, tg, by_site=True),
        "tail": lambda gb, tg, bias: EventTracer(gb, tg, bias=bias, kinds=list(Kind)),
        "tail, no parked-at walk": lambda gb, tg, bias: EventTracer(
            gb, tg, bias=bias, kinds=list(Kind), park_walk=0),
    }
    knob = Path("/proc/sys/kernel/bpf_stats_enabled")
    old = knob.read_text().strip()
    knob.write_text("1")
    rows = []
    try:
        for workload in ("churn", "pingpong"):
            for build, make in builds.items():
                t = Target(exe, workload, seconds)
                target, gb = open_target(t.pid)
                tr = make(gb, target, target.load_bias(gb.img))
                tr.attach()
                done = threading.Event()

                def drain(tr: Any = tr, done: threading.Event = done) -> None:
                    while not done.is_set():
                        if getattr(tr, "reader", None) is not None:
                            tr.reader.drain()
                        time.sleep(0.02)

                th = threading.Thread(target=drain)
                th.start()
                t.run()
                done.set()
                th.join()
                stats = bpf_stats(tr)
                tr.close()
                for fn, (runs, ns) in sorted(stats.items()):
                    if runs > 100:
                        rows.append({"workload": workload, "build": build, "function": fn,
                                     "runs": runs, "ns_per_run": ns})
                        print(f"  {workload:8} {build:24} {fn:14} {ns:6.0f} ns x {runs:,}",
                              file=sys.stderr)
    finally:
        knob.write_text(old)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rates", default="100000,200000,300000,400000")
    ap.add_argument("--only", choices=["costs", "capacity", "runtime"], default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tail_hist.json"))
    args = ap.parse_args()
    exe = binary()
    costs: list[dict[str, Any]] = []
    cap: list[dict[str, Any]] = []
    runtime: list[dict[str, Any]] = []
    if args.only in (None, "costs"):
        print("probe cost per operation and per hit", file=sys.stderr)
        costs = probe_costs(exe, args.reps, args.seconds)
    if args.only in (None, "capacity"):
        print("tail capacity", file=sys.stderr)
        cap = capacity(exe, args.reps, args.seconds, [int(r) for r in args.rates.split(",")])
    if args.only in (None, "runtime"):
        print("BPF run time per probe hit (kernel bpf_stats)", file=sys.stderr)
        runtime = bpf_runtime(exe, args.seconds)
    result = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release,
                          "loadavg_at_end": os.getloadavg()},
              "probe_costs": costs, "tail_capacity": cap, "bpf_runtime": runtime}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{'workload':9} {'config':7} {'base ns/op':>10} {'ns/op':>9} {'added':>8} "
          f"{'hits':>4} {'ns/hit':>7} {'tracer CPU':>10} {'lost':>6}")
    for r in costs:
        print(f"{r['workload']:9} {r['config']:7} {r['baseline_ns_per_op']:10.0f} "
              f"{r['ns_per_op']:9.0f} {r['added_ns_per_op']:8.0f} {r['probe_hits_per_op']:4} "
              f"{r['added_ns_per_hit']:7.0f} {r['tracer_cpu_pct']:9.0f}% "
              f"{r['lost_events_max']:6}")
    print(f"\n{'asked ev/s':>10} {'made ev/s':>10} {'received/s':>10} {'µs CPU/event':>12}"
          "  lost per run")
    for c in cap:
        print(f"{c['target_events_per_s']:10,} {c['achieved_events_per_s']:10,.0f} "
              f"{c['received_events_per_s']:10,.0f} {c['tail_cpu_us_per_event']:12.2f}"
              f"  {c['lost']}")
    print(f"\n{'workload':9} {'build':24} " + " ".join(f"{f:>13}" for f in FUNCS))
    for workload in ("churn", "pingpong"):
        for build in dict.fromkeys(r["build"] for r in runtime):
            cells = {r["function"]: r["ns_per_run"] for r in runtime
                     if r["workload"] == workload and r["build"] == build}
            print(f"{workload:9} {build:24} " + " ".join(
                f"{cells[f]:10.0f} ns" if f in cells else f"{'-':>13}" for f in FUNCS))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
