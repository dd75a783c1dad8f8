"""The long fuzzing campaign: at least a million executions of every harness in tests/fuzz.

Each harness runs under `nice -n 19` (the machine is shared), at most two at a time, from a
corpus kept in .cache/fuzz/campaign/<harness>/corpus (a rerun resumes from it) plus the seeds
of tests/fuzz/seeds.py (made if missing) and the regression inputs. Findings do not stop a
run: the harness saves one input per distinct exception site (GOTRACE_FUZZ_KEEP_GOING) and
goes on; a hang or a memory blow-up ends libFuzzer, which leaves its artifact, and the run is
resumed for the executions still due. Figures per harness (executions, time, libFuzzer's final
`cov:` and `ft:`, findings) go to benchmarks/results/fuzz.json, rewritten as harnesses finish.

    .venv/bin/python -m benchmarks.fuzz [--runs 1000000] [--jobs 2] [HARNESS ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.common import CACHE, FUZZ_DIR, REGRESSIONS, SEEDS  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "fuzz.json"
WORK = CACHE / "campaign"
RESTARTS = 20  # libFuzzer exits on a hang or an OOM; resume at most this many times
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))


@dataclass
class Figures:
    harness: str
    executions: int = 0
    seconds: float = 0.0
    exec_per_s: float = 0.0
    cov: int = 0  # libFuzzer's coverage of the instrumented Python (edges), final stats
    ft: int = 0  # features
    corpus: int = 0
    runs: int = 0  # libFuzzer processes (1 + restarts after hangs/OOMs)
    findings: dict[str, int] = field(default_factory=dict)  # exception site -> inputs hitting it
    artifacts: list[str] = field(default_factory=list)  # crash/timeout/oom inputs
    done: bool = False


_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")


def run_harness(h: str, runs: int, max_seconds: float, results: dict[str, Figures],
                lock: threading.Lock) -> None:
    work = WORK / h
    corpus = work / "corpus"
    findings = work / "findings"
    artifacts = work / "artifacts"
    for d in (corpus, findings, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    fig = Figures(h)
    env = dict(os.environ, GOTRACE_FUZZ_KEEP_GOING=str(findings))
    started = time.monotonic()
    while fig.executions < runs and fig.runs <= RESTARTS:
        left = max_seconds - (time.monotonic() - started)
        if left <= 1:
            break
        cmd = ["nice", "-n", "19", sys.executable, str(FUZZ_DIR / f"fuzz_{h}.py"),
               f"-runs={runs - fig.executions}", f"-max_total_time={int(left)}",
               "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus)]
        cmd += [str(d) for d in (SEEDS / h, REGRESSIONS / h) if d.is_dir()]
        log = work / f"log.{fig.runs}"
        with open(log, "wb") as out:
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False,
                           cwd=work)
        fig.runs += 1
        text = log.read_text(errors="replace")
        done = [int(m) for m in _EXECUTED.findall(text)]
        status = [m.groups() for line in text.splitlines() if (m := _STATUS.match(line))]
        if done:
            fig.executions += done[-1]
        elif status:
            fig.executions += int(status[-1][0])
        if status:
            fig.cov, fig.ft, fig.corpus = (int(x) for x in status[-1][1:])
        if not done and not status:
            break  # did not start: nothing to resume
    fig.seconds = round(time.monotonic() - started, 1)
    fig.exec_per_s = round(fig.executions / fig.seconds, 1) if fig.seconds else 0.0
    counts = findings / "counts.txt"
    if counts.exists():
        for key in counts.read_text().split():
            fig.findings[key] = fig.findings.get(key, 0) + 1
    fig.artifacts = sorted(p.name for p in artifacts.iterdir())
    fig.done = fig.executions >= runs
    with lock:
        results[h] = fig
        write(results)


def write(results: dict[str, Figures]) -> None:
    """The figures, the findings of this run, and every finding kept so far (the regression
    inputs: each was found, then fixed, by earlier runs or reviews)."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {"harnesses": {h: asdict(f) for h, f in sorted(results.items())},
           "total_executions": sum(f.executions for f in results.values()),
           "findings": sorted({k for f in results.values() for k in f.findings}
                              | {f"{f.harness}:{a}" for f in results.values()
                                 for a in f.artifacts}),
           "regression_inputs": {d.name: sorted(p.name for p in d.glob("*.bin"))
                                 for d in sorted(REGRESSIONS.iterdir()) if d.is_dir()}}
    OUT.write_text(json.dumps(doc, indent=2) + "\n")


def load() -> dict[str, Figures]:
    if not OUT.exists():
        return {}
    return {h: Figures(**f) for h, f in json.loads(OUT.read_text()).get("harnesses", {}).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("harnesses", nargs="*", default=HARNESSES)
    ap.add_argument("--runs", type=int, default=1_000_000, help="executions per harness")
    ap.add_argument("--jobs", type=int, default=2, choices=(1, 2))
    ap.add_argument("--max-seconds", type=float, default=6 * 3600, help="per harness")
    args = ap.parse_args()
    if not SEEDS.is_dir():
        from tests.fuzz.seeds import write_seeds

        write_seeds()
    # Keep the figures of harnesses not rerun now.
    results = {h: f for h, f in load().items() if h not in args.harnesses}
    lock = threading.Lock()
    pending = list(args.harnesses)

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                h = pending.pop(0)
            run_harness(h, args.runs, args.max_seconds, results, lock)

    threads = [threading.Thread(target=worker) for _ in range(args.jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for h, f in sorted(results.items()):
        print(f"{h:12} {f.executions:>10,} execs {f.seconds:>8.0f}s cov {f.cov:>5} ft {f.ft:>5} "
              f"findings {len(f.findings) + len(f.artifacts)}")


if __name__ == "__main__":
    main()
