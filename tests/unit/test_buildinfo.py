"""Build info reader: the Go version of real binaries, both blob formats, and bad input."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from gotrace.binary.buildinfo import (
    MAGIC,
    BuildInfo,
    parse_go_version,
    read_build_info,
    read_go_version,
)
from gotrace.binary.elf import ElfImage
from gotrace.errors import BadInput
from tests.gobuild import GO_VERSIONS, VARIANTS, GoBuild, go_version_output


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("version", GO_VERSIONS)
def test_version_matches_toolchain(go_build: GoBuild, version: str, variant: str) -> None:
    path = go_build(version, variant)
    with ElfImage(str(path)) as img:
        info = read_build_info(img)
        assert read_go_version(img) == info.go_version
    assert info.go_version == go_version_output(version)
    assert info.path == "hello"
    assert info.settings["CGO_ENABLED"] == VARIANTS[variant].env.get("CGO_ENABLED", "0")
    if variant == "stripped":
        assert info.settings["-ldflags"] == "-s -w"  # quoted in modinfo: -ldflags="-s -w"
    major, minor, _ = parse_go_version(info.go_version)
    assert (major, minor) >= (1, 19)


def _blob(img: ElfImage) -> tuple[int, int]:
    fr = img.section_file_range(".go.buildinfo")
    rng = img.section_range(".go.buildinfo")
    assert fr is not None and rng is not None
    return fr[0], rng[0]


def test_found_without_section_header(go_build: GoBuild, tmp_path: Path) -> None:
    """With the section renamed, the blob is found by scanning writable segments."""
    src = go_build(GO_VERSIONS[-1], "stripped")
    data = bytearray(src.read_bytes())
    at = data.find(b".go.buildinfo\0")
    assert at > 0
    data[at : at + 13] = b".go.renamedXX"
    p = tmp_path / "renamed"
    p.write_bytes(bytes(data))
    with ElfImage(str(p)) as img:
        assert img.section_range(".go.buildinfo") is None
        assert read_go_version(img) == go_version_output(GO_VERSIONS[-1])


def test_pointer_format(go_build: GoBuild, tmp_path: Path) -> None:
    """The pre-1.18 layout: the header points at Go string headers instead of inline strings."""
    src = go_build(GO_VERSIONS[-1], "plain")
    data = bytearray(src.read_bytes())
    with ElfImage(str(src)) as img:
        off, vaddr = _blob(img)
    vers = b"go1.17.13"
    mod = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6"
    mod += b"path\tcmd/old\nbuild\tGOOS=linux\n"
    mod += b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2"
    blob = bytearray(MAGIC + bytes([8, 0]))  # ptrSize 8, flags: little-endian, pointer format
    blob += struct.pack("<QQ", vaddr + 32, vaddr + 48)
    blob += struct.pack("<QQ", vaddr + 64, len(vers))
    blob += struct.pack("<QQ", vaddr + 64 + len(vers), len(mod))
    blob += vers + mod
    data[off : off + len(blob)] = blob
    p = tmp_path / "old"
    p.write_bytes(bytes(data))
    with ElfImage(str(p)) as img:
        info = read_build_info(img)
    assert info == BuildInfo("go1.17.13", "cmd/old", {"GOOS": "linux"})


def test_non_go_elf() -> None:
    true = shutil.which("true") or "/bin/true"
    with ElfImage(true) as img, pytest.raises(BadInput, match=r"not a Go program \(no Go build"):
        read_build_info(img)


def test_garbled_blob_is_bad_input(go_build: GoBuild, tmp_path: Path) -> None:
    src = go_build(GO_VERSIONS[-1], "plain")
    data = bytearray(src.read_bytes())
    with ElfImage(str(src)) as img:
        off, _ = _blob(img)
    data[off + 32 : off + 42] = b"\xff" * 10  # a version length no section can hold
    p = tmp_path / "garbled"
    p.write_bytes(bytes(data))
    with ElfImage(str(p)) as img, pytest.raises(BadInput, match="truncated"):
        read_build_info(img)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("go1.27.3", (1, 27, 3)),
        ("go1.19", (1, 19, 0)),
        ("go1.21rc2", (1, 21, 0)),
        ("go1.22beta1", (1, 22, 0)),
        ("go1.21.0", (1, 21, 0)),
        ("go1.25.5 X:nodwarf5,greenteagc", (1, 25, 5)),
        ("go1.24.3-bigcorp", (1, 24, 3)),
        ("devel go1.23-ec7d6094e6 Mon Jun 3 12:00:00 2024 +0000", (1, 23, 0)),
    ],
)
def test_parse_go_version(text: str, want: tuple[int, int, int]) -> None:
    assert parse_go_version(text) == want


@pytest.mark.parametrize("text", ["", "devel +a1b2c3d4 Tue Jan 1 2019", "gccgo", "go", "1.21"])
def test_parse_go_version_rejects(text: str) -> None:
    with pytest.raises(BadInput, match="cannot tell the Go version"):
        parse_go_version(text)
