"""The facts read without DWARF or symbols agree with DWARF and symbols, for every Go release.

Stripped binaries get their runtime.g offsets from per-minor tables and their wait-reason strings
from decoding `runtime.waitReason.String`; the same toolchain's unstripped build says what the
truth is. GO_VERSIONS (tests/gobuild.py) is the whole supported matrix by default.
"""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from gotrace.binary.buildinfo import parse_go_version, read_go_version
from gotrace.binary.elf import ElfImage
from gotrace.binary.gobinary import GoBinary
from gotrace.binary.offsets import SUPPORTED_MINORS, TABLE, dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Pclntab
from gotrace.binary.waitreasons import from_string_method, from_symbol
from gotrace.errors import BadInput
from tests.gobuild import GO_VERSIONS, GoBuild


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def minor_of(img: ElfImage) -> int:
    return parse_go_version(read_go_version(img))[1]


def test_table_offsets_equal_dwarf(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "plain"))) as img:
        dwarf = dwarf_offsets(img)
        minor = minor_of(img)
    assert dwarf is not None and dwarf.source == "DWARF"
    table = table_offsets(minor)
    # Every field the table has must be what DWARF says (source aside).
    differ = [f.name for f in fields(table)
              if f.name != "source" and getattr(table, f.name) != getattr(dwarf, f.name)]
    assert not differ, {n: (getattr(table, n), getattr(dwarf, n)) for n in differ}
    assert replace(table, source="DWARF") == dwarf


def test_stripped_binary_uses_the_table(go_build: GoBuild, version: str) -> None:
    gb = GoBinary.open(str(go_build(version, "stripped")))
    assert not gb.img.has_dwarf and not gb.img.has_symtab
    assert gb.offsets == table_offsets(gb.minor)
    assert gb.offsets.source == f"built-in table for go1.{gb.minor}"


def test_every_supported_minor_has_a_table() -> None:
    assert set(TABLE) == set(SUPPORTED_MINORS)
    with pytest.raises(BadInput, match=r"go1\.28 is not supported.*1\.19 to 1\.27"):
        table_offsets(28)


def test_decoded_wait_reasons_equal_the_symbol(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "plain"))) as img:
        want = from_symbol(img)
        method = Pclntab(img).lookup("runtime.waitReason.String")
        assert method is not None
        decoded = from_string_method(img, method.entry, method.end)
    assert want is not None and decoded == want
    assert want[0] == "" and "chan receive" in want and "select" in want


def test_stripped_wait_reasons_equal_the_plain_symbol(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "plain"))) as img:
        want = from_symbol(img)
    gb = GoBinary.open(str(go_build(version, "stripped")))
    assert gb.wait_reason_source == "decoded from runtime.waitReason.String"
    assert gb.wait_reasons == want


# Known positions (docs/go-runtime.md#wait-reasons): renumbered in 1.20, 1.24, 1.25 and 1.26.
KNOWN: dict[int, dict[int, str | None]] = {
    19: {14: "chan receive", 18: "semacquire", 27: None},
    20: {14: "chan receive", 21: "sync.Mutex.Lock", 31: "stopping the world"},
    21: {14: "chan receive", 21: "sync.Mutex.Lock", 31: "stopping the world"},
    22: {36: "coroutine"},
    23: {37: "GC weak to strong wait"},
    24: {24: "sync.WaitGroup.Wait", 43: "select (synctest)"},
    25: {18: "GOMAXPROCS updater (idle)", 19: "semacquire", 46: "cleanup wait"},
    26: {13: "semacquire", 19: "chan receive", 46: "cleanup wait"},
    27: {13: "semacquire", 19: "chan receive", 46: "cleanup wait"},
}


def test_wait_reason_numbering_per_release(go_build: GoBuild, version: str) -> None:
    gb = GoBinary.open(str(go_build(version, "stripped")))
    for index, name in KNOWN[gb.minor].items():
        if name is None:
            assert len(gb.wait_reasons) == index
        else:
            assert gb.wait_reasons[index] == name


def test_park_and_exit_probes_sit_on_the_stack_check(go_build: GoBuild, version: str) -> None:
    """The handlers skip the pass that reruns the prologue only where the probe is known to be
    on the `jbe` to morestack: gopark and goexit1 of every release, plain and stripped."""
    for variant in ("plain", "stripped"):
        gb = GoBinary.open(str(go_build(version, variant)), use_cache=False)
        marked = {h.event: h.stack_check for h in gb.hooks}
        assert marked == {"park": True, "exit": True, "wake": True, "create": False}, variant


def test_create_probe_placement_per_release(go_build: GoBuild, version: str) -> None:
    """On the 5-byte nop before `call runqput` where the assembler padded the call with one
    (1.19, 1.23+), else on the call (1.21, 1.22): the same registers either way."""
    gb = GoBinary.open(str(go_build(version, "plain")), use_cache=False)
    (create,) = [h for h in gb.hooks if h.event == "create"]
    runqput = gb.func("runtime.runqput").entry
    if gb.minor in (21, 22):
        assert gb.img.read(create.addr, 1) == b"\xe8"
        assert create.addr + 5 + int.from_bytes(gb.img.read(create.addr + 1, 4), "little",
                                                signed=True) == runqput
    else:
        assert gb.img.read(create.addr, 10)[:5] == bytes.fromhex("0f1f440000")
        call = create.addr + 5
        assert gb.img.read(call, 1) == b"\xe8"
        assert call + 5 + int.from_bytes(gb.img.read(call + 1, 4), "little",
                                         signed=True) == runqput
