"""Every input the fuzzers ever found a bug with, replayed through its harness (no atheris).

tests/fuzz/regressions/<harness>/*.bin are inputs of tests/fuzz/fuzz_<harness>.py; each once
made a reader raise something other than gotrace's own error, hang or blow up its memory
(tests/fuzz/regressions/README.md says which and how it was fixed). The contract checked here
is the harnesses': a result or a GotraceError, within the time limit, within the memory limit.
"""

from __future__ import annotations

import importlib
import struct
import time
import tracemalloc
from pathlib import Path
from typing import cast

import pytest

from gotrace.binary.elf import ElfImage
from gotrace.binary.pclntab import Pclntab
from tests.fuzz.common import (
    FUZZ_DIR,
    PEAK_LIMIT,
    PF_R,
    REGRESSIONS,
    TIME_LIMIT_S,
    MemImage,
    MiniImage,
    Section,
    pack,
    time_limit,
    unpack,
)

HARNESSES = sorted(p.stem.removeprefix("fuzz_") for p in FUZZ_DIR.glob("fuzz_*.py"))
CASES = [(h, p) for h in HARNESSES for p in sorted((REGRESSIONS / h).glob("*.bin"))]
# The readers of untrusted bytes the fuzzing covers (issue "Trusted on production hosts").
EXPECTED = {"elf", "buildinfo", "pclntab", "dwarf", "waitreasons", "disasm", "allgs",
            "gobinary", "ringbuf", "gdecode"}


def test_every_reader_has_a_harness() -> None:
    assert set(HARNESSES) >= EXPECTED


def test_every_regression_input_belongs_to_a_harness() -> None:
    dirs = {p.name for p in REGRESSIONS.iterdir() if p.is_dir()}
    assert dirs <= set(HARNESSES)


def test_regression_inputs_are_small() -> None:
    """Large findings are kept minimized (libFuzzer -minimize_crash), not as blobs."""
    big = [p for _, p in CASES if p.stat().st_size > 64 << 10]
    assert not big


@pytest.mark.parametrize(("harness", "path"), CASES,
                         ids=[f"{h}/{p.stem}" for h, p in CASES])
def test_regression_input_keeps_the_contract(harness: str, path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOTRACE_FUZZ_KEEP_GOING", raising=False)
    one_input = importlib.import_module(f"tests.fuzz.fuzz_{harness}").test_one_input
    tracemalloc.start()
    try:
        with time_limit(TIME_LIMIT_S):
            one_input(path.read_bytes())  # raises whatever breaks the contract
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_LIMIT, f"{path.name}: {peak:,} bytes allocated"


def overlapping_tables(nfunc: int, run: int) -> bytes:
    """A fuzz container whose pclntab gives every function a pc-value table starting inside
    one long run that never ends: each decode reads to the end of the buffer."""
    pctab = b"\0" + b"\x02\x00" * run  # value +1, pc +0, forever
    names = b"f\0\0\0\0\0\0\0"
    funcname = 72
    pctab_off = funcname + len(names)
    pcln_off = pctab_off + len(pctab) + (-len(pctab) % 8)
    ftab = b"".join(struct.pack("<II", 16 * i, 8 * (nfunc + 1) + 44 * i) for i in range(nfunc))
    ftab += struct.pack("<II", 16 * nfunc, 0)
    recs = b"".join(struct.pack("<IiiIIIIIIi4B", 16 * i, 0, 0, 0, 1 + 2 * i, 0, 0, 0, 0, 0,
                                0, 0, 0, 0) for i in range(nfunc))
    header = struct.pack("<IBBBB8Q", 0xFFFFFFF1, 0, 0, 1, 8, nfunc, 0, 0x401000, funcname,
                         pctab_off, pctab_off, pctab_off, pcln_off)
    tab = header + names + pctab + bytes(-len(pctab) % 8) + ftab + recs
    return pack(MiniImage([Section(".gopclntab", 0x500000, PF_R, tab)]))


def test_overlapping_pc_value_tables_cost_linear_time() -> None:
    """Found by review: tables starting inside one another made every function's decode read
    the rest of pctab, quadratic in the file (hours for a crafted 50 MB binary). Decoding is
    now bounded by a budget of a few times the table's size (Pclntab._decode_budget)."""
    img = cast(ElfImage, MemImage(unpack(overlapping_tables(3000, 40_000))))
    with time_limit(TIME_LIMIT_S):
        started = time.monotonic()
        p = Pclntab(img)
        sizes = [p.frame_size(f.entry) for f in p.functions()]
        elapsed = time.monotonic() - started
    assert sizes.count(None) > 2900  # the budget ran out: the table is corrupt
    assert elapsed < 3


def test_overlapping_abbreviation_tables_cost_linear_time() -> None:
    """Found by review: units naming abbreviation tables that start inside one another made
    the DWARF reader parse the rest of .debug_abbrev once per unit (quadratic). A parse
    budget of a few times the section's size now ends it as BadInput."""
    from gotrace.binary.dwarf import struct_members
    from gotrace.errors import BadInput
    from tests.fuzz.fuzz_dwarf import DebugSections

    entries = 20_000
    abbrev = b"\x01\x13\x00\x03\x08\x00\x00" * entries + b"\x00"  # struct, name: string
    info = b"".join(struct.pack("<IHIB", 7, 4, 7 * k, 8) for k in range(entries))
    img = cast(ElfImage, DebugSections({".debug_info": info, ".debug_abbrev": abbrev}))
    with time_limit(TIME_LIMIT_S):
        started = time.monotonic()
        with pytest.raises(BadInput, match="abbreviation tables overlap"):
            struct_members(img, ("runtime.g",))
        assert time.monotonic() - started < 3
