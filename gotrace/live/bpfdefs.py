"""The #define constants of bpf/gotrace.h, read from the header itself (one source of truth)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from gotrace.errors import CannotTrace


def bpf_dir() -> Path:
    """bpf/ beside the package in a checkout, gotrace/_bpf in an installed wheel."""
    package = Path(__file__).resolve().parents[1]
    for cand in (package / "_bpf", package.parent / "bpf"):
        if (cand / "gotrace.h").exists():
            return cand
    raise CannotTrace(f"gotrace's BPF sources (gotrace.h) are missing from the install at "
                      f"{package}: reinstall gotrace (sudo scripts/setup in a checkout)")


@lru_cache(maxsize=1)
def defines() -> dict[str, int]:
    text = (bpf_dir() / "gotrace.h").read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"^#define\s+(\w+)\s+(-?\w+)\b", text, re.M)
            if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", m[2])}


def const(name: str) -> int:
    return defines()[name]


DEFAULT_MAX_GOROUTINES = const("DEFAULT_MAX_GOROUTINES")  # --max-goroutines
