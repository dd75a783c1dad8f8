"""A read-only view of an ELF file by virtual address, the way Go's own tools read binaries.

pyelftools is not hardened against malformed files, so every parse error becomes a
`BadInput` with the file's name instead of a traceback.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from gotrace.errors import BadInput


@dataclass(frozen=True)
class Segment:
    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & 0x1)


class ElfImage:
    """An ELF file mapped into memory; `read(vaddr, n)` reads what a loader would place there."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 - kept open for pyelftools
        except OSError as e:
            raise BadInput(f"cannot open {path}: {e.strerror}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size < 64:
                raise BadInput(f"{path} is not an ELF executable (too small)")
            self.data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            if self.data[:4] != b"\x7fELF":
                raise BadInput(f"{path} is not an ELF executable")
            self.elf = ELFFile(self._file)
            self.is_pie = self.elf.header["e_type"] == "ET_DYN"
            self.machine = str(self.elf.header["e_machine"])
            self.segments = [
                Segment(
                    int(s["p_vaddr"]),
                    int(s["p_offset"]),
                    int(s["p_filesz"]),
                    int(s["p_memsz"]),
                    int(s["p_flags"]),
                )
                for s in self.elf.iter_segments()
                if s["p_type"] == "PT_LOAD"
            ]
            self._sections = {
                s.name: s for s in self.elf.iter_sections() if s.name
            }
        except BadInput:
            raise
        except (ELFError, ValueError, KeyError, IndexError, OSError, AssertionError) as e:
            raise BadInput(f"{path}: not a readable ELF file ({e})") from None
        self._symbols: dict[str, tuple[int, int]] | None = None

    def close(self) -> None:
        self.data.close()
        self._file.close()

    # -- sections -------------------------------------------------------------------------

    def section_names(self) -> list[str]:
        return list(self._sections)

    def section_range(self, name: str) -> tuple[int, int] | None:
        """(vaddr, size) of an allocated section, or None."""
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        return int(s["sh_addr"]), int(s["sh_size"])

    def section_bytes(self, name: str) -> bytes | None:
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        try:
            return bytes(s.data())  # handles SHF_COMPRESSED
        except (ELFError, ValueError, OSError) as e:
            raise BadInput(f"{self.path}: section {name} unreadable ({e})") from None

    def section_file_range(self, name: str) -> tuple[int, int] | None:
        """(file offset, size) of a section's raw bytes, for zero-copy access."""
        s = self._sections.get(name)
        if s is None or s["sh_type"] == "SHT_NOBITS":
            return None
        return int(s["sh_offset"]), int(s["sh_size"])

    # -- addresses ------------------------------------------------------------------------

    def vaddr_to_offset(self, vaddr: int) -> int | None:
        """File offset of a virtual address inside a file-backed part of a PT_LOAD."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        return None

    def read(self, vaddr: int, size: int) -> bytes:
        off = self.vaddr_to_offset(vaddr)
        if off is None or off + size > len(self.data):
            raise BadInput(f"{self.path}: address {vaddr:#x} is not in the file")
        return bytes(self.data[off : off + size])

    def read_u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")

    def executable_segments(self) -> Iterator[Segment]:
        return (s for s in self.segments if s.executable)

    # -- symbols --------------------------------------------------------------------------

    @property
    def has_symtab(self) -> bool:
        return ".symtab" in self._sections

    @property
    def has_dwarf(self) -> bool:
        return any(n in self._sections for n in (".debug_info", ".zdebug_info"))

    def symbols(self) -> dict[str, tuple[int, int]]:
        """name -> (value, size) from .symtab (empty when stripped)."""
        if self._symbols is None:
            syms: dict[str, tuple[int, int]] = {}
            tab = self._sections.get(".symtab")
            if isinstance(tab, SymbolTableSection):
                try:
                    for sym in tab.iter_symbols():
                        if sym.name:
                            syms.setdefault(sym.name, (int(sym["st_value"]), int(sym["st_size"])))
                except (ELFError, ValueError) as e:
                    raise BadInput(f"{self.path}: symbol table unreadable ({e})") from None
            self._symbols = syms
        return self._symbols

    def symbol(self, name: str) -> tuple[int, int] | None:
        return self.symbols().get(name)

    def __enter__(self) -> ElfImage:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
