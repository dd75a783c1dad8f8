"""What reading goroutines from outside costs the tracer, next to the program's own
`runtime.Stack(buf, true)` (which stops the world meanwhile).

    sudo .venv/bin/python -m benchmarks.read_cost [--counts 10000,100000,1000000] [--reps 3]
                                                  [--dump-counts 100000,1000000] [--go 1.27.3]

benchmarks/targets/manyg parks N goroutines over five go statements. For each N:

- runtime.Stack: timed inside the program (median of reps);
- scan: one pass over allgs, every runtime.g decoded (GoroutineReader.scan), in a fresh
  gotrace process: CPU seconds of the scan itself (median of reps) and that process's peak RSS;
- suspects: the check attach does at report time, for up to 100,000 suspects at once: their
  gs read again by address in one batch (read_gs) and their parked stacks (stacks), CPU;
- report: attach --no-bpf's whole final report with every parked goroutine a suspect (the
  read, stacks, grouping, symbols, the JSON line), wall and CPU;
- dump (for --dump-counts): `gotrace dump PID` and `gotrace dump PID --json` to /dev/null,
  wall time including start-up, and peak RSS (wait4 of exactly that process).

Writes benchmarks/results/read_cost.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from benchmarks.dump_100k import ROOT, Target, build, gotrace_dump

RESULTS = ROOT / "benchmarks" / "results" / "read_cost.json"
SUSPECTS = 100_000


def child(pid: int, reps: int) -> None:
    """In a fresh process: scan reps times, then check up to SUSPECTS goroutines at once."""
    from gotrace.binary.gobinary import GoBinary
    from gotrace.live.goroutines import GoroutineReader, StackStats
    from gotrace.live.process import ProcessMemory
    from gotrace.live.process import Target as Proc

    target = Proc.find(pid)
    gb = GoBinary.open(target.exe)
    mem = ProcessMemory(pid)
    reader = GoroutineReader(gb, mem, target.load_bias(gb.img))
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(reps):
        c, w = time.process_time(), time.perf_counter()
        scan = reader.scan()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        n = len(scan.goroutines)
        skipped = scan.skipped
        del scan
    scan = reader.scan()
    picked = [g for g in scan.goroutines if g.parked][:SUSPECTS]
    addrs = [g.gaddr for g in picked]
    goids = [g.goid for g in picked]
    del scan
    c = time.process_time()
    now = reader.read_gs(addrs)
    same = [g for g, goid in zip(now, goids, strict=True)
            if g is not None and g.goid == goid and g.parked]
    stats = StackStats()
    stacks = reader.stacks(same, 100, stats)
    suspects_cpu = time.process_time() - c
    report = leak_report(target, gb)
    print(json.dumps({
        **report,
        "goroutines": n, "skipped": skipped, "syscalls": mem.syscalls,
        "scan_cpu_s": statistics.median(cpu), "scan_wall_s": statistics.median(wall),
        "suspects": len(addrs), "suspects_parked": len(same),
        "suspects_stacks": sum(1 for s in stacks if s is not None),
        "suspects_cpu_s": suspects_cpu, "suspects_changed": stats.changed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


def leak_report(target: Any, gb: Any) -> dict[str, float]:
    """attach --no-bpf's whole report with every goroutine a suspect: the read, the stacks,
    grouping and symbolization, and the JSON line, timed."""
    from gotrace.analysis.leaks import LeakSession
    from gotrace.render.json import JsonLinesRenderer

    session = LeakSession(target, gb, None, threshold_s=0.5)
    session.seed()
    time.sleep(0.6)
    with open(os.devnull, "w") as null:
        c, w = time.process_time(), time.perf_counter()
        r = session.leak_report(final=True)
        JsonLinesRenderer(null).render(r)
        cpu, wall = time.process_time() - c, time.perf_counter() - w
    session.close()
    return {"report_suspects": sum(s.count for s in r.suspects), "report_groups": len(r.suspects),
            "report_cpu_s": cpu, "report_wall_s": wall}


def measure_scan(pid: int, reps: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.read_cost", "--child", str(pid),
                          "--reps", str(reps)], cwd=ROOT, check=True, capture_output=True,
                         text=True)
    got: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="10000,100000,1000000")
    ap.add_argument("--dump-counts", default="100000,1000000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--go", default="1.27.3")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.reps)
        return
    binary = build(args.go, "plain")
    dump_counts = {int(c) for c in args.dump_counts.split(",") if c}
    rows = []
    print(f"reading goroutines from outside vs runtime.Stack(all) · go{args.go} · "
          f"{os.cpu_count()} CPUs · load {os.getloadavg()[0]:.1f} · median of {args.reps}")
    print(f"{'goroutines':>10} │ {'runtime.Stack':>13} │ {'scan CPU':>9} {'scan RSS':>9} │ "
          f"{'suspects':>8} {'CPU':>7} │ {'report':>7} │ {'dump wall':>9} {'RSS':>7} │ "
          f"{'--json':>7} {'RSS':>7}")
    for n in (int(c) for c in args.counts.split(",")):
        started = time.perf_counter()
        target = Target(binary, n)
        ready_s = time.perf_counter() - started
        try:
            base = [target.runtime_stack() for _ in range(args.reps)]
            row: dict[str, object] = {
                "goroutines": target.goroutines, "target_ready_s": round(ready_s, 1),
                "runtime_stack_s": statistics.median(b[0] for b in base),
                "runtime_stack_bytes": base[-1][1],
                **measure_scan(target.proc.pid, args.reps)}
            if n in dump_counts:
                text = [gotrace_dump(target.proc.pid)[0] for _ in range(args.reps)]
                js = [gotrace_dump(target.proc.pid, "--json")[0] for _ in range(args.reps)]
                row |= {"dump_wall_s": statistics.median(r.wall_s for r in text),
                        "dump_rss_mb": max(r.maxrss_mb for r in text),
                        "dump_json_wall_s": statistics.median(r.wall_s for r in js),
                        "dump_json_rss_mb": max(r.maxrss_mb for r in js),
                        "dump_json_bytes": js[-1].out_bytes}
        finally:
            target.stop()
        rows.append(row)

        def f(key: str, unit: str = "s", digits: int = 3, width: int = 7,
              row: dict[str, object] = row) -> str:
            v = row.get(key)
            return f"{v:>{width}.{digits}f}{unit}" if isinstance(v, float) else \
                f"{'-':>{width + len(unit)}}"

        print(f"{row['goroutines']:>10,} │ {f('runtime_stack_s', ' s', 3, 11)} │ "
              f"{f('scan_cpu_s', ' s', 3, 7)} {f('peak_rss_mb', ' MB', 0, 6)} │ "
              f"{row['suspects']:>8,} {f('suspects_cpu_s', ' s', 2, 5)} │ "
              f"{f('report_wall_s', ' s', 2, 5)} │ "
              f"{f('dump_wall_s', ' s', 2, 7)} {f('dump_rss_mb', ' MB', 0, 4)} │ "
              f"{f('dump_json_wall_s', ' s', 2, 5)} {f('dump_json_rss_mb', ' MB', 0, 4)}",
              flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "go": args.go, "cpus": os.cpu_count(), "python": platform.python_version(),
        "kernel": platform.release(), "reps": args.reps, "results": rows}, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
