"""What gotrace costs the traced program, side by side with a baseline, in one interleaved run.

Workloads (benchmarks/workload): goroutine churn (create + exit), channel ping-pong (park/wake
heavy), a net/http server on 127.0.0.1 under a bounded load generator (a separate, untraced
process), and the same server starting one goroutine per request and waiting for it
(http-spawn, errgroup style). Configurations: baseline twice (baseline2 shows the noise band),
`gotrace attach` in its modes (default: a probe on each go statement until it walked a
creation stack, park state read from memory; `--creation-stacks 64`: a probe on every creation
instead; `--park-times exact`: probes on park and exit too; `--no-bpf`: no probe at all),
`gotrace tail --json` to /dev/null, `gotrace hist`, and Go's own execution tracer. Every
repetition runs every configuration in turn, so machine noise spreads over all of them; results
are medians with min-max as ratios to the baseline, and the targets are checked at the end.

A calibration measures the floor: one uprobe hit on an emulated instruction running an empty
BPF program, which is what every gotrace probe costs at the very least.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
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
# workload -> the workload binary's arguments
WORKLOADS = {
    "churn": ["-mode", "churn"],
    "pingpong": ["-mode", "pingpong"],
    "http": ["-mode", "server", "-handler", "plain"],
    "http-spawn": ["-mode", "server", "-handler", "spawn"],
}
# What one op is, per workload (the "added per op" and "= floor hits" columns are per op).
OP = {
    "churn": "goroutine lifecycle (create + exit)",
    "pingpong": "round trip (2 parks + 2 wake-ups)",
    "http": "request (net/http itself starts a goroutine per request: the connection's "
            "background read)",
    "http-spawn": "request (as http, plus one goroutine the handler starts and waits for)",
}
BASELINES = ("baseline", "baseline2")
ATTACH_ARGS = {
    "attach": [],
    "attach-every": ["--creation-stacks", "64"],
    "attach-exact": ["--park-times", "exact"],
    "attach-nobpf": ["--no-bpf"],
}
# Probe hits per config: the report's counters that count probe hits (attach's default mode
# counts creations from the goids it reads, and its go statement probes apart; --no-bpf has no
# probe at all).
HIT_COUNTERS = {
    "attach": ("go_statement_hits",),
    "attach-every": ("created",),
    "attach-exact": ("created", "exited", "parks"),
    "attach-nobpf": (),
    "hist": ("created", "exited", "parks", "wakes"),
}
TAIL_SUMMARY = re.compile(r"([\d,]+) events received, ([\d,]+) lost")
# Targets (issue "attach at one probe hit per goroutine, or none").
TARGET_LIFECYCLE_FLOOR_HITS = 1.2  # attach, per goroutine lifecycle (churn)
TARGET_PARK_FLOOR_HITS = 0.1  # attach, added per park/wake: "~0" (or within the noise band)
TARGET_HTTP_SPAWN_RATIO = 0.97  # attach on http-spawn, and >= Go's execution tracer


@dataclass
class Run:
    workload: str
    config: str
    ops_per_s: float
    ns_per_op: float
    events: int = 0
    probe_hits: int = 0
    ops: int = 0
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
    if config in ATTACH_ARGS:  # no report while measuring; reads every --read-interval (1s)
        return [*GOTRACE, "attach", str(pid), "--json", "--interval", "1h", "--threshold", "1h",
                *ATTACH_ARGS[config]]
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
    server = workload.startswith("http")
    # -linger: the target outlives its result line until SIGTERM, so every tracer makes its
    # final report with the target still there (as on a real service).
    args = [binary, *WORKLOADS[workload], "-duration", f"{duration}s", "-linger", "120s"]
    trace_file = None
    if config == "go-trace":
        trace_file = tempfile.NamedTemporaryFile(suffix=".trace", delete=False)  # noqa: SIM115
        args += ["-trace", trace_file.name]
    target = start(args)
    pid = int(target.wait_line("pid=").split("=")[1])
    addr = target.wait_line("listening=").split("=")[1] if server else ""
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
    if server:
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
              errors=res.get("errors", 0), ops=int(res["ops"]))
    if tracer:
        cpu1, run.tracer_rss_mb = cpu_and_rss(tracer.pid)
        run.tracer_cpu_s = cpu1 - cpu0
        tracer.send_signal(signal.SIGINT)
        try:
            _, said = tracer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            tracer.kill()
            _, said = tracer.communicate()
        report = final_json(Path(out_path.name).read_text())
        run.lost = int(report.get("lost_events", 0))
        run.events = sum(int(report.get(k, 0)) for k in ("created", "exited", "parks", "wakes"))
        run.probe_hits = sum(int(report.get(k, 0)) for k in HIT_COUNTERS.get(config, ()))
        m = TAIL_SUMMARY.search(said or "")
        if config == "tail" and m:  # its events go to /dev/null; its summary is on stderr
            received, lost = (int(x.replace(",", "")) for x in m.groups())
            run.events, run.lost = received + lost, lost
            run.probe_hits = received + lost  # one event per probe hit
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
    configs = ["baseline", "baseline2", *ATTACH_ARGS]
    for cmd in ("tail", "hist"):
        ok = subprocess.run([*GOTRACE, cmd, "--help"], capture_output=True, cwd=ROOT)
        if ok.returncode == 0:
            configs.append(cmd)
    return [*configs, "go-trace"]


def noise_bands(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Per workload: the spread of baseline-vs-baseline (every baseline and baseline2 run over
    the baseline median). A configuration whose median ratio falls inside it is indistinguishable
    from the baseline in this run."""
    out = {}
    for workload in dict.fromkeys(r.workload for r in runs):
        base = [r.ops_per_s for r in runs if r.workload == workload and r.config == "baseline"]
        both = [r.ops_per_s for r in runs if r.workload == workload and r.config in BASELINES]
        if not base:
            continue
        med = statistics.median(base)
        out[workload] = {"lo": min(both) / med, "hi": max(both) / med}
    return out


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
            probed = config in HIT_COUNTERS or config == "tail"
            row = {
                "workload": workload, "op": OP.get(workload, "op"), "config": config,
                "reps": len(rs),
                "throughput_ratio": statistics.median(ratios),
                "ratio_min": min(ratios), "ratio_max": max(ratios),
                "ops_per_s": statistics.median(r.ops_per_s for r in rs),
                "ns_per_op": ns, "added_ns_per_op": ns - base_ns,
                "probe_hits_per_op": (statistics.median(r.probe_hits / max(r.ops, 1) for r in rs)
                                      if probed else None),
                "events_per_s": statistics.median(r.events / max(secs, 1e-9) for r in rs),
                "lost_events": max(r.lost for r in rs),
                "tracer_cpu_pct": statistics.median(100 * r.tracer_cpu_s / max(r.seconds, 1e-9)
                                                    for r in rs),
                "tracer_peak_rss_mb": max(r.tracer_rss_mb for r in rs),
                "errors": sum(r.errors for r in rs),
            }
            if floor_ns > 0 and not workload.startswith("http"):
                row["added_in_floor_hits"] = (ns - base_ns) / floor_ns
            rows.append(row)
    return rows


