"""The binary readers on linux/arm64 builds of every Go release, against the Go toolchain's tools.

The builds are cross-compiled here (GOARCH=arm64, tests/gobuild.py ARM64_VARIANTS): reading
them needs no arm64 machine. `go tool nm` of the same release is the truth for addresses, the
hello source for lines, DWARF for runtime.g, the unstripped build (and the x86-64 build) for the
wait-reason strings.
"""

from __future__ import annotations

import subprocess
from dataclasses import fields, replace
from functools import lru_cache
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from gotrace.binary.allgs import AllgsAddrs, decode_allgadd, find_allgs, from_symbols
from gotrace.binary.buildinfo import parse_go_version, read_go_version
from gotrace.binary.elf import ElfImage
from gotrace.binary.offsets import dwarf_offsets, table_offsets
from gotrace.binary.pclntab import Frame, Pclntab
from gotrace.binary.waitreasons import from_string_method, from_symbol
from tests.gobuild import (
    ARM64_VARIANTS,
    GO_VERSIONS,
    TARGETS,
    GoBuild,
    go_command,
    go_env,
    go_version_output,
)

FUNCS = ("runtime.gopark", "runtime.goexit1", "runtime.execute", "runtime.newproc1", "main.main")
ALLGS = ("runtime.allgs", "runtime.allglen", "runtime.allgptr")
HELLO_GO = TARGETS.resolve() / "hello" / "main.go"


