"""How long gotrace takes, and how much memory, to read a large Go binary before it can attach.

For each binary, in one run, interleaved repetitions of:

- `cat`: read the whole file once (the floor of anything that reads it);
- `go version -m`: Go's own reader of the build info (a small part of the file);
- `python`: the interpreter importing gotrace and doing nothing (the floor of any gotrace run);
- `gotrace cold`: GoBinary.open with the cache off: version, pclntab, runtime.g offsets (DWARF or
  table), wait reasons, probe placements, inline trees of the hooked functions;
- `gotrace cached`: the same with the per-build-ID cache already filled.

Each is its own process: wall time and peak RSS (wait4) are the process's. Medians of --reps.
Default binaries: Debian's rclone (54 MB, Go 1.19, stripped) and Go's compiler rebuilt with
DWARF by the newest toolchain here (37 MB + DWARF), built once into .cache/bin.

    .venv/bin/python -m benchmarks.load_binary [--reps 5] [--json out.json] [BINARY ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gobuild import ALL_GO_VERSIONS, BIN_DIR, go_command, go_env, version_key  # noqa: E402

NEWEST = max(ALL_GO_VERSIONS, key=version_key)
OPEN = ("import sys, time; t = time.perf_counter(); from gotrace.binary.gobinary import GoBinary; "
        "gb = GoBinary.open(sys.argv[1]); assert gb.hooks; "
        "print(time.perf_counter() - t, gb.from_cache, gb.offsets.source)")
IMPORT_ONLY = "import gotrace.binary.gobinary"


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[Sample, str]:
    """Wall time and peak RSS of one process (its own, not ours)."""
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out_f, stderr=err_f, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out = out_f.read(1 << 20).decode(errors="replace")
        err = err_f.read(1 << 20).decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {err.strip()}")
    return Sample(seconds, usage.ru_maxrss / 1024), out


def compiler_with_dwarf() -> Path:
    """cmd/compile of the newest toolchain, rebuilt with DWARF (Go ships it without)."""
    out = BIN_DIR / f"compile-dwarf-{NEWEST}"
    if not out.exists():
        go = go_command(NEWEST)
        src = go.parents[1] / "src" / "cmd" / "compile"
        env = dict(go_env(NEWEST), GOFLAGS="", CGO_ENABLED="0")
        out.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {out.name} (once; a few minutes) ...", file=sys.stderr)
        subprocess.run([str(go), "build", "-o", str(out), "."], cwd=src, env=env, check=True)
    return out


def measure(binary: Path, reps: int) -> dict[str, Sample]:
    cache = tempfile.mkdtemp(prefix="gotrace-bench-cache-")
    cold = dict(os.environ, GOTRACE_BINARY_CACHE="off")
    warm = dict(os.environ, GOTRACE_BINARY_CACHE=cache)
    py = sys.executable
    cases: dict[str, tuple[list[str], dict[str, str] | None]] = {
        "cat": (["sh", "-c", 'cat "$1" > /dev/null', "sh", str(binary)], None),
        "go version -m": ([str(go_command(NEWEST)), "version", "-m", str(binary)],
                          go_env(NEWEST)),
        "python": ([py, "-c", IMPORT_ONLY], None),
        "gotrace cold": ([py, "-c", OPEN, str(binary)], cold),
        "gotrace cached": ([py, "-c", OPEN, str(binary)], warm),
    }
    run(cases["gotrace cached"][0], warm)  # fill the cache
    samples: dict[str, list[Sample]] = {k: [] for k in cases}
    for _ in range(reps):
        for name, (argv, env) in cases.items():
            sample, out = run(argv, env)
            if name.startswith("gotrace"):
                cached = out.split()[1] == "True"
                assert cached == (name == "gotrace cached"), (name, out)
            samples[name].append(sample)
    shutil.rmtree(cache, ignore_errors=True)
    return {k: Sample(statistics.median(s.seconds for s in v),
                      statistics.median(s.peak_rss_mb for s in v)) for k, v in samples.items()}


def describe(binary: Path) -> str:
    from gotrace.binary.buildinfo import read_go_version
    from gotrace.binary.elf import ElfImage

    with ElfImage(str(binary)) as img:
        parts = [read_go_version(img), f"{img.size / 1e6:.0f} MB"]
        parts.append("DWARF" if img.has_dwarf else "no DWARF")
        parts.append(".symtab" if img.has_symtab else "no .symtab")
    return ", ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="*", type=Path)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, help="also write the medians here")
    args = ap.parse_args()
    binaries: list[Path] = args.binaries or [Path(shutil.which("rclone") or "/usr/bin/rclone"),
                                             compiler_with_dwarf()]
    results = {}
    for b in binaries:
        res = measure(b, args.reps)
        results[str(b)] = {k: asdict(v) for k, v in res.items()}
        floor = res["python"]
        print(f"\n{b} ({describe(b)}), median of {args.reps}")
        print(f"  {'':<16} {'wall s':>8} {'peak RSS MB':>12} {'above python':>22}")
        for name, s in res.items():
            extra = ""
            if name.startswith("gotrace"):
                extra = (f"+{s.seconds - floor.seconds:.2f} s, "
                         f"+{s.peak_rss_mb - floor.peak_rss_mb:.0f} MB")
            print(f"  {name:<16} {s.seconds:>8.2f} {s.peak_rss_mb:>12.0f} {extra:>22}")
        cold, cached = res["gotrace cold"], res["gotrace cached"]
        print(f"  cold load = {cold.seconds / res['go version -m'].seconds:.1f}x `go version -m`"
              f", {cold.seconds / res['cat'].seconds:.1f}x `cat`; cached load = "
              f"{(cached.seconds - floor.seconds) / max(cold.seconds - floor.seconds, 1e-9):.2f}x "
              "cold (above the interpreter)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
