"""What gotrace costs the traced program, side by side with a baseline, in one interleaved run.

Workloads (benchmarks/workload): goroutine churn (create + exit), channel ping-pong (park/wake
heavy) and a net/http server on 127.0.0.1 under a bounded load generator (a separate, untraced
process). Configurations: baseline, `gotrace attach`, `gotrace tail --json` to /dev/null,
`gotrace hist`, and Go's own execution tracer. Every repetition runs every configuration in
turn, so machine noise spreads over all of them; results are medians with min-max as ratios.

A calibration measures the floor: one uprobe hit on an emulated instruction running an empty
BPF program, which is what every gotrace probe costs at the very least.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOTRACE = [sys.executable, "-m", "gotrace"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    workload: str
    config: str
    ops_per_s: float
    ns_per_op: float
    events: int = 0
    lost: int = 0
    tracer_cpu_s: float = 0.0
    tracer_rss_mb: float = 0.0
    seconds: float = 0.0
    errors: int = 0


@dataclass
class Proc:
    p: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_line(self, prefix: str, timeout: float = 60) -> str:
        assert self.p.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.p.args!r} ended before {prefix!r}: {self.lines[-5:]}")
            self.lines.append(line.rstrip())
            if line.startswith(prefix):
                return line.rstrip()
        raise TimeoutError(prefix)


def start(args: list[str]) -> Proc:
    return Proc(subprocess.Popen(args, stdout=subprocess.PIPE, text=True, bufsize=1))


def cpu_and_rss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS in MB of a process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
        return cpu, rss
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0


def wait_attached(tracer: subprocess.Popen[str]) -> None:
    assert tracer.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = tracer.stderr.readline()
        if not line:
            raise RuntimeError(f"{tracer.args!r} ended before attaching")
        if "attached" in line:
            return
    raise TimeoutError("tracer did not attach")


def tracer_command(config: str, pid: int, duration: float) -> list[str] | None:
    if config == "attach":
        return [*GOTRACE, "attach", str(pid), "--json", "--interval", "1h", "--threshold", "1h"]
    if config == "tail":
        return [*GOTRACE, "tail", str(pid), "--json"]
    if config == "hist":
        return [*GOTRACE, "hist", str(pid), "--json", "--duration", f"{duration + 30:.0f}s"]
    return None


def final_json(out: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return dict(json.loads(line))
    return {}


def run_once(binary: str, workload: str, config: str, duration: float, conc: int) -> Run:
    mode = "server" if workload == "http" else workload
    args = [binary, "-mode", mode, "-duration", f"{duration}s"]
    trace_file = None
    if config == "go-trace":
        trace_file = tempfile.NamedTemporaryFile(suffix=".trace", delete=False)  # noqa: SIM115
        args += ["-trace", trace_file.name]
    target = start(args)
    pid = int(target.wait_line("pid=").split("=")[1])
    addr = target.wait_line("listening=").split("=")[1] if workload == "http" else ""
    target.wait_line("waiting")

    tracer = None
    out_path = tempfile.NamedTemporaryFile(suffix=".out", delete=False)  # noqa: SIM115
    cmd = tracer_command(config, pid, duration)
    if cmd:
        stdout = subprocess.DEVNULL if config == "tail" else out_path
        tracer = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                  cwd=ROOT)
        wait_attached(tracer)
        time.sleep(0.5)
    cpu0 = cpu_and_rss(tracer.pid)[0] if tracer else 0.0

    os.kill(pid, signal.SIGUSR1)
    loadgen = None
    if workload == "http":
        loadgen = start([binary, "-mode", "load", "-addr", addr, "-c", str(conc),
                         "-duration", f"{duration}s"])
        loadgen.wait_line("waiting")
        os.kill(loadgen.p.pid, signal.SIGUSR1)
        res = json.loads(loadgen.wait_line('{"mode"'))
        loadgen.p.wait(timeout=30)
        target.wait_line('{"mode"')
    else:
        res = json.loads(target.wait_line('{"mode"', timeout=duration + 60))

    run = Run(workload, config, res["ops_per_s"], res["ns_per_op"], seconds=res["seconds"],
              errors=res.get("errors", 0))
    if tracer:
        cpu1, run.tracer_rss_mb = cpu_and_rss(tracer.pid)
        run.tracer_cpu_s = cpu1 - cpu0
        tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=60)
        except subprocess.TimeoutExpired:
            tracer.kill()
        report = final_json(Path(out_path.name).read_text())
        run.lost = int(report.get("lost_events", 0))
        run.events = sum(int(report.get(k, 0)) for k in ("created", "exited", "parks", "wakes"))
    target.p.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        target.p.wait(timeout=10)
    if target.p.poll() is None:
        target.p.kill()
    os.unlink(out_path.name)
    if trace_file:
        os.unlink(trace_file.name)
    return run


def calibrate(binary: str, duration: float) -> dict[str, float]:
    """ns per call of an empty Go function, without and with an empty uprobe on it."""
    from bcc import BPF

    from gotrace.binary.disasm import entry_probe
    from gotrace.binary.gobinary import GoBinary

    gb = GoBinary.open(binary)
    hook = gb.func("main.hook")
    point = entry_probe(gb.img, hook.entry, hook.end)
    results: dict[str, list[float]] = {"no probe": [], "empty probe": []}
    for _ in range(3):
        for kind in results:
            target = start([binary, "-mode", "calibrate", "-duration", f"{duration}s"])
            pid = int(target.wait_line("pid=").split("=")[1])
            target.wait_line("waiting")
            bpf = None
            if kind == "empty probe":
                bpf = BPF(text="int empty(void *ctx) { return 0; }")
                bpf.attach_uprobe(name=binary.encode(), addr=point.addr, fn_name=b"empty",
                                  pid=pid)
            os.kill(pid, signal.SIGUSR1)
            res = json.loads(target.wait_line('{"mode"', timeout=duration + 60))
            results[kind].append(res["ns_per_op"])
            target.p.wait(timeout=10)
            if bpf:
                bpf.cleanup()
    base = statistics.median(results["no probe"])
    probed = statistics.median(results["empty probe"])
    return {"call_ns": base, "probed_call_ns": probed, "floor_ns": probed - base,
            "emulated": float(point.emulated), "probe_offset": point.addr - hook.entry}


def available_configs() -> list[str]:
    configs = ["baseline", "attach"]
    for cmd in ("tail", "hist"):
        ok = subprocess.run([*GOTRACE, cmd, "--help"], capture_output=True, cwd=ROOT)
        if ok.returncode == 0:
            configs.append(cmd)
    return [*configs, "go-trace"]


def summarize(runs: list[Run], floor_ns: float) -> list[dict[str, Any]]:
    rows = []
    for workload in dict.fromkeys(r.workload for r in runs):
        base = [r for r in runs if r.workload == workload and r.config == "baseline"]
        base_ops = statistics.median(r.ops_per_s for r in base)
        base_ns = statistics.median(r.ns_per_op for r in base)
        for config in dict.fromkeys(r.config for r in runs if r.workload == workload):
            rs = [r for r in runs if r.workload == workload and r.config == config]
            ratios = [r.ops_per_s / base_ops for r in rs]
            ns = statistics.median(r.ns_per_op for r in rs)
            secs = statistics.median(r.seconds for r in rs)
            row = {
                "workload": workload, "config": config, "reps": len(rs),
                "throughput_ratio": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
                "ops_per_s": statistics.median(r.ops_per_s for r in rs),
                "ns_per_op": ns, "added_ns_per_op": ns - base_ns,
                "events_per_s": statistics.median(r.events / max(secs, 1e-9) for r in rs),
                "lost_events": max(r.lost for r in rs),
                "tracer_cpu_pct": statistics.median(100 * r.tracer_cpu_s / max(r.seconds, 1e-9)
                                                    for r in rs),
                "tracer_peak_rss_mb": max(r.tracer_rss_mb for r in rs),
                "errors": sum(r.errors for r in rs),
            }
            if floor_ns > 0 and workload != "http":
                row["added_in_floor_hits"] = (ns - base_ns) / floor_ns
            rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], cal: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=max(140, Console().width))
    con.print(f"floor: one emulated uprobe hit with an empty BPF program = "
              f"{cal['floor_ns']:.0f} ns (call {cal['call_ns']:.1f} ns → "
              f"{cal['probed_call_ns']:.0f} ns)")
    t = Table(title="gotrace overhead (median of reps; ratio = throughput vs baseline)")
    for col in ("workload", "config", "ratio (min-max)", "ns/op", "added ns/op",
                "= floor hits", "events/s", "lost", "tracer CPU", "tracer RSS"):
        t.add_column(col, justify="left" if col in ("workload", "config") else "right")
    for r in rows:
        t.add_row(r["workload"], r["config"],
                  f"{r['throughput_ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                  f"{r['ns_per_op']:,.0f}", f"{r['added_ns_per_op']:+,.0f}",
                  f"{r['added_in_floor_hits']:.1f}" if "added_in_floor_hits" in r else "",
                  f"{r['events_per_s']:,.0f}" if r["events_per_s"] else "",
                  str(r["lost_events"]) if r["config"] not in ("baseline", "go-trace") else "",
                  f"{r['tracer_cpu_pct']:.0f}%" if r["tracer_cpu_pct"] else "",
                  f"{r['tracer_peak_rss_mb']:.0f} MB" if r["tracer_peak_rss_mb"] else "")
    con.print(t)


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "baseline"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(configs)
    for i, config in enumerate(configs):
        rs = [next(r for r in rows if r["workload"] == w and r["config"] == config)
              for w in workloads]
        xs = [j + i * width for j in range(len(workloads))]
        ys = [r["throughput_ratio"] for r in rs]
        err = [[y - r["ratio_min"] for y, r in zip(ys, rs, strict=True)],
               [r["ratio_max"] - y for y, r in zip(ys, rs, strict=True)]]
        ax.bar(xs, ys, width, yerr=err, capsize=3, label=config)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(configs) - 1) / 2 for j in range(len(workloads))],
                  workloads)
    ax.set_ylabel("throughput / baseline")
    ax.set_title(f"gotrace overhead on {platform.node() or 'this machine'} "
                 f"({os.cpu_count()} CPUs, Linux {platform.release()})")
    ax.legend(ncols=len(configs), fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="benchmarks/workload built with Go")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workloads", default="churn,pingpong,http")
    ap.add_argument("--configs", default="", help="default: all available")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    configs = args.configs.split(",") if args.configs else available_configs()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cal = calibrate(args.binary, 2.0)
    runs: list[Run] = []
    for rep in range(args.reps):
        for workload in args.workloads.split(","):
            for config in configs:
                r = run_once(args.binary, workload, config, args.duration, args.concurrency)
                runs.append(r)
                print(f"rep {rep + 1}/{args.reps} {workload:9} {config:9} "
                      f"{r.ops_per_s:12,.0f} ops/s  lost {r.lost}", file=sys.stderr)
    rows = summarize(runs, cal["floor_ns"])
    print_table(rows, cal)
    meta = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
            "duration_s": args.duration, "reps": args.reps, "calibration": cal}
    (out / "overhead.json").write_text(json.dumps(
        {**meta, "rows": rows, "runs": [r.__dict__ for r in runs]}, indent=1))
    chart(rows, out / "overhead.png")
    print(f"wrote {out / 'overhead.json'} and {out / 'overhead.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