@pytest.fixture(params=GO_VERSIONS)
def version(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@lru_cache
def go_nm(version: str, binary: Path) -> dict[str, int]:
    """name -> address, as that release's `go tool nm` prints them."""
    out = subprocess.run([str(go_command(version)), "tool", "nm", str(binary)],
                         env=go_env(version), capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        addr, _kind, name = line.split(maxsplit=2)
        syms[name] = int(addr, 16)
    return syms


def section_offset(binary: Path, addr: int) -> tuple[str, int]:
    """(allocated section, offset in it) of an address, from the section headers (pyelftools)."""
    with binary.open("rb") as fh:
        for s in ELFFile(fh).iter_sections():
            if s["sh_flags"] & 2 and s["sh_addr"] <= addr < s["sh_addr"] + s["sh_size"]:
                return s.name, addr - s["sh_addr"]
    raise AssertionError(f"{addr:#x} is in no section of {binary}")


def addrs(found: AllgsAddrs | None) -> tuple[int, int, int] | None:
    return None if found is None else (found.allgs, found.allglen, found.allgptr)


# -- build info, pclntab, runtime.g ------------------------------------------------------------


@pytest.mark.parametrize("variant", list(ARM64_VARIANTS))
def test_build_info_names_the_toolchain(go_build: GoBuild, version: str, variant: str) -> None:
    with ElfImage(str(go_build(version, variant))) as img:
        assert img.machine == "EM_AARCH64"
        assert read_go_version(img) == go_version_output(version)


@pytest.mark.parametrize("variant", list(ARM64_VARIANTS))
def test_function_entries_equal_go_tool_nm(go_build: GoBuild, version: str,
                                           variant: str) -> None:
    # A stripped build has no symbols, but its text is the plain build's, byte for byte.
    oracle = go_build(version, "arm64-pie" if variant == "arm64-pie" else "arm64-plain")
    want = go_nm(version, oracle)
    with ElfImage(str(go_build(version, variant))) as img:
        tab = Pclntab(img)
        got = {name: f.entry for name in FUNCS if (f := tab.lookup(name)) is not None}
    assert got == {name: want[name] for name in FUNCS}


@pytest.mark.parametrize("variant", list(ARM64_VARIANTS))
def test_main_entry_is_on_the_func_line(go_build: GoBuild, version: str, variant: str) -> None:
    line = HELLO_GO.read_text().splitlines().index("func main() {") + 1
    with ElfImage(str(go_build(version, variant))) as img:
        tab = Pclntab(img)
        f = tab.lookup("main.main")
        assert f is not None
        assert tab.frames(f.entry, is_return_address=False) == \
            [Frame("main.main", str(HELLO_GO), line)]


def test_table_offsets_equal_dwarf(go_build: GoBuild, version: str) -> None:
    """runtime.g has one layout on both 64-bit architectures: the x86-64 tables hold."""
    with ElfImage(str(go_build(version, "arm64-plain"))) as img:
        dwarf = dwarf_offsets(img)
        minor = parse_go_version(read_go_version(img))[1]
    assert dwarf is not None
    table = table_offsets(minor)
    differ = {f.name: (getattr(table, f.name), getattr(dwarf, f.name)) for f in fields(table)
              if f.name != "source" and getattr(table, f.name) != getattr(dwarf, f.name)}
    assert not differ
    assert replace(table, source=dwarf.source) == dwarf


# -- wait reasons ------------------------------------------------------------------------------


def test_decoded_wait_reasons_equal_the_symbol(go_build: GoBuild, version: str) -> None:
    with ElfImage(str(go_build(version, "arm64-plain"))) as img:
        want = from_symbol(img)
    with ElfImage(str(go_build(version, "plain"))) as img:
        x86 = from_symbol(img)
    assert want is not None and want == x86
    assert want[0] == "" and "chan receive" in want
    for variant in ARM64_VARIANTS:
        with ElfImage(str(go_build(version, variant))) as img:
            method = Pclntab(img).lookup("runtime.waitReason.String")
            assert method is not None
            assert from_string_method(img, method.entry, method.end) == want, variant
            if variant == "arm64-stripped":
                assert from_symbol(img) is None


def test_wait_reasons_of_a_cgo_pie_build_are_relocated(go_build: GoBuild, version: str) -> None:
    """GNU ld leaves other values than the relocations' in an arm64 PIE's pointers: the
    strings come from the R_AARCH64_RELATIVE addends, as the loader would write them."""
    with ElfImage(str(go_build(version, "arm64-plain"))) as img:
        want = from_symbol(img)
    with ElfImage(str(go_build(version, "arm64-cgo-pie"))) as img:
        assert from_symbol(img) == want
        method = Pclntab(img).lookup("runtime.waitReason.String")
        assert method is not None
        assert from_string_method(img, method.entry, method.end) == want


def test_moduledata_of_a_cgo_pie_build_is_found_through_its_relocations(
        go_build: GoBuild, version: str) -> None:
    """There the file holds no pointer to pcHeader (GNU ld left it to the relocation): the
    moduledata is where an R_AARCH64_RELATIVE writes pcHeader's address, runtime.firstmoduledata
    by the symbol table, and its text start agrees with the header-less releases' too."""
    with ElfImage(str(go_build(version, "arm64-cgo-pie"))) as img:
        tab = Pclntab(img)
        sym = img.symbol("runtime.firstmoduledata")
        assert sym is not None
        assert tab.moduledata_addr == sym[0]
        assert tab.moduledata_addr in img.pointers_to(tab.header_addr)
        text = img.symbol("runtime.text")
        assert text is not None and tab.text_start == text[0]


# -- allgs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["arm64-plain", "arm64-pie"])
def test_allgadd_decoding_equals_go_tool_nm(go_build: GoBuild, version: str,
                                            variant: str) -> None:
    binary = go_build(version, variant)
    want = go_nm(version, binary)
    with ElfImage(str(binary)) as img:
        tab = Pclntab(img)
        f = tab.lookup("runtime.allgadd")
        assert f is not None
        decoded = decode_allgadd(img, f.entry, f.end, img.machine)
        assert addrs(decoded) == tuple(want[n] for n in ALLGS)
        assert addrs(decoded) == addrs(from_symbols(img))
        assert addrs(find_allgs(img, tab)) == addrs(decoded)


def test_stripped_allgs_are_decoded(go_build: GoBuild, version: str) -> None:
    plain, stripped = go_build(version, "arm64-plain"), go_build(version, "arm64-stripped")
    want = go_nm(version, plain)
    with ElfImage(str(stripped)) as img:
        assert not img.has_symtab
        tab = Pclntab(img)
        found = find_allgs(img, tab)
        f = tab.lookup("runtime.allgadd")
        assert f is not None
        assert addrs(decode_allgadd(img, f.entry, f.end, img.machine)) == addrs(found)
    assert found.source == "decoded from runtime.allgadd"
    # `-s -w` is recorded in .go.buildinfo, which grows (by 32 bytes): the sections after it
    # move, so the addresses are compared by their place in their section.
    assert [section_offset(stripped, a) for a in (found.allgs, found.allglen, found.allgptr)] \
        == [section_offset(plain, want[n]) for n in ALLGS]


def test_the_machine_chooses_the_decoder(go_build: GoBuild) -> None:
    with ElfImage(str(go_build(GO_VERSIONS[-1], "arm64-plain"))) as img:
        f = Pclntab(img).lookup("runtime.allgadd")
        assert f is not None
        assert decode_allgadd(img, f.entry, f.end, img.machine) is not None
        assert decode_allgadd(img, f.entry, f.end, machine="EM_X86_64") is None
        assert decode_allgadd(img, f.entry, f.end, machine="EM_RISCV") is None


def test_an_unexpected_arm64_allgadd_body_is_refused() -> None:
    class Code:
        def read(self, vaddr: int, size: int) -> bytes:
            return bytes.fromhex("c0035fd6") + bytes.fromhex("1f2003d5") * (size // 4 - 1)

    assert decode_allgadd(Code(), 0x1000, 0x1040, machine="EM_AARCH64") is None