def find(rows: list[dict[str, Any]], workload: str, config: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["workload"] == workload and r["config"] == config), None)


def check_targets(rows: list[dict[str, Any]], bands: dict[str, dict[str, float]],
                  floor_ns: float) -> list[dict[str, Any]]:
    """The issue's targets, each with what was measured and pass/fail (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(name: str, target: str, measured: str, ok: bool | None) -> None:
        out.append({"target": name, "wanted": target, "measured": measured, "pass": ok})

    def inside(workload: str, ratio: float) -> bool | None:
        band = bands.get(workload)
        return None if band is None else band["lo"] <= ratio <= band["hi"]

    churn = find(rows, "churn", "attach")
    if churn and "added_in_floor_hits" in churn:
        hits = churn["probe_hits_per_op"]
        add("attach: cost per goroutine lifecycle (churn)",
            f"<= {TARGET_LIFECYCLE_FLOOR_HITS} floor hits",
            f"{churn['added_in_floor_hits']:.2f} floor hits ({churn['added_ns_per_op']:+,.0f} ns;"
            f" {hits:.3f} probe hits per goroutine)",
            churn["added_in_floor_hits"] <= TARGET_LIFECYCLE_FLOOR_HITS)
    pp = find(rows, "pingpong", "attach")
    if pp and "added_in_floor_hits" in pp:
        hits = pp["probe_hits_per_op"] / 2  # a round trip is 2 park/wake cycles
        add("attach: probe hits per park/wake (pingpong)", "0",
            f"{hits:.2g} (the ponger's creation, over every round trip)", hits < 0.001)
        per = pp["added_ns_per_op"] / 2
        in_band = inside("pingpong", pp["throughput_ratio"])
        add("attach: added cost per park/wake (pingpong)",
            f"~0: <= {TARGET_PARK_FLOOR_HITS} floor hits, or ratio within the baseline noise band",
            f"{per:+,.0f} ns = {per / floor_ns:+.2f} floor hits; ratio "
            f"{pp['throughput_ratio']:.3f}, band {band_text(bands, 'pingpong')}",
            per / floor_ns <= TARGET_PARK_FLOOR_HITS or bool(in_band))
    spawn = find(rows, "http-spawn", "attach")
    trace = find(rows, "http-spawn", "go-trace")
    if spawn:
        add("attach on net/http, a goroutine per request (http-spawn)",
            f">= {TARGET_HTTP_SPAWN_RATIO}x baseline",
            f"{spawn['throughput_ratio']:.3f} ({spawn['ratio_min']:.2f}-{spawn['ratio_max']:.2f})",
            spawn["throughput_ratio"] >= TARGET_HTTP_SPAWN_RATIO)
        if trace:
            add("attach vs Go's execution tracer (http-spawn, same run)",
                ">= the execution tracer's ratio",
                f"{spawn['throughput_ratio']:.3f} vs {trace['throughput_ratio']:.3f}",
                spawn["throughput_ratio"] >= trace["throughput_ratio"])
    for workload in bands:
        nb = find(rows, workload, "attach-nobpf")
        if nb:
            add(f"attach --no-bpf indistinguishable from baseline ({workload})",
                "median ratio within the baseline-vs-baseline band",
                f"{nb['throughput_ratio']:.3f}, band {band_text(bands, workload)}",
                inside(workload, nb["throughput_ratio"]))
    return out


def band_text(bands: dict[str, dict[str, float]], workload: str) -> str:
    b = bands.get(workload)
    return f"{b['lo']:.3f}-{b['hi']:.3f}" if b else "?"


def machine_load() -> dict[str, Any]:
    """What else the machine was doing: load average and the busiest processes not ours."""
    ours = {os.getpid()}
    ps = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,etimes,args", "--sort=-pcpu", "--no-headers"],
                        capture_output=True, text=True).stdout.splitlines()
    busy = []
    for line in ps:
        parts = line.split(None, 4)
        if len(parts) < 5 or int(parts[0]) in ours or int(parts[1]) in ours:
            continue
        if float(parts[2]) < 5:
            break
        busy.append({"pcpu_avg": float(parts[2]), "running_s": int(parts[3]),
                     "command": parts[4][:160]})
    return {"loadavg": Path("/proc/loadavg").read_text().split()[:3], "busy": busy[:10]}


def print_table(rows: list[dict[str, Any]], cal: dict[str, float],
                targets: list[dict[str, Any]], bands: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(highlight=False, width=max(150, Console().width))
    con.print(f"floor: one emulated uprobe hit with an empty BPF program = "
              f"{cal['floor_ns']:.0f} ns (call {cal['call_ns']:.1f} ns → "
              f"{cal['probed_call_ns']:.0f} ns)")
    for w in dict.fromkeys(r["workload"] for r in rows):
        con.print(f"  {w}: one op = {OP.get(w, 'op')}; baseline-vs-baseline band "
                  f"{band_text(bands, w)}")
    t = Table(title="gotrace overhead (median of reps; ratio = throughput vs baseline)")
    for col in ("workload", "config", "ratio (min-max)", "ns/op", "added ns/op",
                "= floor hits", "probe hits/op", "lost", "tracer CPU", "tracer RSS"):
        t.add_column(col, justify="left" if col in ("workload", "config") else "right")
    for r in rows:
        hits = r["probe_hits_per_op"]
        t.add_row(r["workload"], r["config"],
                  f"{r['throughput_ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                  f"{r['ns_per_op']:,.0f}", f"{r['added_ns_per_op']:+,.0f}",
                  f"{r['added_in_floor_hits']:+.2f}" if "added_in_floor_hits" in r else "",
                  "" if hits is None else f"{hits:.3g}",
                  str(r["lost_events"]) if r["config"] not in (*BASELINES, "go-trace") else "",
                  f"{r['tracer_cpu_pct']:.0f}%" if r["tracer_cpu_pct"] else "",
                  f"{r['tracer_peak_rss_mb']:.0f} MB" if r["tracer_peak_rss_mb"] else "")
    con.print(t)
    tt = Table(title="targets")
    for col in ("target", "wanted", "measured", "result"):
        tt.add_column(col)
    for x in targets:
        res = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "n/a"}[x["pass"]]
        tt.add_row(x["target"], x["wanted"], x["measured"], res)
    con.print(tt)


def chart(rows: list[dict[str, Any]], bands: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    configs = [c for c in dict.fromkeys(r["config"] for r in rows) if c != "baseline"]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(configs)
    for j, w in enumerate(workloads):
        if w in bands:  # the baseline-vs-baseline noise band
            ax.fill_between([j - width / 2, j + 0.8 - width / 2], bands[w]["lo"], bands[w]["hi"],
                            color="grey", alpha=0.25, linewidth=0,
                            label="baseline noise band" if j == 0 else None)
    for i, config in enumerate(configs):
        rs = [find(rows, w, config) for w in workloads]
        xs = [j + i * width for j, r in enumerate(rs) if r]
        have = [r for r in rs if r]
        ys = [r["throughput_ratio"] for r in have]
        err = [[y - r["ratio_min"] for y, r in zip(ys, have, strict=True)],
               [r["ratio_max"] - y for y, r in zip(ys, have, strict=True)]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=config)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(TARGET_HTTP_SPAWN_RATIO, color="black", linewidth=0.6, linestyle=":")
    ax.set_xticks([j + width * (len(configs) - 1) / 2 for j in range(len(workloads))],
                  workloads)
    ax.set_ylabel("throughput / baseline (median, min-max)")
    ax.set_title(f"gotrace overhead ({os.cpu_count()} CPUs, Linux {platform.release()}); "
                 f"dotted: {TARGET_HTTP_SPAWN_RATIO}")
    ax.legend(ncols=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="benchmarks/workload built with Go")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--configs", default="", help="default: all available")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="overhead", help="NAME.json and NAME.png in --out")
    ap.add_argument("--chart", action=argparse.BooleanOptionalAction, default=True,
                    help="draw NAME.png (needs matplotlib: the bench extra)")
    args = ap.parse_args()

    from gotrace.binary.gobinary import GoBinary

    configs = args.configs.split(",") if args.configs else available_configs()
    if "baseline" not in configs:
        configs.insert(0, "baseline")  # every ratio is to it
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = machine_load()
    cal = calibrate(args.binary, 2.0)
    meta: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                        "arch": platform.machine(),
                        # scripts/vmtest sets it in its guests: "tcg" is software emulation
                        "vm_accel": os.environ.get("GOTRACE_VM_ACCEL"),
                        "go": GoBinary.open(args.binary).go_version, "load_before": load_before},
            "duration_s": args.duration, "reps": args.reps, "concurrency": args.concurrency,
            "calibration": cal, "ops": {w: OP[w] for w in workloads},
            "wanted": {"attach_lifecycle_floor_hits_max": TARGET_LIFECYCLE_FLOOR_HITS,
                       "attach_park_wake_probe_hits": 0,
                       "attach_park_wake_floor_hits_max": TARGET_PARK_FLOOR_HITS,
                       "attach_http_spawn_ratio_min": TARGET_HTTP_SPAWN_RATIO,
                       "attach_http_spawn_vs_go_trace": ">=",
                       "attach_nobpf": "within the baseline-vs-baseline band"}}
    runs: list[Run] = []
    rows: list[dict[str, Any]] = []
    bands: dict[str, dict[str, float]] = {}
    targets: list[dict[str, Any]] = []
    for rep in range(args.reps):
        # Rotate the order every repetition: no configuration always runs first or last.
        k = rep % len(configs)
        order = configs[k:] + configs[:k]
        for workload in workloads:
            for config in order:
                r = run_once(args.binary, workload, config, args.duration, args.concurrency)
                runs.append(r)
                print(f"rep {rep + 1}/{args.reps} {workload:10} {config:12} "
                      f"{r.ops_per_s:12,.0f} ops/s  hits/op {r.probe_hits / max(r.ops, 1):.3g}"
                      f"  lost {r.lost}", file=sys.stderr)
        rows = summarize(runs, cal["floor_ns"])
        bands = noise_bands(runs)
        targets = check_targets(rows, bands, cal["floor_ns"])
        meta["machine"]["load_after"] = machine_load()
        meta["reps_done"] = rep + 1
        (out / f"{args.name}.json").write_text(json.dumps(  # after every rep: partial runs survive
            {**meta, "noise_band": bands, "targets": targets, "rows": rows,
             "runs": [r.__dict__ for r in runs]}, indent=1))
    print_table(rows, cal, targets, bands)
    written = [out / f"{args.name}.json"]
    if args.chart:
        chart(rows, bands, out / f"{args.name}.png")
        written.append(out / f"{args.name}.png")
    print(f"wrote {' and '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
