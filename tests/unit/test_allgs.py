"""Finding runtime.allgs, wrappers and frame sizes in real builds of every Go release."""

from __future__ import annotations

import pytest

from gotrace.binary.allgs import decode_allgadd, find_allgs, from_symbols
from gotrace.binary.buildinfo import parse_go_version, read_build_info
from gotrace.binary.elf import ElfImage
from gotrace.binary.funcinfo import wrapper_functions
from gotrace.binary.offsets import dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Pclntab
from tests.gobuild import GO_VERSIONS, GoBuild, build_go
from tests.integration.goleaky import GO_LEAKY_SRC

OFF = table_offsets(27)


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- locating allgs in real binaries -------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "pie", "cgo", "cgo-pie"])
def test_allgadd_decoding_matches_the_symbol_table(go_build: GoBuild, version: str,
                                                   variant: str) -> None:
    img = ElfImage(str(go_build(version, variant)))
    tab = Pclntab(img)
    syms = from_symbols(img)
    assert syms is not None
    f = tab.lookup("runtime.allgadd")
    assert f is not None
    decoded = decode_allgadd(img, f.entry, f.end, img.machine)
    assert decoded is not None
    assert (decoded.allgs, decoded.allglen, decoded.allgptr) == \
        (syms.allgs, syms.allglen, syms.allgptr)
    assert find_allgs(img, tab).source == "symbol table"


def test_stripped_binaries_are_decoded(go_build: GoBuild, version: str) -> None:
    img = ElfImage(str(go_build(version, "stripped")))
    assert not img.has_symtab
    found = find_allgs(img, Pclntab(img))
    assert found.source == "decoded from runtime.allgadd"
    # The three words live in the zero-initialised data the loader maps (.bss / .noptrbss).
    bss = [s for s in img.segments if s.memsz > s.filesz]
    assert bss
    for addr in (found.allgs, found.allglen, found.allgptr):
        assert any(s.vaddr + s.filesz <= addr < s.vaddr + s.memsz for s in bss), hex(addr)
    assert found.allgs + 24 <= found.allglen or found.allglen + 8 <= found.allgs


def test_an_unexpected_allgadd_body_is_refused() -> None:
    class Code:
        def read(self, vaddr: int, size: int) -> bytes:
            return bytes.fromhex("c3") + b"\x90" * (size - 1)  # ret; nops

    assert decode_allgadd(Code(), 0x1000, 0x1040, "EM_X86_64") is None


# -- runtime.g offsets that dump adds, against DWARF -----------------------------------------------


def test_syscall_waitsince_and_tracking_offsets_match_dwarf(go_build: GoBuild,
                                                            version: str) -> None:
    img = ElfImage(str(go_build(version, "plain")))
    _, minor, _ = parse_go_version(read_build_info(img).go_version)
    dwarf = dwarf_offsets(img)
    assert dwarf is not None
    table = table_offsets(minor)
    for name in ("syscallsp", "syscallpc", "syscallbp", "waitsince", "tracking_seq", "m",
                 "stack_lo", "stack_hi"):
        assert getattr(dwarf, name) == getattr(table, name), name


# -- funcIDs and frame sizes -----------------------------------------------------------------------


def test_go_statement_wrappers_are_known_by_their_funcid(version: str) -> None:
    """Go's tracebacks hide `go f(x)` wrappers but not closures written by the user."""
    img = ElfImage(str(build_go(version, GO_LEAKY_SRC, "stripped")))
    wrappers = wrapper_functions(Pclntab(img))
    wrapper = "main.leakRecv.func1" if version == "1.19" else "main.leakRecv.gowrap1"
    if version != "1.19" and version.split(".")[1] in ("20", "21"):
        wrapper = "main.leakRecv.func1"
    assert wrapper in wrappers
    assert "main.leakSend.func1" not in wrappers  # go func() { results <- v }()
    assert "main.consume" not in wrappers


def test_frame_size_is_zero_at_entry_and_known_inside(go_build: GoBuild, version: str) -> None:
    img = ElfImage(str(go_build(version, "stripped")))
    tab = Pclntab(img)
    f = tab.lookup("runtime.main")
    assert f is not None
    assert tab.frame_size(f.entry) == 0
    sizes = {tab.frame_size(pc) for pc in range(f.entry, f.end, 7)}
    assert any(s and s > 0 for s in sizes)
    assert tab.frame_size(0) is None
