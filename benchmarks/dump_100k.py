"""How long `gotrace dump` takes, and how much memory, on a program with 100,000 goroutines.

    sudo .venv/bin/python -m benchmarks.dump_100k [--counts 0,10000,100000] [--reps 3]
                                                  [--go 1.27.3] [--variant plain|stripped]

benchmarks/targets/manyg parks N goroutines over five go statements (one of them 10 frames
deep). For each N, in one run and interleaved: the program's own `runtime.Stack(buf, true)`
(timed inside the program; it stops the world meanwhile), `gotrace dump PID` (text) and
`gotrace dump PID --json`, both to /dev/null. gotrace's wall time includes its start-up
(reading the binary: pclntab, DWARF); "reading" is the part spent on the goroutines (the
dump's own elapsed_s), peak RSS is the gotrace process's (wait4). N=0 shows the fixed costs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "benchmarks" / "targets" / "manyg"
HEAD = 4096  # bytes of output kept: the title line, the JSON fields before "goroutines"


@dataclass
class Run:
    wall_s: float
    maxrss_mb: float
    out_bytes: int
    reading_s: float | None = None


def build(go: str, variant: str) -> Path:
    out = ROOT / ".cache" / "bin" / f"manyg-{go}-{variant}"
    flags = ["-ldflags=-s -w"] if variant == "stripped" else []
    subprocess.run([str(ROOT / "scripts" / "build-go"), go, str(TARGET), str(out), *flags],
                   check=True, capture_output=True, text=True)
    return out


def gotrace_dump(pid: int, *extra: str) -> tuple[Run, bytes]:
    """Run `gotrace dump`; its wall time and its own peak RSS (wait4 of exactly that child)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "gotrace", "dump", str(pid), *extra],
                                stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert proc.stdout is not None
        # Keep only the head of the output: a big heap here would be inherited by the next
        # child at fork and counted in its peak RSS.
        out = proc.stdout.read(HEAD)
        size = len(out)
        while chunk := proc.stdout.read(1 << 20):
            size += len(chunk)
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"gotrace dump failed: {err.read().decode()}")
    return Run(wall, usage.ru_maxrss / 1024, size), out


class Target:
    def __init__(self, binary: Path, n: int) -> None:
        self.proc = subprocess.Popen([str(binary), "-n", str(n)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"manyg did not start: {line!r}")
        self.goroutines = int(line.split("=")[1])

    def runtime_stack(self) -> tuple[float, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stack\n")
        self.proc.stdin.flush()
        fields = dict(kv.split("=") for kv in self.proc.stdout.readline().split()[1:])
        return int(fields["ns"]) / 1e9, int(fields["bytes"])

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="0,10000,100000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--go", default="1.27.3")
    ap.add_argument("--variant", choices=["plain", "stripped"], default="plain")
    args = ap.parse_args()
    binary = build(args.go, args.variant)
    print(f"gotrace dump vs runtime.Stack(all) · go{args.go} {args.variant} · "
          f"{os.cpu_count()} CPUs · median of {args.reps}")
    print(f"{'goroutines':>10} │ {'runtime.Stack':>13} │ {'dump text: wall':>15} "
          f"{'reading':>8} {'peak RSS':>9} │ {'--json: wall':>12} {'peak RSS':>9} "
          f"{'output':>9} │ {'reading ÷ runtime.Stack':>23}")
    results = []
    for n in (int(c) for c in args.counts.split(",")):
        target = Target(binary, n)
        base: list[float] = []
        text: list[Run] = []
        js: list[Run] = []
        try:
            for _ in range(args.reps):
                base.append(target.runtime_stack()[0])
                run, out = gotrace_dump(target.proc.pid)
                first = out.decode().splitlines()[0]
                assert f"· {target.goroutines:,} goroutines" in first, first
                text.append(run)
                run, out = gotrace_dump(target.proc.pid, "--json")
                head = out.decode()
                obj = json.loads(head[: head.index(',"goroutines":[')] + "}")
                assert obj["skipped"] == 0, obj["skipped"]
                run.reading_s = obj["elapsed_s"]
                js.append(run)
                text[-1].reading_s = run.reading_s  # the same reading, timed inside gotrace
        finally:
            target.stop()
        reading = median([r.reading_s or 0.0 for r in js])
        row = {
            "goroutines": target.goroutines,
            "runtime_stack_s": median(base),
            "text_wall_s": median([r.wall_s for r in text]),
            "text_rss_mb": max(r.maxrss_mb for r in text),
            "reading_s": reading,
            "json_wall_s": median([r.wall_s for r in js]),
            "json_rss_mb": max(r.maxrss_mb for r in js),
            "json_bytes": js[-1].out_bytes,
        }
        results.append(row)
        ratio = reading / row["runtime_stack_s"] if row["runtime_stack_s"] else float("nan")
        print(f"{row['goroutines']:>10,} │ {row['runtime_stack_s'] * 1000:>10.1f} ms │ "
              f"{row['text_wall_s']:>13.2f} s {reading:>6.2f} s {row['text_rss_mb']:>6.0f} MB │ "
              f"{row['json_wall_s']:>10.2f} s {row['json_rss_mb']:>6.0f} MB "
              f"{row['json_bytes'] / 1e6:>6.1f} MB │ {ratio:>22.1f}x", flush=True)
    print(json.dumps({"go": args.go, "variant": args.variant, "results": results}))


if __name__ == "__main__":
    main()
