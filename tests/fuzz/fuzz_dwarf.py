"""Fuzz the DWARF struct reader (struct_members, through dwarf_offsets, which also checks what
it found). Input: [abbrev length u16][.debug_str length u16][.debug_abbrev][.debug_str]
[.debug_info or, when it starts with "ZLIB", .zdebug_info], served by a stand-in image
(no ELF: the sections are what is parsed)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import contract, instrumented, main

with instrumented():
    import gotrace.binary.dwarf  # noqa: F401 - imported lazily by offsets: instrument it here
    from gotrace.binary.elf import ElfImage
    from gotrace.binary.offsets import dwarf_offsets


class DebugSections:
    """The part of ElfImage the DWARF reader uses."""

    name = "fuzz-input"
    has_dwarf = True

    def __init__(self, sections: dict[str, bytes]) -> None:
        self._sections = sections

    def section_bytes(self, name: str) -> bytes | None:
        return self._sections.get(name)


def split(data: bytes) -> dict[str, bytes]:
    if len(data) < 4:
        return {}
    n_abbrev, n_str = struct.unpack_from("<HH", data)
    p = 4
    abbrev = data[p : p + n_abbrev]
    p += n_abbrev
    strs = data[p : p + n_str]
    p += n_str
    info = data[p:]
    # Old toolchains' .zdebug_info ("ZLIB", big-endian size, zlib data) when it looks like one.
    return {".debug_abbrev": abbrev, ".debug_str": strs,
            ".zdebug_info" if info[:4] == b"ZLIB" else ".debug_info": info}


@contract
def test_one_input(data: bytes) -> None:
    dwarf_offsets(cast(ElfImage, DebugSections(split(data))))


if __name__ == "__main__":
    main(test_one_input)
