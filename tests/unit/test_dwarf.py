"""gotrace's small DWARF reader against pyelftools, a complete one, on every release and mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from gotrace.binary.dwarf import struct_members
from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput
from tests.gobuild import GO_VERSIONS, GoBuild, version_key

STRUCTS = ("runtime.g", "runtime.gobuf", "runtime.stack", "runtime.m", "runtime.hchan")
NEWEST = max(GO_VERSIONS, key=version_key)


def pyelftools_members(img: ElfImage, names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for cu in img.elf.get_dwarf_info(relocate_dwarf_sections=False).iter_CUs():
        for die in cu.iter_DIEs():
            attr = die.attributes.get("DW_AT_name")
            if die.tag != "DW_TAG_structure_type" or attr is None:
                continue
            name = attr.value.decode()
            if name not in names or name in out or not die.has_children:
                continue
            out[name] = {c.attributes["DW_AT_name"].value.decode():
                         c.attributes["DW_AT_data_member_location"].value
                         for c in die.iter_children() if c.tag == "DW_TAG_member"}
    return out


@pytest.mark.parametrize("version", GO_VERSIONS)
@pytest.mark.parametrize("variant", ["plain", "cgo-pie"])
def test_members_equal_pyelftools(go_build: GoBuild, version: str, variant: str) -> None:
    with ElfImage(str(go_build(version, variant))) as img:
        got = struct_members(img, STRUCTS)
        assert got == pyelftools_members(img, STRUCTS)
    assert set(got) == set(STRUCTS)
    assert got["runtime.g"]["stack"] == 0 and got["runtime.g"]["sched"] == 56


@pytest.mark.parametrize("version", [GO_VERSIONS[0], NEWEST])
def test_walks_every_unit_of_a_cgo_binary(go_build: GoBuild, version: str) -> None:
    """A name that is nowhere makes the reader walk every unit, gcc's C units included."""
    with ElfImage(str(go_build(version, "cgo"))) as img:
        assert set(struct_members(img, ("runtime.g", "no.such.struct"))) == {"runtime.g"}


def test_stripped_binary_has_no_members(go_build: GoBuild) -> None:
    with ElfImage(str(go_build(NEWEST, "stripped"))) as img:
        assert struct_members(img, STRUCTS) == {}


def test_damaged_dwarf_is_bad_input(go_build: GoBuild, tmp_path: Path) -> None:
    src = go_build(NEWEST, "plain")
    with ElfImage(str(src)) as img:
        fr = img.section_file_range(".debug_info")
    assert fr is not None
    data = bytearray(src.read_bytes())
    data[fr[0] + 24 : fr[0] + 64] = b"\xff" * 40  # inside the compressed stream
    p = tmp_path / "damaged"
    p.write_bytes(bytes(data))
    with ElfImage(str(p)) as img, pytest.raises(BadInput, match="DWARF unreadable"):
        struct_members(img, STRUCTS)
