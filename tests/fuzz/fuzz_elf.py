"""Fuzz ElfImage: its own header parser (segments, sections, names), section contents
(SHF_COMPRESSED too), the raw symbol-table reader and reads by address. Input: an ELF file
(small: tests/fuzz/seeds.py), written to a tmpfs file since ElfImage maps a path."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fuzz.common import ScratchFile, contract, instrumented, main

with instrumented():
    from gotrace.binary.elf import ElfImage
    from gotrace.errors import GotraceError

NAMES = (".gopclntab", ".go.buildinfo", ".noptrdata", ".text", ".debug_info", ".debug_abbrev",
         ".zdebug_info", ".symtab", ".strtab", ".shstrtab")
MAX_SEGMENTS = 16
_scratch = ScratchFile("elf")


@contract
def test_one_input(data: bytes) -> None:
    with ElfImage(_scratch.write(data), "fuzz-input") as img:
        for name in NAMES:
            img.section_range(name)
            img.section_file_range(name)
            with contextlib.suppress(GotraceError):
                img.section_bytes(name)
        img.symbols()
        _ = img.has_dwarf, img.has_symtab, img.is_pie
        for seg in img.segments[:MAX_SEGMENTS]:
            img.vaddr_to_offset(seg.vaddr)
            with contextlib.suppress(GotraceError):
                img.read(seg.vaddr, min(seg.filesz, 64))


if __name__ == "__main__":
    main(test_one_input)
