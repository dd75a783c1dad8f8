"""A short fuzz of every harness on every change, and the check that its seeds stay faithful.

Each harness (tests/fuzz/fuzz_*.py) runs for GOTRACE_FUZZ_SECONDS (default 4; 0 skips) from
seeds made from the oldest and newest Go release, two at a time: under a minute in all. The
long campaign is benchmarks/fuzz.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gotrace.binary.gobinary import GoBinary
from tests.fuzz import seeds
from tests.fuzz.common import FUZZ_DIR, REGRESSIONS, write_elf
from tests.gobuild import EDGE_GO_VERSIONS, GoBuild

SECONDS = int(os.environ.get("GOTRACE_FUZZ_SECONDS", "4"))
PARALLEL = 2
HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory: pytest.TempPathFactory, go_build: GoBuild) -> Path:
    for v in EDGE_GO_VERSIONS:
        for variant in ("plain", "stripped", "pie"):
            go_build(v, variant)  # fails the test (not skips) if a toolchain is missing
    out = tmp_path_factory.mktemp("fuzz-seeds")
    seeds.write_seeds(out, versions=EDGE_GO_VERSIONS)
    return out


@pytest.mark.parametrize("version", EDGE_GO_VERSIONS)
@pytest.mark.parametrize("variant", ["plain", "stripped", "pie"])
def test_mini_images_read_like_their_binaries(go_build: GoBuild, tmp_path: Path,
                                               version: str, variant: str) -> None:
    """The seeds are real binaries reduced: gotrace must derive the same facts from both,
    or the fuzzers would explore something else than what gotrace meets."""
    path = go_build(version, variant)
    mini, _ = seeds.mini_image(path)
    small = tmp_path / "mini"
    small.write_bytes(write_elf(mini))
    real = GoBinary.open(str(path), use_cache=False)
    got = GoBinary.open(str(small), use_cache=False)
    try:
        assert got.hooks == real.hooks
        assert got.offsets == real.offsets
        assert got.wait_reasons == real.wait_reasons
        assert got.pcln.goroot() == real.pcln.goroot()
    finally:
        real.img.close()
        got.img.close()
    assert small.stat().st_size < 64 << 10


def test_short_fuzz(seed_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    if SECONDS <= 0:
        pytest.skip("GOTRACE_FUZZ_SECONDS=0")
    env = {k: v for k, v in os.environ.items() if k != "GOTRACE_FUZZ_KEEP_GOING"}
    failures = []
    pending = list(HARNESSES)
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    while pending or running:
        while pending and len(running) < PARALLEL:
            h = pending.pop(0)
            work = tmp_path / h
            corpus = work / "corpus"
            corpus.mkdir(parents=True)
            for src in (seed_dir / h, REGRESSIONS / h):
                if src.is_dir():
                    for f in src.iterdir():
                        shutil.copy(f, corpus / f"{src.parent.name}-{f.name}")
            log = work / "log"
            cmd = [sys.executable, str(FUZZ_DIR / f"fuzz_{h}.py"), f"-max_total_time={SECONDS}",
                   f"-artifact_prefix={work}/", str(corpus)]
            with open(log, "wb") as out:
                running.append((h, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                                    env=env), work))
        h, proc, work = running.pop(0)
        rc = proc.wait(timeout=SECONDS + 120)
        if rc != 0:
            tail = (work / "log").read_text(errors="replace")[-3000:]
            failures.append(f"fuzz_{h} exited {rc}:\n{tail}")
    assert not failures, "\n\n".join(failures)
